"""The benchmark's end-to-end part: camera frames through DDS to the perception node and back.

Three processes, four with the camera-set comparison: the benchmark (no rclpy), the perception node
(``scrap_perception.ros.perception_node`` with the benchmark's models, ``sync.policy: independent``), for
the comparison a second one with ``sync.policy: sets`` (the same models, weights and frames), and a driver
(``python -m scrap_perception.ros.bench_driver SPEC.json``) that publishes each camera's ``CameraInfo``,
1280x720 rgb8 ``Image`` and ``Detection2DArray`` and receives the ``ScrapInstanceArray``s (and the sets
node's ``ScrapViewSet``). Each node runs in its own namespace (NAMESPACES) with ``autostart`` off: the
driver configures and activates it through its lifecycle services, so a node that refuses its parameters
is told apart from one still loading its models. The benchmark drives the driver one frame set at a time
(``RosSession``), so the ros mode runs interleaved with the in-process modes, and the two nodes
interleaved with each other. The driver stamps every camera's frame of a set with its own send time (one
stamp per set, as hardware-triggered cameras give) and matches results by ``header.stamp`` (the node
echoes it), so latency = receipt - send on one clock, covering serialisation, DDS transport both ways,
conversion, pairing (and grouping into the camera set), the worker hand-off, the pipeline and publishing.
One frame set (one frame per camera) is in flight at a time: latency, not queueing, is measured.

At the end the driver also times the ROS conversions on their own: receiving a 1280x720 rgb8 image
(deserialisation + ``image_to_rgb``) and publishing a 20-instance array (``result_to_msg`` + publish).
This module is the benchmark's side, process handling only (``DriverSession``, which capacity.py's session
shares): rclpy is imported only inside the node and the driver processes.
"""
from __future__ import annotations

import importlib.util
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from ...ros.processes import NodeProcess, ros_args

NODE_MODULE = "scrap_perception.ros.perception_node"
DRIVER_MODULE = "scrap_perception.ros.bench_driver"
ANSWER = "@bench "  # the prefix of the driver's answer lines on its stdout
# Each node in its own namespace: its lifecycle services and topics are its own, also beside another
# system's scrap_perception_node in the same DDS domain.
NAMESPACES = {"independent": "/bench", "sets": "/bench_sets", "probe": "/bench_probe", "capacity": "/bench_capacity"}
LOGS = {"independent": "ros_node.log", "sets": "ros_sets_node.log", "probe": "ros_probe_node.log",
        "capacity": "ros_capacity_node.log"}
STOP_TIMEOUT_S = 20.0  # for a node to end after SIGINT (the perception node finishes its frame first)


def camera_names(n: int) -> list[str]:
    return [f"bench_cam{i}" for i in range(n)]


def unavailable_reason() -> Optional[str]:
    """Why the ROS part cannot run here (None when it can), without importing rclpy in this process."""
    for module in ("rclpy", "sensor_msgs", "vision_msgs"):
        if importlib.util.find_spec(module) is None:
            return f"Python module {module!r} not found (source scripts/env.sh after `make setup`)"
    try:
        if importlib.util.find_spec("scrap_perception.msg") is None:
            return "scrap_perception.msg not built (run `make setup` and source scripts/env.sh)"
    except ImportError as e:
        return f"scrap_perception.msg: {e}"
    return None


def node_args(params: Mapping[str, Any], name: str) -> list[str]:
    """``--ros-args`` of the perception node ``name`` (a key of NAMESPACES), in its namespace."""
    return ros_args(None, params) + ["-r", f"__ns:={NAMESPACES[name]}"]


class DriverSession:
    """Node processes and the driver (bench_driver), started together; the driver answers one request at
    a time on its stdin/stdout (a JSON line each way, answers prefixed with ANSWER). Use as a context
    manager: leaving it stops every process."""

    ANSWER = ANSWER

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.driver: Optional[NodeProcess] = None
        self._pending = b""  # driver output read but not yet split into lines
        self.nodes: dict[str, NodeProcess] = {}

    def _start_driver(self, frames_path: Path, targets: list[dict[str, Any]], startup_timeout: float,
                      spec_name: str = "ros_spec.json") -> None:
        """The driver for ``targets`` (their nodes started already); returns once it says they are up."""
        spec_path = self.out_dir / spec_name
        spec_path.write_text(json.dumps({"frames": str(frames_path), "targets": targets,
                                         "startup_timeout": startup_timeout}, indent=1))
        self.driver = NodeProcess(DRIVER_MODULE, [str(spec_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            self._answer(startup_timeout + 30.0)  # {"ready": true} once the nodes are active and subscribe
        except RuntimeError as e:
            if not all(node.alive() for node in self.nodes.values()):
                raise  # the message has the log tail
            # A node that refused to configure says why in its log (the parameter, the file expected).
            tails = "".join(f"\n{name} node log tail:\n{node.tail(3)}" for name, node in self.nodes.items())
            raise RuntimeError(f"{e}{tails}") from None

    def finish(self) -> dict[str, Any]:
        """The conversion costs, each node's peak RSS and the sets node's counters from /diagnostics
        ({"nodes": {name: {"peak_rss_mb", "node": {sets.*}, "cameras": {camera: {...}}}}}); the driver
        then exits."""
        return self._request({"cmd": "finish"}, 300.0)

    def _request(self, request: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        try:
            self.driver.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.driver.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the driver is gone; _answer says why
        return self._answer(timeout)

    def _answer(self, timeout: float) -> dict[str, Any]:
        """The driver's next answer line. Its stdout is read unbuffered (os.read): other output there
        (middleware messages) is skipped, and select never waits on data already read."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._pending:
                raw, self._pending = self._pending.split(b"\n", 1)
                line = raw.decode(errors="replace")
                if line.startswith(self.ANSWER):
                    answer = json.loads(line[len(self.ANSWER):])
                    if "error" in answer:
                        raise RuntimeError(answer["error"])
                    return answer
            for name, node in self.nodes.items():
                if node.poll() is not None:
                    which = "the perception node" if name == "independent" else f"the {name} perception node"
                    raise RuntimeError(f"{which} exited with code {node.poll()}; log tail:\n{node.tail(30)}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"the ROS driver did not answer within {timeout:.0f} s "
                                   f"(node logs: {self.out_dir}/ros_*node.log)")
            out = self.driver.proc.stdout
            ready, _, _ = select.select([out], [], [], min(left, 0.5))
            if not ready:
                continue
            chunk = os.read(out.fileno(), 1 << 16)
            if not chunk:
                code = self.driver.proc.wait(10)
                raise RuntimeError(f"the ROS driver failed (exit code {code}, its message "
                                   f"above); node logs: {self.out_dir}/ros_*node.log")
            self._pending += chunk

    def close(self) -> None:
        if self.driver is not None:
            self.driver.stop(STOP_TIMEOUT_S)
        for node in self.nodes.values():
            node.stop(STOP_TIMEOUT_S)

    def __enter__(self) -> "DriverSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RosSession(DriverSession):
    """The perception node (``cameras`` cameras, ``node_params``), with ``sets_cameras`` the sets node
    (that many cameras, ``sync.policy: sets``, exact stamps), and the driver (see DriverSession)."""

    def __init__(self, frames_path: Path, node_params: Mapping[str, Any], out_dir: Path, cameras: int,
                 sets_cameras: Optional[int] = None, startup_timeout: float = 600.0) -> None:
        super().__init__(out_dir)
        node_params = dict(node_params, autostart=False)  # the driver configures and activates them
        targets = []
        try:
            for name, cams in {"independent": cameras, **({"sets": sets_cameras} if sets_cameras else {})}.items():
                params = dict(node_params, camera_names=camera_names(cams), **{"sync.policy": name})
                self.nodes[name] = NodeProcess(NODE_MODULE, node_args(params, name), out_dir / LOGS[name])
                targets.append({"name": name, "namespace": NAMESPACES[name], "cameras": camera_names(cams),
                                "node_pid": self.nodes[name].pid, "views": name == "sets"})
            self._start_driver(frames_path, targets, startup_timeout)
        except BaseException:
            self.close()
            raise

    def frame_set(self, boxes: int, cameras: int, timeout_s: float, target: str = "independent") -> dict[str, Any]:
        """Publishes one frame set (N ``boxes`` per camera) to the ``target`` node ("independent" or
        "sets": then ``cameras`` must be its camera count) and waits for every camera's array (and the
        ScrapViewSet): returns {"set_s": latency of the last result, "latency_s": [per camera],
        "instances": [per camera], "missed": bool} and from the sets node "view_set": {"latency_s",
        "views", "problems": [how it differs from the frames sent], "stale_camera_infos"}. A first set
        that never comes back raises RuntimeError."""
        return self._request({"cmd": "set", "target": target, "boxes": boxes, "cameras": cameras,
                              "timeout_s": timeout_s}, timeout_s + 30.0)

    def round_trip(self, repeats: int = 20) -> dict[str, Any]:
        """The ROS cost of a frame without model work: a second node with no models (segmenter grabcut,
        no classifier) on its own camera gets frame 0 with an empty Detection2DArray, ``repeats`` times
        after 2 warm-ups: {"round_trip_s": median seconds from publishing the image + detections to
        receiving the (empty) array: transport both ways, conversion, pairing, worker hand-off, publish}."""
        camera = "bench_probe"
        params = {"camera_names": [camera], "segmenter.model_type": "grabcut", "segmenter.checkpoint": "",
                  "classifier.model": "none", "publish_overlay": False, "log_throttle": 60.0, "autostart": False}
        probe = NodeProcess(NODE_MODULE, node_args(params, "probe"), self.out_dir / LOGS["probe"])
        try:
            return self._request({"cmd": "round_trip", "namespace": NAMESPACES["probe"], "camera": camera,
                                  "repeats": repeats, "node_pid": probe.pid}, 180.0)
        finally:
            probe.stop(STOP_TIMEOUT_S)
