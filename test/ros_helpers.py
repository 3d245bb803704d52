"""Shared pieces of the ROS tests: node processes, a test-side rclpy client, messages, small models.

Nodes run as real processes (``python -m scrap_perception.ros.<node> --ros-args ...``) and talk to the
test process over DDS; conftest gives the session its own ROS domain on localhost.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from scrap_perception.masks import InstanceMask
from scrap_perception.prompts import Prompt
from scrap_perception.ros import processes
from scrap_perception.ros.processes import FASTDDS_PROFILE, ROOT
from scrap_perception.segmentation.base import EncodedImage, Segmenter
from tiny_models import SMALL_SAM_ARCH, small_clip_json

CONFIG = ROOT / "config" / "scrap_perception.yaml"
# Best-effort images over 512 KB need Fast DDS's larger shared-memory segment (see the file). Set before
# any participant exists (this module is imported at collection); node processes inherit it.
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(FASTDDS_PROFILE))


class BoxSegmenter(Segmenter):
    """A fake segmenter for unit tests: the mask is the (integer) prompt box; iou is fixed."""

    name = "fake:box"

    def __init__(self, iou: float = 0.9, delay: float = 0.0) -> None:
        super().__init__()
        self.iou, self.delay = iou, delay
        self.batches: list[int] = []

    def encode(self, images):
        self.batches.append(len(images))
        time.sleep(self.delay * len(images))
        return [EncodedImage(im.shape[:2], im.shape[:2], im) for im in images]

    def segment(self, prompts, encoded=None, return_logits=False):
        h, w = (encoded or self.encoded).original_hw
        out = []
        for p in prompts:
            x0, y0, x1, y1 = np.clip(np.round(p.box), 0, [w, h, w, h]).astype(int)
            out.append(InstanceMask((x0, y0, x1 - x0, y1 - y0), np.ones((y1 - y0, x1 - x0), bool), self.iou))
        return out


# --- processes ---------------------------------------------------------------------------------------
def ros_args(params_file: Optional[Path] = None, **params: Any) -> list[str]:
    """``processes.ros_args`` with keyword parameters: ``a__b=1`` is parameter ``a.b``."""
    return processes.ros_args(params_file, {name.replace("__", "."): value for name, value in params.items()})


class NodeProcess(processes.NodeProcess):
    """A node in its own process, started in the repo root; stdout/stderr go to files under ``log_dir``."""

    def __init__(self, module: str, args: Sequence[str], log_dir: Path, name: str, env: Optional[dict] = None):
        super().__init__(module, args, log_dir / f"{name}.out", log_dir / f"{name}.err", env=env, name=name,
                         cwd=str(ROOT))
        self.out_path, self.err_path = self.log, self.err_log

    def output(self) -> str:
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def interrupt(self, timeout: float = 10.0) -> tuple[Optional[int], float]:
        """Sends SIGINT; returns (exit code or None if still running after ``timeout``, seconds taken).
        Unlike ``stop`` it never kills: the tests check that SIGINT alone ends the node."""
        t0 = time.monotonic()
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
        return self.wait(timeout), time.monotonic() - t0

    def wait(self, timeout: float) -> Optional[int]:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        """Kills the node if it still runs (a test that cares stops it with ``interrupt`` first)."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(5)
        self.stop()


def start_node(log_dir: Path, name: str = "node", params_file: Optional[Path] = CONFIG, **params: Any) -> NodeProcess:
    return NodeProcess("scrap_perception.ros.perception_node", ros_args(params_file, **params), log_dir, name)


def small_models(tmp: Path, sam: str = "small") -> dict[str, Any]:
    """Node parameters for random-weight models: a small SAM ViT-B (or 'vit_t': real MobileSAM) and a
    small CN-CLIP from a JSON config."""
    out = {"classifier.model": small_clip_json(tmp), "segmenter.device": "cpu", "classifier.device": "cpu",
           "segmenter.checkpoint": "random", "classifier.checkpoint": "random"}
    if sam == "small":
        out.update({"segmenter.model_type": "vit_b", "segmenter.arch": json.dumps(SMALL_SAM_ARCH)})
    else:
        out.update({"segmenter.model_type": sam, "segmenter.arch": ""})
    return out


# --- the test-side client ----------------------------------------------------------------------------
class Client:
    """An rclpy node of the test process, spun in a background thread: publishes camera topics and
    collects what the node publishes (with receipt times)."""

    def __init__(self, cameras: Sequence[str], overlay_cameras: Sequence[str] = (), name: str = "test_client",
                 views_topic: str = ""):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import CameraInfo, Image
        from vision_msgs.msg import Detection2DArray

        from scrap_perception.msg import ScrapInstanceArray, ScrapViewSet
        from scrap_perception.ros.qos import output_qos

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        qos = output_qos(50)
        self.image_pubs = {c: self.node.create_publisher(Image, f"/{c}/image_raw", qos) for c in cameras}
        self.det_pubs = {c: self.node.create_publisher(Detection2DArray, f"/{c}/detections", qos) for c in cameras}
        self.info_pubs = {c: self.node.create_publisher(CameraInfo, f"/{c}/camera_info", qos) for c in cameras}
        self.views: list[tuple[float, Any]] = []  # ScrapViewSets received on views_topic
        self.lock = threading.RLock()
        self.arrays: dict[str, list[tuple[float, Any]]] = defaultdict(list)
        self.overlays: dict[str, list[Any]] = defaultdict(list)
        self.diagnostics: list[tuple[float, Any]] = []
        for c in cameras:
            self.node.create_subscription(ScrapInstanceArray, f"/{c}/scrap_instances",
                                          lambda m, c=c: self._keep(self.arrays[c], m), output_qos(1000))
        for c in overlay_cameras:
            self.node.create_subscription(Image, f"/{c}/scrap_overlay",
                                          lambda m, c=c: self._keep(self.overlays[c], m), output_qos(100))
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self._keep(self.diagnostics, m), 100)
        if views_topic:
            self.node.create_subscription(ScrapViewSet, views_topic, lambda m: self._keep(self.views, m),
                                          output_qos(1000))
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # context shut down by close()
            pass

    def _keep(self, where: list, msg: Any) -> None:
        with self.lock:
            where.append((time.monotonic(), msg) if where is not None else msg)

    def wait_for_node(self, timeout: float = 120.0, proc: Optional[NodeProcess] = None) -> None:
        """Until the node subscribes every image and detection topic (it does so once its models are loaded)."""
        deadline = time.monotonic() + timeout
        pubs = [*self.image_pubs.values(), *self.det_pubs.values()]
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in pubs):
                # Let the node's side match too (a best-effort reader drops samples of a writer it does
                # not know yet), and its publishers -> our readers.
                time.sleep(1.0)
                return
            if proc is not None and not proc.alive():
                raise AssertionError(f"node exited with {proc.proc.returncode}:\n{proc.output()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError("the node did not subscribe in time" + (f":\n{proc.output()[-3000:]}" if proc else ""))

    def wait_until(self, cond: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if cond():
                    return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def latest_diagnostics(self, after: float = 0.0) -> Optional[dict]:
        from scrap_perception.ros.diagnostics import parse

        with self.lock:
            items = [m for t, m in self.diagnostics if t >= after]
        return parse(items[-1]) if items else None

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(2)


# --- messages ----------------------------------------------------------------------------------------
def header(sec: int, nanosec: int = 0, frame_id: str = "cam"):
    from std_msgs.msg import Header

    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def scene(h: int, w: int, boxes: Sequence[Sequence[float]], seed: int = 0) -> np.ndarray:
    """RGB uint8 noise background with a bright filled rectangle per box (something to segment)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        img[int(y0):int(y1), int(x0):int(x1)] = (200, 120 + 30 * k % 120, 60)
    return img


def image_msg(rgb: np.ndarray, hdr: Any, encoding: str = "rgb8"):
    from scrap_perception.ros.conversions import rgb_to_image

    return rgb_to_image(rgb, hdr, encoding)


def detections_msg(hdr: Any, boxes: Sequence[Sequence[float]], ids: Sequence[str] = (), score: float = 0.9):
    from scrap_perception.ros.replay_node import make_detection
    from vision_msgs.msg import Detection2DArray

    ids = list(ids) or [f"d{i}" for i in range(len(boxes))]
    return Detection2DArray(header=hdr, detections=[make_detection(np.asarray(b, float), i, "Pipe", score)
                                                    for b, i in zip(boxes, ids)])


def prompts_of(boxes: Sequence[Sequence[float]]) -> list[Prompt]:
    return [Prompt(box=b, id=f"d{i}") for i, b in enumerate(boxes)]


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# --- the ros2 command line, as users type it ------------------------------------------------------------
def ros2_executable() -> str:
    """The ``ros2`` executable with this package in its ament index. Missing: a failure in CI (the tests of
    the real command line must run there), a skip elsewhere."""
    import pytest

    exe = shutil.which("ros2")
    problem = None if exe else "the ros2 CLI is not on PATH (source scripts/env.sh after scripts/bootstrap.sh)"
    if problem is None:
        try:
            from ament_index_python.packages import get_package_share_directory

            get_package_share_directory("scrap_perception")
        except Exception as e:  # ImportError or PackageNotFoundError: no built install space on the path
            problem = f"scrap_perception is not in the ament index ({e}); run scripts/bootstrap.sh"
    if problem:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI: {problem}")
        pytest.skip(problem)
    return exe


# What the ros2 CLI says when its discovery time ran out before it saw the node or topic.
DISCOVERY_MISSES = ("Node not found", "does not appear to be published", "Could not determine the type")


def ros2(verb: str, sub: str, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
    """Runs ``ros2 <verb> <sub> <args>`` as a user would type it, but without the ros2 daemon (a process
    the test would leave behind) and with 3 s of discovery instead (more on a retry when the node was not
    discovered); with ``check``, a non-zero exit fails with its output."""
    for spin in ("3", "6", "10"):  # discovery on a loaded machine can take longer: retry as a user would
        argv = [shutil.which("ros2") or "ros2", verb, sub, "--no-daemon", "--spin-time", spin, *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=processes.node_env(),
                              stdin=subprocess.DEVNULL)
        out = proc.stdout + proc.stderr
        if proc.returncode == 0 or not any(m in out for m in DISCOVERY_MISSES):
            break
    if check:
        assert proc.returncode == 0, f"{' '.join(argv)} -> {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


class Ros2Launch:
    """``ros2 launch scrap_perception <file> <name>:=<value>...`` in its own process group (as a terminal
    runs it), its output in ``tmp/<file>.log``."""

    def __init__(self, tmp: Path, launch_file: str, **args: Any) -> None:
        self.log_path = tmp / f"{launch_file}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([ros2_executable(), "launch", "scrap_perception", launch_file,
                                      *(f"{k}:={v}" for k, v in args.items())],
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=processes.node_env(), cwd=str(tmp), start_new_session=True)
        self.pgid = self.proc.pid  # start_new_session: launch leads its own group, its nodes join it

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def group(self) -> list[int]:
        """Live (not zombie) processes of the launch's process group."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.pgid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
        return pids

    def wait_for(self, cond: Callable[[str], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if cond(out):
                return
            if self.proc.poll() is not None or "process has died" in out:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {timeout} s:\n{self.output()[-4000:]}")

    def ctrl_c(self, repeats: int = 3, gaps: tuple[float, ...] = (0.02, 0.1, 0.3), timeout: float = 20.0) -> float:
        """SIGINT to the group, then ``repeats`` more after ``gaps`` seconds each; returns the seconds from
        the first until no process of the group is left (bounded by ``timeout``: then it fails)."""
        t0 = time.monotonic()
        os.killpg(self.pgid, signal.SIGINT)
        gone: Optional[float] = None
        pending = [t0 + sum(gaps[:i + 1]) for i in range(repeats)]
        while time.monotonic() - t0 < timeout:
            if pending and time.monotonic() >= pending[0]:
                pending.pop(0)
                try:
                    os.killpg(self.pgid, signal.SIGINT)
                except ProcessLookupError:  # all gone already
                    pending.clear()
            if gone is None and not self.group():
                gone = time.monotonic() - t0
                if not pending:
                    break
            time.sleep(0.01)
        self.proc.wait(5)
        assert gone is not None, f"processes still running {timeout} s after Ctrl-C:\n{self.output()[-4000:]}"
        return gone

    def close(self) -> None:
        if self.group():
            os.killpg(self.pgid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(10)
        self._log.close()
