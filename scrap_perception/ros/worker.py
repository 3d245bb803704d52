"""The inference thread: per camera only the newest pending frame waits; what is waiting goes in one batch.

Subscription callbacks call ``submit`` (cheap, never blocks on inference). The thread takes every
pending frame at once (at most one per camera) and hands them to ``process_batch`` together, so frames
of several cameras that are waiting at the same time are encoded in one batch. A frame replaced
before the thread took it is passed to ``on_drop`` (the node counts it).
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, Hashable, Optional, Sequence, TypeVar

J = TypeVar("J")


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
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Runs the loop in the worker's own thread."""
        self._thread.start()

    def run(self, should_stop: Callable[[], bool] = lambda: False, poll: float = 0.1) -> None:
        """Runs the loop in the calling thread until ``stop`` or ``should_stop()`` (checked every ``poll``
        s while idle). The process's main thread is the place for it: with GNU OpenMP (torch's CPU
        backend) small ops run up to 2x slower in a second thread once the main thread has used OpenMP,
        as building the models does (measured: 2000 Linear+GELU, 0.7 s on the main thread, 1.3 s beside it)."""
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

    def _run(self, should_stop: Callable[[], bool] = lambda: False, poll: Optional[float] = None) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping and not should_stop():
                    self._cond.wait(poll)
                if self._stopping or should_stop():
                    return
                jobs = list(self._pending.values())
                self._pending.clear()
                self._busy = True
            try:
                self._process_batch(jobs)
            except Exception as exc:  # reported; the thread must survive a bad frame
                if self._on_error is None or self._stopping:
                    continue
                self._on_error(exc, jobs)
            finally:
                with self._cond:
                    self._busy = False
