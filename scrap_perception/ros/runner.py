"""What every node's ``main`` does around its node: init, build, spin until Ctrl-C, clean up, exit code.

Ctrl-C in the terminal of ``ros2 launch`` reaches a node twice or more: the terminal sends SIGINT to
the whole process group, then launch sends its own. Python's default handler would raise a
KeyboardInterrupt for each, the later ones in the middle of the clean-up (closing a recording, shutting
rclpy down): a traceback, exit code -2 and a half-written file. So ``spin_node`` installs ``SigintGuard``
first: at most one KeyboardInterrupt per process, raised only where the work may be cut short (building
the node, the main-thread loop); every other SIGINT is only counted. rclpy's own handler (installed by
``rclpy.init`` after ours, it chains to it) still shuts the context down on each, which ends spinning.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import nullcontext
from types import FrameType, TracebackType
from typing import Callable, NoReturn, Optional, TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.task import Future

N = TypeVar("N", bound=Node)

CONFIG_EXIT_CODE = 2
ERROR_EXIT_CODE = 1  # a callback raised (its traceback is printed): as an uncaught exception would end it


class SigintGuard:
    """The Python-level SIGINT handler of a node process. It counts requests and raises KeyboardInterrupt
    at most once, and only inside ``with guard.interruptible():``; entering that block after a request
    raises at once. Install it on the main thread before ``rclpy.init`` (which saves it and chains to it)."""

    def __init__(self) -> None:
        self.requests = 0
        self._interruptible = False
        self._raised = False

    @classmethod
    def install(cls) -> "SigintGuard":
        guard = cls()
        signal.signal(signal.SIGINT, guard._handle)
        return guard

    @property
    def requested(self) -> bool:
        return self.requests > 0

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        # Runs on the main thread between two bytecodes, so the flags cannot change under it.
        self.requests += 1
        if self._interruptible and not self._raised:
            self._raised = True
            raise KeyboardInterrupt

    def interruptible(self) -> "_Interruptible":
        """A block that the first SIGINT (also one that came before it) interrupts."""
        return _Interruptible(self)


class _Interruptible:
    def __init__(self, guard: SigintGuard) -> None:
        self.guard = guard

    def __enter__(self) -> None:
        g = self.guard
        if g.requested and not g._raised:
            g._raised = True
            raise KeyboardInterrupt
        g._interruptible = True

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.guard._interruptible = False


def spin_node(name: str, make: Callable[[], N], config_errors: tuple[type[BaseException], ...],
              finish: Callable[[N], None] = lambda node: None, args: Optional[list[str]] = None,
              main_loop: Optional[Callable[[N, Callable[[], bool]], None]] = None,
              interrupt_make: bool = True) -> int:
    """Builds the node with ``make`` and spins it until Ctrl-C or an external shutdown; then
    ``finish(node)``, destroys it and shuts rclpy down. Returns the exit code: 0, CONFIG_EXIT_CODE
    when ``make`` raised one of ``config_errors`` (logged as fatal under ``name``, no traceback), or
    ERROR_EXIT_CODE when a callback raised in the executor thread beside ``main_loop``. An
    error of ``make`` after a SIGINT (such as rclpy's context being shut down already) ends it with 0.

    main_loop(node, spinning): work that must run on the main thread (inference, see
    InferenceWorker.run); the executor then spins in a background thread, and ``main_loop`` returns
    once ``spinning()`` turns False (or a SIGINT interrupts it).

    Only ``make`` (unless ``interrupt_make`` is False: a quick one that must not be cut short) and
    ``main_loop`` can be interrupted; ``rclpy.spin`` ends by rclpy's context shutdown,
    so a callback (such as a recorder's write) always completes, and the clean-up is never interrupted.
    From the return on SIGINT is ignored: a late one while the process exits changes nothing."""
    sigint = SigintGuard.install()
    rclpy.init(args=args if args is not None else sys.argv)
    context = rclpy.get_default_context()
    node: Optional[N] = None
    code = 0
    try:
        try:
            with sigint.interruptible() if interrupt_make else nullcontext():
                node = make()
        except Exception as e:  # a KeyboardInterrupt goes on to the outer except
            if sigint.requested:
                pass  # most likely a consequence of the shutdown that SIGINT started
            elif isinstance(e, config_errors):
                rclpy.logging.get_logger(name).fatal(f"cannot start: {e}")
                code = CONFIG_EXIT_CODE
            else:
                raise
        else:
            if main_loop is None:
                rclpy.spin(node)
            elif not _spin_beside(node, main_loop, sigint):
                code = ERROR_EXIT_CODE
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as e:
        if not _stopping(sigint):
            raise
        # A callback or the main loop used rclpy while a SIGINT shut its context down.
        rclpy.logging.get_logger(name).debug(f"error while stopping, ignored: {e!r}")
    finally:
        if node is not None:
            finish(node)
            node.destroy_node()
        rclpy.try_shutdown()
        # Deletes the DDS participant now, a clean leave for the peers, not at the interpreter's exit
        # (which exit_process skips: the peers would then wait on a vanished participant).
        context.destroy()
        # Python puts the default handler back while the interpreter finalizes, so a late SIGINT would
        # still kill the process (exit code -2); SIG_IGN it keeps.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def exit_process(code: int) -> NoReturn:
    """Ends the process now with ``code``, skipping the interpreter's finalization: that takes 0.3-1 s
    (unloading rclpy, Fast DDS, OpenCV...) of the 2 s that Ctrl-C may take. Call it from a node's
    ``main`` once ``spin_node`` returned, when everything the node writes is closed."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _stopping(sigint: SigintGuard) -> bool:
    """Shutdown has begun: after it, rclpy calls fail with 'context is invalid' and the like."""
    return sigint.requested or not rclpy.ok()


def _spin_beside(node: N, main_loop: Callable[[N, Callable[[], bool]], None], sigint: SigintGuard) -> bool:
    """Runs ``main_loop`` with the executor spinning in a thread; False when a callback raised there."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop: Future = Future()
    failed: list[BaseException] = []

    def spin() -> None:
        try:
            executor.spin_until_future_complete(stop)
        except ExternalShutdownException:
            pass
        except Exception as e:
            if not _stopping(sigint):
                failed.append(e)
                raise  # the thread's traceback; main_loop ends as spinning() turns False

    spinner = threading.Thread(target=spin, name="ros_executor", daemon=True)
    spinner.start()
    try:
        with sigint.interruptible():
            main_loop(node, lambda: spinner.is_alive() and rclpy.ok())
    finally:
        # The spinning thread must end before executor.shutdown: that destroys the guard conditions its
        # wait set still uses (a segfault). A SIGINT's context shutdown ends it; else the future does.
        stop.set_result(None)
        spinner.join(timeout=1.0)
        # A thread still in rclpy's C++ when the interpreter exits is ended by pthread_exit, which C++
        # turns into std::terminate (exit code -6); then better leave the executor as it is.
        if not spinner.is_alive():
            executor.shutdown(timeout_sec=0.0)
    return not failed
