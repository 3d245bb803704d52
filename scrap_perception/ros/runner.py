"""What every node's ``main`` does around its node: init, build, spin until Ctrl-C, clean up, exit code."""
from __future__ import annotations

import sys
import threading
from typing import Callable, Optional, TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

N = TypeVar("N", bound=Node)

CONFIG_EXIT_CODE = 2


def spin_node(name: str, make: Callable[[], N], config_errors: tuple[type[BaseException], ...],
              finish: Callable[[N], None] = lambda node: None, args: Optional[list[str]] = None,
              main_loop: Optional[Callable[[N, Callable[[], bool]], None]] = None) -> int:
    """Builds the node with ``make`` and spins it until Ctrl-C or an external shutdown; then
    ``finish(node)``, destroys it and shuts rclpy down. Returns the exit code: 0, or CONFIG_EXIT_CODE
    when ``make`` raised one of ``config_errors`` (logged as fatal under ``name``, no traceback).

    main_loop(node, spinning): work that must run on the main thread (inference, see
    InferenceWorker.run); the executor then spins in a background thread, and ``main_loop`` returns
    once ``spinning()`` turns False."""
    rclpy.init(args=args if args is not None else sys.argv)
    node: Optional[N] = None
    code = 0
    try:
        try:
            node = make()
        except config_errors as e:
            rclpy.logging.get_logger(name).fatal(f"cannot start: {e}")
            code = CONFIG_EXIT_CODE
        else:
            if main_loop is None:
                rclpy.spin(node)
            else:
                _spin_beside(node, main_loop)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            finish(node)
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def _spin_beside(node: N, main_loop: Callable[[N, Callable[[], bool]], None]) -> None:
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    spinner = threading.Thread(target=spin, name="ros_executor", daemon=True)
    spinner.start()
    try:
        main_loop(node, lambda: spinner.is_alive() and rclpy.ok())
    finally:
        executor.shutdown(timeout_sec=1.0)
