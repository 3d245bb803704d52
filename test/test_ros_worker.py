"""The inference thread: newest frame per camera, drops counted, cameras batched, clean stop."""
import threading
import time

import pytest

from scrap_perception.ros.worker import InferenceWorker


class Recorder:
    """A process_batch that blocks until released, to control what is pending."""

    def __init__(self):
        self.batches = []
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, jobs):
        self.started.set()
        self.release.wait(5)
        self.batches.append(list(jobs))


def test_newest_frame_wins_and_cameras_batch_together():
    rec = Recorder()
    dropped = []
    w = InferenceWorker(rec, on_drop=dropped.append)
    w.start()
    w.submit("a", "a0")
    assert rec.started.wait(2)  # a0 is being processed
    for i in range(1, 6):
        w.submit("a", f"a{i}")
    w.submit("b", "b1")
    w.submit("c", "c1")
    w.submit("b", "b2")
    assert w.pending == 3
    rec.release.set()
    deadline = time.monotonic() + 2
    while len(rec.batches) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.stop(1.0)
    assert rec.batches == [["a0"], ["a5", "c1", "b2"]]  # in order of the newest submissions
    assert dropped == ["a1", "a2", "a3", "a4", "b1"]


def test_error_in_batch_is_reported_and_thread_survives():
    seen, errors = [], []

    def process(jobs):
        if "bad" in jobs:
            raise RuntimeError("boom")
        seen.extend(jobs)

    w = InferenceWorker(process, on_error=lambda e, jobs: errors.append((str(e), list(jobs))))
    w.start()
    w.submit("a", "bad")
    deadline = time.monotonic() + 2
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    w.submit("a", "good")
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.stop(1.0)
    assert errors == [("boom", ["bad"])]
    assert seen == ["good"]


def test_stop_drops_pending_and_refuses_new_frames():
    rec = Recorder()
    dropped = []
    w = InferenceWorker(rec, on_drop=dropped.append)
    w.start()
    w.submit("a", 1)
    assert rec.started.wait(2)
    w.submit("b", 2)
    t0 = time.monotonic()
    assert not w.stop(0.2)  # batch 1 still running: stop returns on its timeout, it does not hang
    assert time.monotonic() - t0 < 1.0
    w.submit("c", 3)
    assert dropped == [2, 3]
    rec.release.set()
    w._thread.join(2)
    assert not w._thread.is_alive()
    assert rec.batches == [[1]]


def test_the_loop_runs_in_the_calling_thread_until_stopped():
    """``run`` (what the node's main thread does): batches run in the caller's thread; it returns on
    ``stop`` from another thread and, while idle, once ``should_stop`` turns True."""
    threads, dropped = [], []
    w = InferenceWorker(lambda jobs: threads.append((threading.current_thread(), [j for j in jobs])),
                        on_drop=dropped.append)
    w.submit("a", 1)
    w.submit("b", 2)
    threading.Timer(0.3, w.stop).start()
    w.run()
    assert threads == [(threading.current_thread(), [1, 2])] and dropped == []
    assert w.stop() is True  # no thread of its own to wait for

    flag = threading.Event()
    w = InferenceWorker(lambda jobs: None)
    threading.Timer(0.2, flag.set).start()
    t0 = time.monotonic()
    w.run(flag.is_set, poll=0.05)
    assert 0.15 < time.monotonic() - t0 < 2.0


def test_call_runs_on_the_loop_thread_between_batches_and_returns_or_raises():
    seen = []
    worker = InferenceWorker(lambda jobs: seen.append(("batch", threading.current_thread().name)))
    assert worker.call(lambda: 7) == 7  # no loop running: runs in the caller
    loop = threading.Thread(target=worker.run, name="main_like")
    loop.start()
    try:
        assert worker.call(lambda: threading.current_thread().name, timeout=5) == "main_like"
        with pytest.raises(KeyError, match="boom"):
            worker.call(lambda: {}["boom"], timeout=5)
        worker.submit("cam", 1)
        assert worker.wait_idle(5) and seen == [("batch", "main_like")]
    finally:
        worker.stop()
        loop.join(5)
    with pytest.raises(RuntimeError):  # a call left when the loop ends is failed, never left hanging
        task_worker = InferenceWorker(lambda jobs: time.sleep(0.3))
        t = threading.Thread(target=task_worker.run, kwargs={"should_stop": lambda: stop.is_set()})
        stop = threading.Event()
        t.start()
        task_worker.submit("cam", 1)
        time.sleep(0.05)
        stop.set()
        task_worker.call(lambda: 1, timeout=5)
    t.join(5)
