"""The benchmark's ROS driver process: publishes the frames to the perception nodes and times their answers.

    python -m scrap_perception.ros.bench_driver SPEC.json    (started by ``scrap-tools bench``)

The benchmark (``tools.bench.ros_session.RosSession``, no rclpy) starts the nodes and this process and
sends it one JSON request per stdin line; each answer is one stdout line prefixed with ``ANSWER``. The
spec names the nodes (targets), each in its own namespace and started with autostart off: the driver
configures and activates them through their lifecycle services. ``independent`` has ``sync.policy:
independent``; ``sets`` (for the camera-set comparison) ``sync.policy: sets``. Per 'set' request it
publishes to one target one ``CameraInfo``, 1280x720 rgb8 ``Image`` and ``Detection2DArray`` per camera,
all with one stamp, its send time (as hardware-triggered cameras give), and waits for every camera's
``ScrapInstanceArray`` (matched by ``header.stamp``, which the node echoes) and, from the sets node, the
``ScrapViewSet``: latency = receipt - send on one clock. Each ScrapViewSet is checked against the frames
sent (``_view_set_problems``). At 'finish' it times the ROS conversions on their own (see
``_conversion_costs``) and reports the sets node's own counters from /diagnostics. For the capacity mode
(tools.bench.capacity) its one target is the model-free bench_node, fed pre-serialised frames at a rate
and then closed loop (``capacity``).
"""
from __future__ import annotations

import json
import math
import os
import statistics
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.executors import SingleThreadedExecutor
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from scrap_perception.msg import ScrapInstanceArray, ScrapViewSet

from ..classification.base import Classification
from ..masks import InstanceMask
from ..pipeline import FrameResult, Instance
from ..prompts import box_point_prompt
from ..tools.bench.frames import load_frames
from ..tools.bench.ros_session import ANSWER
from ..tools.bench.timing import status_mb
from .bench_node import synthetic_instances
from .conversions import (cdr_detections_ok, detections_from_cdr, detections_to_prompts, image_to_rgb,
                          result_to_msg, rgb_to_image, stamp_of)
from .pairing import StampPairer
from .qos import input_qos, output_qos
from .replay_node import make_detection

NODE_NAME = "scrap_perception_node"  # perception_node's (not imported: that would load its dependencies here)
# Counters of the sets node's /diagnostics that the benchmark's accounting reads.
SET_COUNTERS = ("sets.complete", "sets.partial", "sets.expired", "sets.superseded", "sets.published", "sets.waiting")
CAMERA_COUNTERS = ("paired", "processed", "dropped", "published", "failed", "set.expired", "set.late", "set.missing",
                   "camera_info_missing")
# The capacity node's per-camera counters (summed over its cameras) that account for every frame sent.
CAPACITY_COUNTERS = ("images_in", "detections_in", "paired", "processed", "published", "dropped", "failed",
                     "expired.total", "rejected.total")
CDR_LE = b"\x00\x01"  # the encapsulation of little-endian plain CDR


@dataclass
class Target:
    """A perception node the driver feeds. namespace: its topics' prefix ("" = the root); views: it
    publishes a ScrapViewSet per processed set; raw: its arrays are received serialised, only their stamp
    read (the capacity mode: the driver must not spend the CPU the node needs on deserialising); pubs: per
    camera (CameraInfo, Image, Detection2DArray)."""

    name: str
    namespace: str
    cameras: list[str]
    node_pid: int
    views: bool = False
    raw: bool = False
    pubs: list[tuple[Any, Any, Any]] = field(default_factory=list)

    def topic(self, camera: str, leaf: str) -> str:
        return f"{self.namespace}/{camera}/{leaf}"

    @property
    def views_topic(self) -> str:
        return f"{self.namespace}/scrap_views"


class Driver:
    """The driver's node: publishers per target and camera, and what comes back, by (topic, sec, nanosec)."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.frames = load_frames(spec["frames"])
        self.node = rclpy.create_node("scrap_bench_driver")
        self.lock = threading.Condition()
        self.received: dict[tuple[str, int, int], tuple[float, Any]] = {}
        self.diagnostics: dict[str, tuple[float, dict[str, dict[str, str]]]] = {}  # hardware_id -> (t, statuses)
        self.targets = {t["name"]: self.add_target(Target(**t)) for t in spec["targets"]}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, output_qos(50))

    def add_target(self, target: Target) -> Target:
        """Publishers to the target's cameras and subscriptions to its results. A raw target's (the capacity
        mode's) publish with the sensor-data QoS of camera drivers, depth 2: each image's shared-memory buffer
        is then reused soon (a reliable depth-5 history of 4 cameras' 2.8 MB images outgrows Fast DDS's 32 MB
        segment, and best-effort samples whose buffer is taken back are lost)."""
        qos = input_qos(2) if target.raw else output_qos(5)
        for cam in target.cameras:
            target.pubs.append((self.node.create_publisher(CameraInfo, target.topic(cam, "camera_info"), qos),
                                self.node.create_publisher(Image, target.topic(cam, "image_raw"), qos),
                                self.node.create_publisher(Detection2DArray, target.topic(cam, "detections"), qos)))
            self._subscribe(ScrapInstanceArray, target.topic(cam, "scrap_instances"), target.raw)
        if target.views:
            self._subscribe(ScrapViewSet, target.views_topic)
        return target

    def _subscribe(self, msg_type: Any, topic: str, raw: bool = False) -> None:
        """Results by (topic, stamp): (receipt time, message), or with ``raw`` (receipt time, None: the
        capacity mode's hundreds of 0.7 MB arrays are not kept)."""
        def on_result(msg: Any) -> None:
            t = time.perf_counter()
            stamp, kept = (cdr_stamp(msg), None) if raw else ((msg.header.stamp.sec, msg.header.stamp.nanosec), msg)
            with self.lock:
                self.received[(topic, *stamp)] = (t, kept)
                self.lock.notify_all()

        self.node.create_subscription(msg_type, topic, on_result, output_qos(50), raw=raw)

    def _on_diagnostics(self, msg: Any) -> None:
        t = time.monotonic()
        with self.lock:
            for status in msg.status:
                statuses = self.diagnostics.get(status.hardware_id, (t, {}))[1]
                statuses[status.name] = {kv.key: kv.value for kv in status.values}
                self.diagnostics[status.hardware_id] = (t, statuses)
            self.lock.notify_all()

    def bring_up(self, targets: Sequence[Target], timeout: float) -> None:
        """Configures (loads the models) and activates the targets' nodes, started with autostart off,
        through their lifecycle services, all at once; then waits until each subscribes to every input and
        publishes its results. RuntimeError when a node exits, refuses a transition or is not up within
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        clients = [self.node.create_client(ChangeState, f"{t.namespace}/{NODE_NAME}/change_state") for t in targets]
        self._until(lambda: all(c.service_is_ready() for c in clients), targets, deadline, "offer its lifecycle")
        time.sleep(1.0)  # the server, too, must have matched our response reader, or a quick answer is lost
        for label, transition in (("configure", Transition.TRANSITION_CONFIGURE),
                                  ("activate", Transition.TRANSITION_ACTIVATE)):
            futures = [c.call_async(ChangeState.Request(transition=Transition(id=transition))) for c in clients]
            self._until(lambda: all(f.done() for f in futures), targets, deadline, label)
            for target, future in zip(targets, futures):
                if not future.result().success:
                    raise RuntimeError(f"the perception node ({target.name}) refused to {label} (see its log)")
        for target in targets:
            outputs = [target.topic(c, "scrap_instances") for c in target.cameras]
            outputs += [target.views_topic] if target.views else []
            self._until(lambda: all(p.get_subscription_count() > 0 for pubs in target.pubs for p in pubs)
                        and all(self.node.count_publishers(t) > 0 for t in outputs), [target], deadline, "subscribe")
        time.sleep(0.5)  # let both directions of discovery settle

    @staticmethod
    def _until(ready: Callable[[], bool], targets: Sequence[Target], deadline: float, what: str) -> None:
        while not ready():
            for target in targets:
                if not Path(f"/proc/{target.node_pid}").exists():
                    raise RuntimeError(f"the perception node ({target.name}) exited before it was ready (see its log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the perception node(s) ({', '.join(t.name for t in targets)}) did not {what} "
                                   "in time (see the log)")
            time.sleep(0.2)

    def frame_set(self, target: Target, messages: Sequence[tuple[Any, Any, Any]],
                  timeout_s: float) -> tuple[dict[str, Any], list]:
        """Publishes one frame per camera of ``messages`` (CameraInfo, Image, Detection2DArray, stamped
        now) to the target's first cameras and waits for the arrays (and the ScrapViewSet, checked).
        Returns the timings (with the check) and the arrays received."""
        stamp_ns = time.time_ns()
        header = Header(frame_id="bench")
        header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 10**9)
        stamp = (header.stamp.sec, header.stamp.nanosec)
        cams = target.cameras[:len(messages)]
        keys = [(target.topic(c, "scrap_instances"), *stamp) for c in cams]
        keys += [(target.views_topic, *stamp)] if target.views else []
        t0 = time.perf_counter()
        for msgs, pubs in zip(messages, target.pubs):
            for msg, pub in zip(msgs, pubs):
                msg.header = header
                pub.publish(msg)
        with self.lock:
            done = self.lock.wait_for(lambda: all(key in self.received for key in keys), timeout=timeout_s)
            got = {key: self.received.pop(key) for key in keys if key in self.received}
        arrays = [got[k] for k in keys[:len(cams)] if k in got]
        lat = [t - t0 for t, _ in arrays]
        result = {"missed": not done, "latency_s": lat, "instances": [len(m.instances) for _, m in arrays],
                  "set_s": max(t for t, _ in got.values()) - t0 if done else float("nan")}
        view_set = got.get(keys[-1]) if target.views else None
        if view_set is not None:
            result["view_set"] = {"latency_s": view_set[0] - t0, "views": len(view_set[1].views),
                                  "problems": _view_set_problems(view_set[1], [m for _, m in arrays], cams, stamp),
                                  "stale_camera_infos": sum((i.header.stamp.sec, i.header.stamp.nanosec) != stamp
                                                            for i in view_set[1].camera_infos)}
        return result, [m for _, m in arrays]

    def counters(self, target: Target, timeout: float = 10.0) -> dict[str, Any]:
        """From a /diagnostics message of the target node received after this call began: its stage
        latencies ({"latency_ms": {"encode.p50_ms": ..., ...}}, over every frame it processed) and, for a
        camera-set target, its counters ({"counters_error": why} when no message came)."""
        hardware_id, t0 = f"{target.namespace}/{NODE_NAME}", time.monotonic()
        with self.lock:
            if not self.lock.wait_for(lambda: self.diagnostics.get(hardware_id, (0.0,))[0] > t0, timeout=timeout):
                return {"counters_error": f"no /diagnostics from {hardware_id} within {timeout:.0f} s"}
            statuses = self.diagnostics[hardware_id][1]
        node = statuses[f"{NODE_NAME}: pipeline"]
        latency = {"latency_ms": {k[len("latency."):]: _number(v) for k, v in node.items()
                                  if k.startswith("latency.") and k.endswith("_ms")}}
        if not target.views:
            return latency
        return {"node": {k: int(node[k]) for k in SET_COUNTERS},
                "cameras": {c: {k: int(statuses[f"{NODE_NAME}: camera {c}"][k]) for k in CAMERA_COUNTERS}
                            for c in target.cameras}, **latency}


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # a latency window with no frame yet
        return float("nan")


def drive(spec: Mapping[str, Any]) -> None:
    """The driver process (see the module docstring): answers RosSession's requests read from stdin,
    'set' (one frame set to a target), 'round_trip' (the model-free probe node; a failure is answered,
    the session goes on), 'capacity' (the model-free node's capacity, see ``capacity``) and 'finish' (the
    conversion costs and the sets node's counters, then exit)."""
    rclpy.init()
    d = Driver(spec)
    executor = SingleThreadedExecutor()
    executor.add_node(d.node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    messages: dict[tuple[int, int], list[tuple[Any, Any, Any]]] = {}
    arrays: list = []  # the last frame set's arrays with 20 instances, for the conversion costs
    first: set = set()  # (target, boxes, cameras) that returned a frame set
    try:
        d.bring_up(list(d.targets.values()), spec["startup_timeout"])
        answer({"ready": True})
        for line in sys.stdin:
            request = json.loads(line)
            if request["cmd"] == "round_trip":
                try:
                    probe = d.add_target(Target("probe", request["namespace"], [request["camera"]],
                                                int(request["node_pid"])))
                    d.bring_up([probe], 120.0)
                    answer(_round_trip(d, probe, int(request["repeats"])))
                except RuntimeError as e:  # the frame-set results stand: say why, keep serving
                    answer({"error": f"round trip: {e}"})
                continue
            if request["cmd"] == "capacity":
                answer(capacity(d, d.targets["capacity"], request))
                continue
            if request["cmd"] == "finish":
                answer({"conversions": _conversion_costs(d.node, d.frames[0], arrays),
                        "fastdds_profile": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", ""),
                        "nodes": {t.name: {"peak_rss_mb": status_mb("VmHWM", t.node_pid), **d.counters(t)}
                                  for t in d.targets.values()}})
                break
            target = d.targets[request.get("target", "independent")]
            n, ncam = int(request["boxes"]), int(request["cameras"])
            if (n, ncam) not in messages:  # built once; each set only gets a new header
                messages[(n, ncam)] = [_camera_messages(d.frames[c], n) for c in range(ncam)]
            result, got = d.frame_set(target, messages[(n, ncam)], float(request["timeout_s"]))
            if result["missed"] and (target.name, n, ncam) not in first:
                answer({"error": f"no ScrapInstanceArray {'and ScrapViewSet ' if target.views else ''}for the "
                                 f"first frame set of the {target.name} node (N={n}, {ncam} camera(s)) within "
                                 f"{request['timeout_s']:.0f} s; the node log says whether images arrived "
                                 "(Fast DDS drops best-effort samples over 512 KB unless "
                                 "FASTDDS_DEFAULT_PROFILES_FILE raises its segment size)"})
                break
            first.add((target.name, n, ncam))
            if any(len(m.instances) == 20 for m in got):
                arrays = got
            answer(result)
    finally:
        executor.shutdown(timeout_sec=2)
        d.node.destroy_node()
        rclpy.try_shutdown()


def answer(obj: Mapping[str, Any]) -> None:
    """One answer line to the benchmark (RosSession); rclpy and tqdm write to stderr."""
    print(ANSWER + json.dumps(obj), flush=True)


def _round_trip(d: Driver, probe: Target, repeats: int) -> dict[str, Any]:
    """Frame 0 with an empty Detection2DArray to the probe node, ``repeats`` times after 2 warm-ups."""
    frame = d.frames[0]
    messages = [(_camera_info(frame), rgb_to_image(frame.rgb), Detection2DArray())]
    times = []
    for _ in range(repeats + 2):
        result, _ = d.frame_set(probe, messages, 30.0)
        if result["missed"]:
            raise RuntimeError("the model-free probe node returned no array within 30 s")
        times.append(result["set_s"])
    return {"round_trip_s": statistics.median(times[2:]), "samples_s": times[2:]}


def _camera_info(frame: Any) -> Any:
    """A pinhole CameraInfo of the frame's size (focal length = width), header set at publishing."""
    h, w = frame.rgb.shape[:2]
    return CameraInfo(height=h, width=w, distortion_model="plumb_bob", d=[0.0] * 5,
                      k=[float(w), 0.0, w / 2, 0.0, float(w), h / 2, 0.0, 0.0, 1.0])


def _camera_messages(frame: Any, boxes: int) -> tuple[Any, Any, Any]:
    """One camera's CameraInfo, Image and Detection2DArray (its first ``boxes`` boxes) of ``frame``."""
    detections = Detection2DArray(detections=[make_detection(b.astype(float), f"d{i}", "scrap", 0.9)
                                              for i, b in enumerate(frame.boxes[:boxes])])
    return _camera_info(frame), rgb_to_image(frame.rgb), detections


def _view_set_problems(view_set: Any, arrays: Sequence[Any], cameras: Sequence[str],
                       stamp: tuple[int, int]) -> list[str]:
    """How a ScrapViewSet differs from the frame set sent ([] when it holds exactly it): complete, the set's
    stamp, one view per camera in camera order, each field for field the array on ``<cam>/scrap_instances``
    (``arrays``, in camera order) and a CameraInfo beside each."""
    problems = []
    if (view_set.header.stamp.sec, view_set.header.stamp.nanosec) != stamp:
        problems.append("set stamp is not the frames' stamp")
    if view_set.partial or list(view_set.missing_cameras):
        problems.append(f"partial, missing {list(view_set.missing_cameras)}")
    names = [v.camera_name for v in view_set.views]
    if names != list(cameras):
        problems.append(f"views of {names}, not {list(cameras)}")
    for view, array in zip(view_set.views, arrays):
        fields = [f for f in view.get_fields_and_field_types() if getattr(view, f) != getattr(array, f)]
        if fields:
            problems.append(f"{view.camera_name}: view differs from its scrap_instances array in {', '.join(fields)}")
    if len(view_set.camera_infos) != len(view_set.views):
        problems.append(f"{len(view_set.camera_infos)} camera_infos for {len(view_set.views)} views")
    return problems


CONVERSION_HW = (720, 1280)  # the goals' image size, whatever the benchmark's frames are


def _median_s(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _conversion_costs(node: Any, frame: Any, arrays: Sequence[Any], repeats: int = 50) -> dict[str, Any]:
    """Median seconds of the node's per-frame ROS work, each alone, at 1280x720: receiving an rgb8 image
    (deserialise, ``image_to_rgb``, pairing with its waiting detections: ``image_receive_s``), receiving
    20 detections (``detections_receive_s``, read raw as the node does), and building + publishing a
    20-instance array with box-sized masks (the frame's first 20 boxes scaled to 1280x720; ``array_*``);
    with the node's own 20-instance output of the ros mode (random-weight masks, mostly frame-sized) also
    that array (``node_array_*``)."""
    h, w = CONVERSION_HW
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), np.uint8)
    wire = serialize_message(rgb_to_image(rgb, Header(frame_id="bench")))
    boxes = np.resize(frame.boxes, (20, 4)) * np.tile([w / frame.rgb.shape[1], h / frame.rgb.shape[0]], 2)
    det_wire = serialize_message(Detection2DArray(detections=[make_detection(b.astype(float), f"d{i}", "scrap", 0.9)
                                                              for i, b in enumerate(boxes)]))
    pairer: StampPairer = StampPairer(30, 2.0)

    def receive_image() -> None:  # the node's _on_image path; the detections (stamp 0, 0) wait already
        msg = deserialize_message(wire, Image)
        pairer.add_detections((0, 0), [])
        if pairer.add_image(stamp_of(msg.header), image_to_rgb(msg)) is None:
            raise RuntimeError("the image did not pair with its detections")

    def receive_detections() -> None:  # the node's _on_detections path: read raw where it can
        if cdr_detections_ok():
            detections_from_cdr(det_wire)
        else:
            detections_to_prompts(deserialize_message(det_wire, Detection2DArray))

    msg = deserialize_message(wire, Image)
    out: dict[str, Any] = {
        "image_hw": [h, w], "image_bytes": len(wire), "detections": len(boxes),
        "image_deserialize_s": _median_s(lambda: deserialize_message(wire, Image), repeats),
        "image_to_rgb_s": _median_s(lambda: image_to_rgb(msg), repeats),
        "image_receive_s": _median_s(receive_image, repeats),
        "image_to_rgb_is_view": bool(not image_to_rgb(msg).flags.owndata),
        "detections_receive_s": _median_s(receive_detections, repeats),
    }
    topic = "/bench_driver/scrap_instances"
    pub = node.create_publisher(ScrapInstanceArray, topic, output_qos(5))
    node.create_subscription(ScrapInstanceArray, topic, lambda m: None, output_qos(5), raw=True)
    rng = np.random.default_rng(0)
    box_sized = FrameResult(synthetic_instances(boxes, (h, w), rng)), Header(frame_id="bench"), (h, w)
    out.update(_array_costs("array", pub, *box_sized, repeats))
    out["array_source"] = "box-sized masks (the frame's boxes at 1280x720)"
    node_output = _node_array(arrays)
    if node_output is not None:
        out.update(_array_costs("node_array", pub, *node_output, repeats))
    return out


def _array_costs(prefix: str, pub: Any, result: FrameResult, header: Any, hw: tuple[int, int],
                 repeats: int) -> dict[str, Any]:
    """Build (``result_to_msg``), serialise and publish medians of one array, its size and instances."""
    build, publish = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        msg = result_to_msg(result, header, "bench_cam0", hw, "segmenter", "classifier", True)
        t1 = time.perf_counter()
        pub.publish(msg)
        publish.append(time.perf_counter() - t1)
        build.append(t1 - t0)
    masks = sum(len(i.mask.data) for i in msg.instances)
    return {f"{prefix}_instances": len(msg.instances), f"{prefix}_mask_bytes": masks,
            f"{prefix}_bytes": len(serialize_message(msg)), f"{prefix}_build_s": statistics.median(build),
            f"{prefix}_publish_s": statistics.median(publish),
            f"{prefix}_serialize_s": _median_s(lambda: serialize_message(msg), repeats)}


def _node_array(arrays: Sequence[Any]) -> Optional[tuple[FrameResult, Any, tuple[int, int]]]:
    """A FrameResult rebuilt from a received ScrapInstanceArray with 20 instances (the node's real output:
    its masks, scores, embeddings), its header and image size; None without one."""
    src = next((m for m in arrays if len(m.instances) == 20), None)
    if src is None:
        return None
    instances = []
    for inst in src.instances:
        r = inst.roi
        mask = np.frombuffer(inst.mask.data, np.uint8).reshape(r.height, r.width) > 0
        c = inst.prompt_box
        box = (c.center.position.x - c.size_x / 2, c.center.position.y - c.size_y / 2,
               c.center.position.x + c.size_x / 2, c.center.position.y + c.size_y / 2)
        cls = Classification(inst.class_id, inst.class_name, inst.class_score,
                             np.asarray(inst.class_scores, np.float32), np.asarray(inst.embedding, np.float32))
        instances.append(Instance(inst.id, box_point_prompt(box), InstanceMask(
            (r.x_offset, r.y_offset, r.width, r.height), mask, inst.mask_score), cls))
    return FrameResult(instances), src.header, (src.image_height, src.image_width)


# --- capacity (the model-free node, bench_node) -------------------------------------------------------
def cdr_stamp(wire: bytes) -> tuple[int, int]:
    """(sec, nanosec) of a serialised message whose first field is a std_msgs/Header: little-endian CDR
    (what Fast DDS writes on this machine) puts the stamp right after the 4-byte encapsulation header."""
    if wire[:2] != CDR_LE:
        raise RuntimeError(f"not little-endian CDR (encapsulation {wire[:4]!r})")
    return struct.unpack_from("<iI", wire, 4)


def restamped(wire: bytes, sec: int, nanosec: int) -> bytes:
    """The serialised message ``wire`` (Header first, little-endian CDR) with another stamp."""
    buf = bytearray(wire)
    struct.pack_into("<iI", buf, 4, sec, nanosec)
    return bytes(buf)


class _Sender:
    """Publishes a camera's frame (image, then detections) pre-serialised with a new stamp, and keeps the
    send time of every frame by its result key (topic, sec, nanosec)."""

    def __init__(self, d: Driver, target: Target, boxes: int) -> None:
        self.d, self.target = d, target
        self.wires = []
        for i in range(len(target.cameras)):
            _, image, detections = _camera_messages(d.frames[i % len(d.frames)], boxes)
            self.wires.append((serialize_message(image), serialize_message(detections)))
        probe = deserialize_message(restamped(self.wires[0][0], 7, 9), Image).header.stamp
        if (probe.sec, probe.nanosec) != (7, 9):
            raise RuntimeError("re-stamping a serialised image failed: its header is not where expected")
        self.sent: dict[tuple[str, int, int], float] = {}
        self._last_ns = 0

    def send(self, camera: int) -> tuple[str, int, int]:
        self._last_ns = max(time.time_ns(), self._last_ns + 1)  # unique, also within one clock tick
        sec, nanosec = divmod(self._last_ns, 10**9)
        _, image_pub, detections_pub = self.target.pubs[camera]
        image, detections = self.wires[camera]
        key = (self.target.topic(self.target.cameras[camera], "scrap_instances"), sec, nanosec)
        self.sent[key] = time.perf_counter()
        image_pub.publish(restamped(image, sec, nanosec))
        detections_pub.publish(restamped(detections, sec, nanosec))
        return key


def capacity(d: Driver, target: Target, request: Mapping[str, Any]) -> dict[str, Any]:
    """The model-free node's capacity: after ``warmup`` frames per camera one by one (the node computes
    its precomputed results there), every camera at ``rate_hz`` for ``seconds`` (all cameras of a tick
    together, one stamp per frame), then each camera's next frame as soon as its previous one is answered
    (closed loop, for ``seconds``). Per phase: frames sent and answered, arrays/s, latency (send ->
    receipt) and the node's own counters over the phase (/diagnostics, read after the phase's frames
    were answered or ``drain_s`` passed)."""
    sender = _Sender(d, target, int(request["boxes"]))
    seconds, drain = float(request["seconds"]), float(request["drain_s"])
    _closed_loop(d, sender, int(request["warmup"]), None, drain)
    _drain(d, sender, time.perf_counter())
    before = _node_counters(d, target)
    phases = {}
    for name in ("rate", "closed_loop"):
        sender.sent.clear()
        if name == "rate":
            t_send = _at_rate(sender, float(request["rate_hz"]), seconds)
        else:
            t_send = _closed_loop(d, sender, None, seconds, drain)
        answered = _drain(d, sender, t_send + drain)
        after = _node_counters(d, target)
        phases[name] = _phase(sender.sent, answered, before, after, float(request["rate_hz"]) if name == "rate"
                              else None)
        before = after
    return {"cameras": len(target.cameras), "boxes": int(request["boxes"]), "seconds": seconds,
            "image_hw": list(d.frames[0].rgb.shape[:2]), "phases": phases}


def _at_rate(sender: _Sender, rate_hz: float, seconds: float) -> float:
    """Every camera's frame each 1 / rate_hz s for ``seconds``; returns the last send time."""
    t0 = time.perf_counter()
    for tick in range(max(1, round(seconds * rate_hz))):
        wait = t0 + tick / rate_hz - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        for camera in range(len(sender.target.cameras)):
            sender.send(camera)
    return time.perf_counter()


def _closed_loop(d: Driver, sender: _Sender, frames: Optional[int], seconds: Optional[float],
                 timeout_s: float) -> float:
    """Per camera one frame in flight, the next sent when it is answered (or after ``timeout_s``
    unanswered): ``frames`` per camera, or for ``seconds``; returns the last send time."""
    cams = range(len(sender.target.cameras))
    count = dict.fromkeys(cams, 1)
    flying = {c: sender.send(c) for c in cams}
    end = time.perf_counter() + (seconds or 0.0)
    last = time.perf_counter()
    while flying:
        with d.lock:
            d.lock.wait_for(lambda: any(k in d.received for k in flying.values()), timeout=0.05)
            done = {c for c, k in flying.items() if k in d.received}
        now = time.perf_counter()
        done |= {c for c, k in flying.items() if now - sender.sent[k] > timeout_s}
        for c in done:
            more = count[c] < frames if frames is not None else now < end
            if more:
                flying[c] = sender.send(c)
                count[c] += 1
                last = time.perf_counter()
            else:
                del flying[c]
    return last


def _drain(d: Driver, sender: _Sender, deadline: float) -> dict[tuple[str, int, int], float]:
    """Receipt times of the frames sent, once all are answered or at ``deadline``; removed from received."""
    keys = list(sender.sent)
    with d.lock:
        d.lock.wait_for(lambda: all(k in d.received for k in keys), timeout=max(0.0, deadline - time.perf_counter()))
        return {k: d.received.pop(k)[0] for k in keys if k in d.received}


def _phase(sent: Mapping[tuple, float], answered: Mapping[tuple, float], before: Mapping[str, Any],
           after: Mapping[str, Any], rate_hz: Optional[float]) -> dict[str, Any]:
    """One phase's figures: sent, answered, arrays/s (answered over first send -> last answer), frames sent
    per second, latency median / p95, and the node's counters over the phase (after - before)."""
    latency = sorted(answered[k] - sent[k] for k in answered)
    first, last_sent = min(sent.values()), max(sent.values())
    span = (max(answered.values()) - first) if answered else math.nan
    node = {k: after["counters"][k] - before["counters"].get(k, 0) for k in after["counters"]}
    return {"rate_hz": rate_hz, "sent": len(sent), "answered": len(answered),
            "sent_per_s": len(sent) / (last_sent - first) if last_sent > first else math.nan,
            "arrays_per_s": len(answered) / span if answered else 0.0,
            "latency_median_s": float(np.median(latency)) if latency else math.nan,
            "latency_p95_s": float(np.percentile(latency, 95)) if latency else math.nan,
            "node": node, "node_waiting": after["waiting"], "node_latency_ms": after["latency_ms"]}


def _node_counters(d: Driver, target: Target, timeout: float = 10.0) -> dict[str, Any]:
    """The node's frame counters summed over its cameras, what waits in its pairing buffers, and its stage
    latencies (p50 / p95 ms over its last 512 frames), from a /diagnostics message received after this
    call began. RuntimeError when none comes."""
    hardware_id, t0 = f"{target.namespace}/{NODE_NAME}", time.monotonic()
    with d.lock:
        if not d.lock.wait_for(lambda: d.diagnostics.get(hardware_id, (0.0,))[0] > t0, timeout=timeout):
            raise RuntimeError(f"no /diagnostics from {hardware_id} within {timeout:.0f} s")
        statuses = d.diagnostics[hardware_id][1]
    cams = [statuses[f"{NODE_NAME}: camera {c}"] for c in target.cameras]
    counters = {k: sum(int(c.get(k, 0)) for c in cams) for k in CAPACITY_COUNTERS}
    counters["publish_error"] = sum(int(c.get("rejected.publish_error", 0)) for c in cams)
    node = statuses[f"{NODE_NAME}: pipeline"]
    return {"counters": counters,
            "waiting": {k: sum(int(c[f"waiting.{k}"]) for c in cams) for k in ("images", "detections")},
            "latency_ms": {f"{s}.{q}": float(node[f"latency.{s}.{q}_ms"]) for s in ("convert", "publish", "total")
                           for q in ("p50", "p95")}}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m scrap_perception.ros.bench_driver SPEC.json (started by `scrap-tools bench`)",
              file=sys.stderr)
        return 2
    try:
        drive(json.loads(Path(argv[0]).read_text()))
    except RuntimeError as e:
        answer({"error": f"bench ros driver: {e}"})
        return 1
    except KeyboardInterrupt:  # RosSession stops the driver with SIGINT when the node has failed
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
