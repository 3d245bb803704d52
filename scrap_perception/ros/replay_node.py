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
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

from . import params
from .conversions import rgb_to_image, stamp_of
from .params import ParamSpec
from .qos import output_qos

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
    ParamSpec("restamp", True, "bool", "MCAP: stamp frames with the current time (COCO frames always are)."),
    ParamSpec("wait_for_subscribers", 30.0, "double",
              "Seconds to wait for min_subscribers on every image and detection topic before starting; "
              "0 = do not wait.", range=(0.0, 3600.0)),
    ParamSpec("min_subscribers", 1, "int", "Subscribers to wait for per topic (e.g. 2: the node and a recorder).",
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
    """Frames of a COCO dataset: list over frame index of [one Frame per camera]."""
    import json

    from ..data import CocoDataset

    ann = source / "annotations.json" if source.is_dir() else source
    ds = CocoDataset(ann)
    records = json.loads(ann.read_text(encoding="utf-8"))["images"]
    per_cam: dict[str, list[int]] = {c: [] for c in cameras}
    for i, rec in enumerate(records):
        cam = rec.get("camera", cameras[i % len(cameras)])
        if cam in per_cam:
            per_cam[cam].append(i)
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
        self.cameras = [f.camera for f in self.frames[0]]
        qos = output_qos(10)
        self.image_pubs = {c: self.create_publisher(Image, f"{c}/image_raw", qos) for c in self.cameras}
        self.det_pubs = {c: self.create_publisher(Detection2DArray, f"{c}/detections", qos) for c in self.cameras}
        self.published = 0
        self._results: set[tuple[str, tuple[int, int]]] = set()
        if self.p["lockstep"]:
            from scrap_perception.msg import ScrapInstanceArray
            for c in self.cameras:
                self.create_subscription(ScrapInstanceArray, f"{c}/scrap_instances",
                                         lambda m, c=c: self._results.add((c, stamp_of(m.header))), qos)
        self.get_logger().info(f"{len(self.frames)} frames of cameras {self.cameras} from {source}")

    def wait_for_subscribers(self, timeout: float, n: int = 1) -> bool:
        deadline = time.monotonic() + timeout
        pubs = [*self.image_pubs.values(), *self.det_pubs.values()]
        while time.monotonic() < deadline and rclpy.ok():
            if all(p.get_subscription_count() >= n for p in pubs):
                # Our side has matched; give the readers' side a moment too, or a best-effort reader
                # drops the first samples of a writer it does not know yet.
                time.sleep(1.0)
                return True
            time.sleep(0.05)
        return False

    def wait_for_results(self, stamps: dict[str, tuple[int, int]], timeout: float) -> bool:
        """Spins until every camera's ScrapInstanceArray of its stamp arrived (lockstep mode)."""
        deadline = time.monotonic() + timeout
        want = set(stamps.items())
        while rclpy.ok() and time.monotonic() < deadline:
            if want <= self._results:
                self._results -= want
                return True
            rclpy.spin_once(self, timeout_sec=0.05)
        return False

    def publish_frame(self, frames: list[Frame], stamp: Any) -> dict[str, tuple[int, int]]:
        """The images and detections of one frame, in the configured order, all with one header;
        returns each camera's stamp."""
        out = []
        for f in frames:
            img = f.image()
            if stamp is not None:
                img.header.stamp = stamp
            img.header.frame_id = img.header.frame_id or f.camera
            det = Detection2DArray(header=img.header, detections=f.detections())
            out.append((f.camera, img, det))
        delay = self.p["detection_delay"]
        first, second = ("image", "det") if delay >= 0 else ("det", "image")
        for kind in (first, second):
            for cam, img, det in out:
                (self.image_pubs if kind == "image" else self.det_pubs)[cam].publish(img if kind == "image" else det)
            if kind == first and delay:
                time.sleep(abs(delay))
        self.published += 1
        return {cam: stamp_of(img.header) for cam, img, _ in out}

    def run(self) -> None:
        wait, n = self.p["wait_for_subscribers"], self.p["min_subscribers"]
        if wait > 0 and not self.wait_for_subscribers(wait, n):
            self.get_logger().warning(f"fewer than {n} subscribers on some topics after {wait} s; publishing anyway")
        period, start = 1.0 / self.p["rate"], time.monotonic()
        total = self.p["max_frames"] or (None if self.p["loop"] else len(self.frames))
        k = 0
        while rclpy.ok() and (total is None or k < total):
            frames = self.frames[k % len(self.frames)]
            recorded = frames[0].stamp is not None and not self.p["restamp"]
            stamps = self.publish_frame(frames, None if recorded else self.get_clock().now().to_msg())
            k += 1
            if self.p["lockstep"] and not self.wait_for_results(stamps, self.p["lockstep_timeout"]):
                self.get_logger().warning(f"lockstep: no results for frame {k - 1} within "
                                          f"{self.p['lockstep_timeout']} s; going on")
            time.sleep(max(0.0, start + k * period - time.monotonic()))
        self.get_logger().info(f"published {k} frames")
        time.sleep(self.p["linger"])


def main(args: Optional[list[str]] = None) -> None:
    rclpy.init(args=args if args is not None else sys.argv)
    node: Optional[ReplayNode] = None
    code = 0
    try:
        node = ReplayNode()
        node.run()
    except KeyboardInterrupt:
        pass
    except (ValueError, OSError) as e:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot replay: {e}")
        code = 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    sys.exit(code)


if __name__ == "__main__":
    main()
