"""Test set-up shared by every layer.

Tests import the package from this source tree; the generated messages come from the colcon install
space (``scrap_perception.__init__`` joins both). Every test session gets its own ROS domain on
localhost only, so parallel runs and other sessions on the machine never see each other's topics.
"""
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# Keep the 2 cores for the processes a test starts; torch's own threads would oversubscribe them.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _remove_stale_fastdds_segments(folder: str = "/dev/shm") -> int:
    """Fast DDS shared-memory segments whose lock file nobody holds (left by processes the tests killed):
    with the large-image profile each is 32 MB of RAM that would otherwise outlive the test session."""
    import fcntl

    freed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        if not (name.startswith("fastdds_") and name.endswith("_el")):
            continue
        lock = os.path.join(folder, name)
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by every live owner: then this fails
        except OSError:
            continue
        else:
            for path in (lock[:-3], lock):
                try:
                    freed += os.path.getsize(path)
                    os.remove(path)
                except OSError:
                    pass
        finally:
            os.close(fd)
    return freed


def pytest_sessionstart(session):
    _remove_stale_fastdds_segments()


def pytest_sessionfinish(session, exitstatus):
    _remove_stale_fastdds_segments()
