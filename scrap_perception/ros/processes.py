"""Starting and stopping ROS node processes: ``--ros-args``, the environment every node needs, shutdown.

Plain subprocess handling (no rclpy here): the demo, the benchmark and the tests start their nodes
(``python -m <module> --ros-args ...``) through this module, so they quote parameters, set up Fast DDS
and stop processes alike.
"""
from __future__ import annotations

import json
import numbers
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

ROOT = Path(__file__).resolve().parents[2]
# Fast DDS drops best-effort samples over its default 512 KB shared-memory segment (any camera image);
# this profile raises the segment (see the file).
FASTDDS_PROFILE = ROOT / "config" / "fastdds_large_images.xml"


def ros_args(params_file: Optional[os.PathLike | str] = None, params: Optional[Mapping[str, Any]] = None) -> list[str]:
    """``['--ros-args', '--params-file', FILE, '-p', 'name:=value', ...]``; values as ``param_value``."""
    args = ["--ros-args"]
    if params_file is not None:
        args += ["--params-file", os.fspath(params_file)]
    for name, value in (params or {}).items():
        args += ["-p", f"{name}:={param_value(value)}"]
    return args


def param_value(v: Any) -> str:
    """The YAML text rcl reads back as ``v``: bool, int, float, str (and paths), or a list of one of these.
    A dict becomes a JSON string (the project's structured parameters, such as segmenter.arch, are JSON).

    Strings are always double-quoted: rcl types a plain scalar itself (``y``, ``nan``, ``1e5``, ``010``
    are bool, double, double, int there, not what YAML 1.1 says), only a quoted one is surely a string."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        return yaml.safe_dump(float(v)).split("\n", 1)[0]  # YAML's float text: 1.0e-05, .inf, .nan
    if isinstance(v, (str, os.PathLike)):
        return json.dumps(os.fspath(v), ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar
    if isinstance(v, Mapping):
        return param_value(json.dumps(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(param_value(x) for x in v) + "]"
    raise TypeError(f"no ROS parameter value for {type(v).__name__} {v!r}")


def node_env(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """This process's environment for a node process: unbuffered uncoloured output, this source tree
    first on PYTHONPATH, Fast DDS's large-sample profile unless one is set; then ``extra``."""
    path = os.environ.get("PYTHONPATH", "")
    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0",
               PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in env and FASTDDS_PROFILE.is_file():
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
    env.update(extra or {})
    return env


class NodeProcess:
    """``python -m module *args`` in its own process with ``node_env(env)``. log: a file for stdout and
    stderr (err_log: stderr apart); without, output is inherited unless ``popen`` (Popen keywords such
    as stdin, stdout, cwd) says otherwise. ``stop`` ends it; as a context manager, leaving stops it."""

    def __init__(self, module: str, args: Sequence[str] = (), log: Optional[Path] = None,
                 err_log: Optional[Path] = None, env: Optional[Mapping[str, str]] = None,
                 name: Optional[str] = None, **popen: Any) -> None:
        self.name = name or module.rsplit(".", 1)[-1]
        self.log, self.err_log = log, err_log
        self._files = []
        if log is not None:
            popen.setdefault("stdout", self._open(log))
            popen.setdefault("stderr", self._open(err_log) if err_log is not None else subprocess.STDOUT)
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", module, *args], env=node_env(env), **popen)
        except BaseException:
            self._close_files()
            raise

    def _open(self, path: Path):
        f = open(path, "wb")
        self._files.append(f)
        return f

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> Optional[int]:
        """The exit code, None while it runs."""
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT (rclpy's shutdown), up to ``timeout`` seconds for it to exit, else SIGKILL; closes the
        log files. Returns the exit code (negative: the signal that ended it)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_files()
        return self.proc.returncode

    def _close_files(self) -> None:
        for f in self._files:
            f.close()

    def tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the log ('' without one)."""
        if self.log is None:
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> "NodeProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
