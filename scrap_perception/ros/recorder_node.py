"""Records chosen topics into an MCAP file that Foxglove and ``ros2 bag`` open; for the demo it also
saves overlay images as PNG and a JSON summary of the ScrapInstanceArray topics.

Messages are taken serialized (CDR, as they travel) and written unchanged, with ros2msg schemas built
like rosbag2's (msgdefs.schema_text), so nothing is lost or re-encoded. A topic is subscribed as soon as
a publisher of it is discovered, with the reliability its publishers offer. SIGINT finishes the file
(repeated SIGINTs, as Ctrl-C under ``ros2 launch`` sends them, cannot cut that short: see runner.py).

Run: ``python -m scrap_perception.ros.recorder_node --ros-args -p output:=run.mcap -p topics:=[/cam0/scrap_instances]``
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
import rclpy
from mcap.well_known import MessageEncoding, SchemaEncoding
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from scrap_perception.msg import ScrapInstanceArray

from . import params
from .conversions import ConversionError, image_to_rgb
from .msgdefs import schema_text
from .params import ParamSpec
from .runner import exit_process, spin_node

NODE_NAME = "scrap_recorder"
IMAGE_TYPE = "sensor_msgs/msg/Image"
ARRAY_TYPE = "scrap_perception/msg/ScrapInstanceArray"

RECORDER_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("output", "scrap_recording.mcap", "string", "The MCAP file to write (its folder is created).",
              check=lambda v: None if v.strip() else "an output file is needed"),
    ParamSpec("topics", [], "string_array", "Topics to record (relative names use the node's namespace); "
              "empty = every topic seen."),
    ParamSpec("overlay_dir", "", "string",
              "Save each sensor_msgs/Image of a topic ending in 'scrap_overlay' as PNG here; empty = no PNGs."),
    ParamSpec("max_overlays", 0, "int", "PNGs kept per overlay topic (the first ones); 0 = all.", range=(0, None)),
    ParamSpec("summary", "", "string", "JSON summary written at the end (per topic counts, per camera arrays, "
              "instances and latency = receipt time - header stamp); empty = none."),
    ParamSpec("discovery_period", 0.5, "double", "Seconds between looks for new topics.", range=(0.05, 60.0)),
)


def topic_qos(infos: list) -> QoSProfile:
    """Reliable when every publisher is reliable, else best effort (which matches both)."""
    reliable = bool(infos) and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def _msg_class(type_name: str) -> type:
    import importlib

    pkg, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


class RecorderNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.p = params.declare(self, RECORDER_PARAMS)
        self.output = Path(self.p["output"])
        self._wanted = {self.resolve_topic_name(t) for t in self.p["topics"]}
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._subs: dict[str, Any] = {}
        self.counts: Counter[str] = Counter()
        self._overlays: Counter[str] = Counter()
        self._arrays: dict[str, dict] = defaultdict(lambda: {"arrays": 0, "instances": 0, "latency_s": []})
        self._finished = False
        self.create_timer(self.p["discovery_period"], self._discover)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.output, "wb")
        try:
            self._writer = McapWriter(self._file, compression=CompressionType.ZSTD)
            self._writer.start(profile="ros2", library="scrap_perception recorder")
            self._discover()
        except BaseException:  # also a Ctrl-C while starting: leave a file that opens, not a torn one
            self.finish()
            raise
        self.get_logger().info(f"recording {sorted(self._wanted) or 'every topic'} to {self.output}")

    def _discover(self) -> None:
        try:
            self._discover_now()
        except Exception:
            if self.context.ok():
                raise
            # Ctrl-C shut the context down under this timer callback: the graph cannot be read any more.

    def _discover_now(self) -> None:
        for topic, types in self.get_topic_names_and_types():
            if topic in self._subs or (self._wanted and topic not in self._wanted):
                continue
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                # Only subscribers so far: wait for a publisher, to match its reliability. This also tells
                # a lockstep replay, which sees this subscription appear, that the results will be recorded.
                continue
            type_name = types[0]
            try:
                schema = schema_text(type_name)
                cls = _msg_class(type_name)
            except (LookupError, ImportError, AttributeError, ValueError) as e:
                self.get_logger().warning(f"not recording {topic} ({type_name}): {e}", throttle_duration_sec=10.0)
                continue
            if type_name not in self._schemas:
                self._schemas[type_name] = self._writer.register_schema(type_name, SchemaEncoding.ROS2,
                                                                        schema.encode())
            self._channels[topic] = self._writer.register_channel(topic, MessageEncoding.CDR, self._schemas[type_name])
            qos = topic_qos(publishers)
            self._subs[topic] = self.create_subscription(
                cls, topic, lambda raw, t=topic, n=type_name: self._on_message(t, n, raw), qos, raw=True)
            self.get_logger().info(f"recording {topic} ({type_name})")

    def _on_message(self, topic: str, type_name: str, raw: bytes) -> None:
        if self._finished:
            return
        now = time.time_ns()
        self._writer.add_message(self._channels[topic], log_time=now, publish_time=now, data=raw,
                                 sequence=self.counts[topic])
        self.counts[topic] += 1
        if type_name == IMAGE_TYPE and topic.endswith("scrap_overlay") and self.p["overlay_dir"]:
            self._save_overlay(topic, raw)
        elif type_name == ARRAY_TYPE:
            msg = deserialize_message(raw, ScrapInstanceArray)
            s = self._arrays[msg.camera_name or topic]
            s["arrays"] += 1
            s["instances"] += len(msg.instances)
            s["latency_s"].append(now * 1e-9 - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))

    def _save_overlay(self, topic: str, raw: bytes) -> None:
        if self.p["max_overlays"] and self._overlays[topic] >= self.p["max_overlays"]:
            return
        msg = deserialize_message(raw, Image)
        try:
            rgb = image_to_rgb(msg)
        except ConversionError as e:
            self.get_logger().warning(f"overlay on {topic} not saved: {e}", throttle_duration_sec=5.0)
            return
        folder = Path(self.p["overlay_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_]+", "_", topic.strip("/"))
        stamp = f"{msg.header.stamp.sec}_{msg.header.stamp.nanosec:09d}"
        cv2.imwrite(str(folder / f"{name}_{stamp}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self._overlays[topic] += 1

    def summary(self) -> dict:
        cams = {}
        for cam, s in sorted(self._arrays.items()):
            lat = np.asarray(s["latency_s"], float)
            cams[cam] = {"arrays": s["arrays"], "instances": s["instances"],
                         "latency_p50_s": float(np.percentile(lat, 50)) if lat.size else None,
                         "latency_p95_s": float(np.percentile(lat, 95)) if lat.size else None}
        return {"output": str(self.output), "messages": dict(sorted(self.counts.items())),
                "overlays_saved": dict(self._overlays), "cameras": cams}

    def finish(self) -> None:
        """Closes the MCAP file and writes the summary; idempotent. ``main`` runs it where SIGINT cannot
        interrupt it (runner.spin_node): a cut-short ``writer.finish()`` leaves a file that does not open."""
        if self._finished:
            return
        self._finished = True
        try:
            if hasattr(self, "_writer"):
                self._writer.finish()
        finally:
            self._file.close()
        if self.p["summary"]:
            path = Path(self.p["summary"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.summary(), indent=2) + "\n", encoding="utf-8")
        # After a SIGINT the context is shut down already: the node's logger would print the line, then
        # an error that it cannot publish it to /rosout.
        logger = self.get_logger() if self.context.ok() else rclpy.logging.get_logger(f"{NODE_NAME}.finish")
        logger.info(f"wrote {sum(self.counts.values())} messages to {self.output}")


def main(args: Optional[list[str]] = None) -> None:
    # Not interrupted while starting either (that takes a moment): a Ctrl-C then still leaves a file that opens.
    code = spin_node(NODE_NAME, RecorderNode, (ValueError, OSError), RecorderNode.finish, args,
                     interrupt_make=False)
    exit_process(code)  # the file is closed by finish


if __name__ == "__main__":
    main()
