"""The inference thread: per camera only the newest pending frame waits; what is waiting goes in one batch.

Subscription callbacks call ``submit`` (cheap, never blocks on inference). The thread takes every
pending frame at once (at most one per camera) and hands them to ``process_batch`` together, so frames
of several cameras that are waiting at the same time are encoded in one batch. A frame replaced
before the thread took it is passed to ``on_drop`` (the node counts it).
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Generic, Hashable, Optional, Sequence, TypeVar

J = TypeVar("J")
R = TypeVar("R")


class _Task(Generic[R]):
    """A function handed to the loop's thread by ``InferenceWorker.call``."""

    def __init__(self, fn: Callable[[], R]) -> None:
        self.fn, self.done = fn, threading.Event()
        self.result: Optional[R] = None
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as e:  # handed to the caller, who re-raises it
            self.error = e
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


class InferenceWorker(Generic[J]):
    """process_batch(jobs): runs in the worker thread with 1..n_cameras jobs in submission order.
    on_drop(job): called (in the submitting thread) for a job replaced by a newer one of its camera.
    on_error(exc, jobs): called when process_batch raises; the thread keeps running.
    """

    def __init__(self, process_batch: Callable[[Sequence[J]], None],
                 on_drop: Callable[[J], None] = lambda job: None,
                 on_error: Optional[Callable[[Exception, Sequence[J]], None]] = None,
                 name: str = "scrap_inference") -> None:
        self._process_batch = process_batch
        self._on_drop = on_drop
        self._on_error = on_error
        self._pending: dict[Hashable, J] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = False
        self._tasks: list[_Task] = []
        self._running = False
        self._loop_thread: Optional[threading.Thread] = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Runs the loop in the worker's own thread."""
        self._thread.start()

    def run(self, should_stop: Callable[[], bool] = lambda: False, poll: float = 0.1) -> None:
        """Runs the loop in the calling thread until ``stop`` or ``should_stop()`` (checked every ``poll``
        s while idle). The process's main thread is the place for it: with GNU OpenMP (torch's CPU
        backend) small ops run slower in a second thread once the main thread has used OpenMP, as
        building the models does (README, Benchmark)."""
        self._run(should_stop, poll)

    def submit(self, camera: Hashable, job: J) -> None:
        """Queues ``job`` as the newest frame of ``camera``; a frame of that camera still waiting is dropped."""
        with self._cond:
            if self._stopping:
                dropped: Optional[J] = job
            else:
                dropped = self._pending.pop(camera, None)
                self._pending[camera] = job
                self._cond.notify()
        if dropped is not None:
            self._on_drop(dropped)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    @property
    def busy(self) -> bool:
        """True while a batch is being processed."""
        with self._cond:
            return self._busy

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self, timeout: float = 1.5) -> bool:
        """Asks the loop to finish after its current batch; pending frames are dropped (on_drop).
        Returns True when the worker's thread ended within ``timeout`` s (it is a daemon: it never blocks
        exit); without that thread (``run``), True."""
        with self._cond:
            self._stopping = True
            left = list(self._pending.values())
            self._pending.clear()
            self._cond.notify_all()
        for job in left:
            self._on_drop(job)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def call(self, fn: Callable[[], R], timeout: Optional[float] = None) -> R:
        """Runs ``fn`` on the loop's thread between batches and returns its result (re-raising what it
        raises); model building belongs on the thread that runs the models (see ``run``). Called from
        that thread, or while no loop runs, ``fn`` runs at once in the caller."""
        with self._cond:
            direct = not self._running or self._loop_thread is threading.current_thread()
            if not direct:
                task: _Task[R] = _Task(fn)
                self._tasks.append(task)
                self._cond.notify_all()
        if direct:
            return fn()
        if not task.done.wait(timeout):
            raise TimeoutError(f"the inference loop did not run the call within {timeout} s")
        if task.error is not None:
            raise task.error
        return task.result  # type: ignore[return-value]

    def wait_idle(self, timeout: float) -> bool:
        """Waits until no frame is pending and no batch runs; True when that happened within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def _run(self, should_stop: Callable[[], bool] = lambda: False, poll: Optional[float] = None) -> None:
        with self._cond:
            self._running, self._loop_thread = True, threading.current_thread()
        try:
            self._loop(should_stop, poll)
        finally:
            with self._cond:
                self._running = False
                tasks, self._tasks = self._tasks, []
            for task in tasks:  # nobody will run them now
                task.fail(RuntimeError("the inference loop ended"))

    def _loop(self, should_stop: Callable[[], bool], poll: Optional[float]) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._tasks and not self._stopping and not should_stop():
                    self._cond.wait(poll)
                if self._stopping or should_stop():
                    return
                tasks, self._tasks = self._tasks, []
                jobs = list(self._pending.values()) if not tasks else []
                if jobs:
                    self._pending.clear()
                    self._busy = True
            for task in tasks:
                task.run()
            if not jobs:
                continue
            try:
                self._process_batch(jobs)
            except Exception as exc:  # reported; the thread must survive a bad frame
                if self._on_error is None or self._stopping:
                    continue
                self._on_error(exc, jobs)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
