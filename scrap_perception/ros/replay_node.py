"""Replays a dataset as camera topics: ``<cam>/image_raw`` (sensor_msgs/Image) and ``<cam>/detections``
(vision_msgs/Detection2DArray with the image's header, as a detector would publish).

Sources:
- a COCO json (or a folder holding ``annotations.json``): images are split over ``camera_names`` by an
  image record's ``camera`` field when present, else in turn (image k -> camera k mod n); frame k of all
  cameras goes out together with one stamp. Detections are the annotations' boxes, optionally jittered
  like a detector's (each corner moved by up to ``jitter_px``), with score = IoU(jittered box, true box)
  and ``Detection2D.id`` = the annotation id (so outputs can be matched to the ground truth).
- an MCAP recording holding ``<cam>/image_raw`` and ``<cam>/detections`` topics (e.g. from the recorder):
  images are paired with the detections of the same stamp and replayed frame by frame.

Every frame is stamped with the current time (``restamp`` keeps the recorded stamps of an MCAP).
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

from . import params
from .conversions import rgb_to_image, stamp_of
from .params import ParamSpec
from .qos import output_qos
from .runner import exit_process, spin_node

NODE_NAME = "scrap_replay"

REPLAY_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("source", "", "string", "COCO json, a folder with annotations.json, or an .mcap recording.",
              check=lambda v: None if v.strip() else "a source (COCO json, folder or .mcap) is needed"),
    ParamSpec("camera_names", [], "string_array",
              "Cameras to publish. COCO: images are split over them (default [cam0]); MCAP: the recorded "
              "cameras to replay (default all)."),
    ParamSpec("rate", 2.0, "double", "Frames per second (each frame = one image per camera).",
              range=(0.01, 1000.0)),
    ParamSpec("loop", False, "bool", "Start again after the last frame (stamps stay unique)."),
    ParamSpec("max_frames", 0, "int", "Frames to publish in all (0 = the whole source once, or forever "
              "with loop).", range=(0, None)),
    ParamSpec("jitter_px", 0.0, "double", "COCO: each box corner moves by up to this many pixels "
              "(uniform), like a detector's error.", range=(0.0, 10000.0)),
    ParamSpec("seed", 0, "int", "Seed of the jitter.", range=(0, None)),
    ParamSpec("detection_delay", 0.0, "double", "Seconds between a frame's images and its detections; "
              "negative = detections first.", range=(-60.0, 60.0)),
    ParamSpec("image_encoding", "rgb8", "string", "Encoding of the published images.", choices=("rgb8", "bgr8")),
    ParamSpec("restamp", False, "bool", "MCAP: stamp frames with the current time instead of their recorded "
              "stamps (COCO frames always are)."),
    ParamSpec("stamp_jitter", 0.0, "double",
              "Seconds each camera's stamp of a frame moves at random (uniform +-), like free-running cameras; "
              "0 = identical stamps (a hardware trigger).", range=(0.0, 10.0)),
    ParamSpec("drop_rate", 0.0, "double",
              "Probability that a camera's image and detections of a frame are not published (a camera that "
              "drops frames).", range=(0.0, 1.0)),
    ParamSpec("rig_file", "", "string",
              "Rig file (scrap-tools synth --cameras writes one): publish <cam>/camera_info with every image "
              "(same header); empty = no CameraInfo."),
    ParamSpec("wait_for_subscribers", 30.0, "double",
              "Seconds to wait for min_subscribers on every image and detection topic before starting; "
              "0 = do not wait.", range=(0.0, 3600.0)),
    ParamSpec("min_subscribers", 1, "int", "Subscribers to wait for per topic (e.g. 2: the node and a recorder; "
              "with lockstep the result topics need the node's publisher and the others too).",
              range=(1, 1000)),
    ParamSpec("lockstep", False, "bool",
              "Wait for every camera's <cam>/scrap_instances of a frame before the next one (no frame is "
              "dropped by a slow node; for evaluation runs)."),
    ParamSpec("lockstep_timeout", 60.0, "double", "Seconds to wait for a frame's results in lockstep mode.",
              range=(0.1, 3600.0)),
    ParamSpec("linger", 1.0, "double", "Seconds to stay up after the last frame (so late readers get it).",
              range=(0.0, 3600.0)),
)


@dataclass
class Frame:
    """One camera's image and detections: ``image()`` builds the Image message (header set later)."""

    camera: str
    image: Callable[[], Image]
    detections: Callable[[], list[Detection2D]]
    stamp: Optional[tuple[int, int]] = None  # recorded stamp (MCAP)


def jitter_box(box: np.ndarray, jitter: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """(x0, y0, x1, y1) moved by up to ``jitter`` px per corner coordinate, and its IoU with ``box``."""
    if jitter <= 0:
        return box.astype(np.float64), 1.0
    out = box + rng.uniform(-jitter, jitter, 4)
    out[2], out[3] = max(out[2], out[0] + 1), max(out[3], out[1] + 1)
    ix = max(0.0, min(box[2], out[2]) - max(box[0], out[0]))
    iy = max(0.0, min(box[3], out[3]) - max(box[1], out[1]))
    inter = ix * iy
    union = (box[2] - box[0]) * (box[3] - box[1]) + (out[2] - out[0]) * (out[3] - out[1]) - inter
    return out, float(inter / union)


def make_detection(box: np.ndarray, id: str, class_name: str, score: float) -> Detection2D:
    d = Detection2D(id=id)
    d.bbox.center.position.x, d.bbox.center.position.y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    d.bbox.size_x, d.bbox.size_y = float(box[2] - box[0]), float(box[3] - box[1])
    hyp = ObjectHypothesisWithPose()
    hyp.hypothesis.class_id, hyp.hypothesis.score = class_name, float(score)
    d.results.append(hyp)
    return d


def coco_frames(source: Path, cameras: list[str], jitter: float, seed: int, encoding: str) -> list[list[Frame]]:
    """Frames of a COCO dataset: list over frame index of [one Frame per camera]. Images carrying a
    ``camera`` and a ``frame`` field (``scrap-tools synth --cameras``) form synchronized sets by frame
    index (a frame missing a camera's image lacks that camera); otherwise each camera's images in file
    order are its frames."""
    import json

    from ..data import CocoDataset

    ann = source / "annotations.json" if source.is_dir() else source
    ds = CocoDataset(ann)
    records = json.loads(ann.read_text(encoding="utf-8"))["images"]
    per_cam: dict[str, list[int]] = {c: [] for c in cameras}
    by_frame: dict[int, dict[str, int]] = {}
    for i, rec in enumerate(records):
        cam = rec.get("camera", cameras[i % len(cameras)])
        if cam in per_cam:
            per_cam[cam].append(i)
            if "frame" in rec:
                by_frame.setdefault(int(rec["frame"]), {})[cam] = i
    rng = np.random.default_rng(seed)

    def frame(cam: str, i: int) -> Frame:
        def image() -> Image:
            return rgb_to_image(ds.load_image(i), encoding=encoding)

        def detections() -> list[Detection2D]:
            out = []
            for inst in ds[i].instances:
                box, score = jitter_box(inst.box, jitter, rng)
                out.append(make_detection(box, str(inst.ann_id), inst.class_name, score))
            return out
        return Frame(cam, image, detections)

    if by_frame:
        return [[frame(c, by_frame[k][c]) for c in cameras if c in by_frame[k]] for k in sorted(by_frame)]
    n = min(len(v) for v in per_cam.values())
    return [[frame(c, per_cam[c][k]) for c in cameras] for k in range(n)]


def mcap_frames(source: Path, cameras: list[str]) -> list[list[Frame]]:
    """Frames of an MCAP recording: images of '<cam>/image_raw' with the '<cam>/detections' of their stamp."""
    from mcap.reader import make_reader

    images: dict[str, list[tuple[tuple[int, int], bytes]]] = {}
    dets: dict[str, dict[tuple[int, int], bytes]] = {}
    with open(source, "rb") as f:
        for schema, channel, message in make_reader(f).iter_messages():
            m = re.fullmatch(r"/?(.+)/(image_raw|detections)", channel.topic)
            if not m or (cameras and m.group(1) not in cameras):
                continue
            cam, kind = m.groups()
            if kind == "image_raw" and schema.name == "sensor_msgs/msg/Image":
                msg = deserialize_message(message.data, Image)
                images.setdefault(cam, []).append(((msg.header.stamp.sec, msg.header.stamp.nanosec), message.data))
            elif kind == "detections" and schema.name == "vision_msgs/msg/Detection2DArray":
                msg = deserialize_message(message.data, Detection2DArray)
                dets.setdefault(cam, {})[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = message.data
    cams = sorted(images) if not cameras else [c for c in cameras if c in images]
    if not cams:
        raise ValueError(f"source: {source} holds no '<cam>/image_raw' sensor_msgs/Image topic"
                         + (f" for cameras {cameras}" if cameras else ""))

    def frame(cam: str, stamp: tuple[int, int], raw: bytes) -> Frame:
        raw_det = dets.get(cam, {}).get(stamp)
        return Frame(cam, lambda: deserialize_message(raw, Image),
                     lambda: list(deserialize_message(raw_det, Detection2DArray).detections) if raw_det else [],
                     stamp)

    n = min(len(images[c]) for c in cams)
    return [[frame(c, *images[c][k]) for c in cams] for k in range(n)]


class ReplayNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.p = params.declare(self, REPLAY_PARAMS)
        source = Path(self.p["source"])
        if not source.exists():
            raise params.ParamError(f"source: {source} does not exist")
        if source.suffix == ".mcap":
            self.frames = mcap_frames(source, self.p["camera_names"])
        else:
            self.frames = coco_frames(source, self.p["camera_names"] or ["cam0"], self.p["jitter_px"],
                                      self.p["seed"], self.p["image_encoding"])
        if not self.frames:
            raise params.ParamError(f"source: {source} holds no complete frame for the cameras")
        self.cameras = list(dict.fromkeys(f.camera for frames in self.frames for f in frames))
        self.rig = None
        if self.p["rig_file"].strip():
            from ..multiview.rig import RigError, load_rig
            try:
                self.rig = load_rig(self.p["rig_file"])
            except RigError as e:
                raise params.ParamError(f"rig_file: {e}") from None
            unknown = [c for c in self.cameras if c not in self.rig]
            if unknown:
                raise params.ParamError(f"rig_file: cameras {unknown} are not in the rig {self.rig.names}")
        self.rng = np.random.default_rng(self.p["seed"])
        qos = output_qos(10)
        self.info_pubs = ({c: self.create_publisher(CameraInfo, f"{c}/camera_info", qos) for c in self.cameras}
                          if self.rig is not None else {})
        self.image_pubs = {c: self.create_publisher(Image, f"{c}/image_raw", qos) for c in self.cameras}
        self.det_pubs = {c: self.create_publisher(Detection2DArray, f"{c}/detections", qos) for c in self.cameras}
        self.published = 0
        self._results: set[tuple[str, tuple[int, int]]] = set()
        self._results_lock = threading.Lock()
        if self.p["lockstep"]:
            from scrap_perception.msg import ScrapInstanceArray
            for c in self.cameras:
                self.create_subscription(ScrapInstanceArray, f"{c}/scrap_instances",
                                         lambda m, c=c: self._on_result(c, m), qos)
        self.get_logger().info(f"{len(self.frames)} frames of cameras {self.cameras} from {source}")

    def _on_result(self, cam: str, msg: Any) -> None:
        with self._results_lock:
            self._results.add((cam, stamp_of(msg.header)))

    def wait_for_subscribers(self, timeout: float, n: int = 1, spinning: Callable[[], bool] = rclpy.ok) -> bool:
        """Until every image and detection topic has ``n`` subscribers (the node and n - 1 others, such as
        a recorder) and, in lockstep, every result topic has a publisher and n - 1 subscribers besides
        this node: a recorder subscribes once it knows the publisher, so it records the first result."""
        deadline = time.monotonic() + timeout
        pubs = [*self.image_pubs.values(), *self.det_pubs.values()]
        while time.monotonic() < deadline and spinning():
            matched = all(p.get_subscription_count() >= n for p in pubs)
            if matched and (not self.p["lockstep"] or self._results_listened(n - 1)):
                # Our side has matched; give the readers' side a moment too, or a best-effort reader
                # drops the first samples of a writer it does not know yet.
                time.sleep(1.0)
                return True
            time.sleep(0.05)
        return False

    def _results_listened(self, others: int) -> bool:
        """Every camera's result topic has a publisher (the node) and ``others`` subscribers but this node."""
        me = (self.get_name(), self.get_namespace())
        for cam in self.cameras:
            topic = self.resolve_topic_name(f"{cam}/scrap_instances")
            subs = [i for i in self.get_subscriptions_info_by_topic(topic) if (i.node_name, i.node_namespace) != me]
            if self.count_publishers(topic) < 1 or len(subs) < others:
                return False
        return True

    def wait_for_results(self, stamps: dict[str, tuple[int, int]], timeout: float,
                         spinning: Callable[[], bool] = rclpy.ok) -> bool:
        """Until every camera's ScrapInstanceArray of its stamp arrived (lockstep mode; the executor
        spins in another thread)."""
        deadline = time.monotonic() + timeout
        want = set(stamps.items())
        while spinning() and time.monotonic() < deadline:
            with self._results_lock:
                if want <= self._results:
                    self._results -= want
                    return True
            time.sleep(0.01)
        return False

    def publish_frame(self, frames: list[Frame], stamp: Any) -> dict[str, tuple[int, int]]:
        """The images and detections (and CameraInfos) of one frame, in the configured order, all with
        the frame's stamp (each camera's moved by up to stamp_jitter; a camera left out at drop_rate);
        returns each published camera's stamp."""
        out = []
        jitter, drop = self.p["stamp_jitter"], self.p["drop_rate"]
        for f in frames:
            if drop and self.rng.random() < drop:
                continue
            img = f.image()
            if stamp is not None:
                ns = stamp.sec * 1_000_000_000 + stamp.nanosec
                if jitter:
                    ns += int(round(self.rng.uniform(-jitter, jitter) * 1e9))
                img.header.stamp.sec, img.header.stamp.nanosec = divmod(ns, 1_000_000_000)
            img.header.frame_id = img.header.frame_id or f.camera
            det = Detection2DArray(header=img.header, detections=f.detections())
            out.append((f.camera, img, det))
            if self.rig is not None:
                self.info_pubs[f.camera].publish(CameraInfo(header=img.header, **self.rig[f.camera].camera_info()))
        delay = self.p["detection_delay"]
        first, second = ("image", "det") if delay >= 0 else ("det", "image")
        for kind in (first, second):
            for cam, img, det in out:
                (self.image_pubs if kind == "image" else self.det_pubs)[cam].publish(img if kind == "image" else det)
            if kind == first and delay:
                time.sleep(abs(delay))
        self.published += 1
        return {cam: stamp_of(img.header) for cam, img, _ in out}

    def run(self, spinning: Callable[[], bool] = rclpy.ok) -> None:
        """Publishes the frames (on the main thread; an executor spins the node beside it when lockstep
        needs the results), stays ``linger`` s, returns. Ends early once ``spinning()`` is False."""
        wait, n = self.p["wait_for_subscribers"], self.p["min_subscribers"]
        if wait > 0 and not self.wait_for_subscribers(wait, n, spinning) and spinning():
            self.get_logger().warning(f"fewer than {n} subscribers on some topics after {wait} s; publishing anyway")
        period, start = 1.0 / self.p["rate"], time.monotonic()
        total = self.p["max_frames"] or (None if self.p["loop"] else len(self.frames))
        k = 0
        while spinning() and (total is None or k < total):
            frames = self.frames[k % len(self.frames)]
            recorded = frames[0].stamp is not None and not self.p["restamp"]
            stamps = self.publish_frame(frames, None if recorded else self.get_clock().now().to_msg())
            k += 1
            if (self.p["lockstep"] and not self.wait_for_results(stamps, self.p["lockstep_timeout"], spinning)
                    and spinning()):
                self.get_logger().warning(f"lockstep: no results for frame {k - 1} within "
                                          f"{self.p['lockstep_timeout']} s; going on")
            time.sleep(max(0.0, start + k * period - time.monotonic()))
        self.get_logger().info(f"published {k} frames")
        time.sleep(self.p["linger"] if spinning() else 0.0)


def main(args: Optional[list[str]] = None) -> None:
    """Entry point of replay_node: exit code 0 when done or interrupted (Ctrl-C), 2 for a bad source."""
    exit_process(spin_node(NODE_NAME, ReplayNode, (ValueError, OSError), args=args,
                           main_loop=lambda node, spinning: node.run(spinning)))


if __name__ == "__main__":
    main()
