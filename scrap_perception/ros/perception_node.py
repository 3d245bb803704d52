"""The perception node: camera images + detector boxes in, one ScrapInstanceArray per processed image out.

Per camera ``<cam>``: subscribes ``<cam>/image_raw`` (sensor_msgs/Image) and ``<cam>/detections``
(vision_msgs/Detection2DArray) with the sensor-data QoS; publishes ``<cam>/scrap_instances``
(ScrapInstanceArray) and ``<cam>/scrap_overlay`` (sensor_msgs/Image, rendered only while subscribed),
reliable; and ``/diagnostics`` every ``diagnostics_period`` s. Subscription callbacks only convert and
pair (pairing.StampPairer); the inference loop (worker.InferenceWorker) runs the pipeline on the main
thread (``main``), the executor beside it.

Run: ``python -m scrap_perception.ros.perception_node --ros-args --params-file config/scrap_perception.yaml``
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from scrap_perception.msg import ScrapInstanceArray

from ..checkpoints import CheckpointError
from ..pipeline import Pipeline
from . import diagnostics, params
from .conversions import (ConversionError, detections_to_prompts, image_to_rgb, rejection_code, result_to_msg,
                          rgb_to_image, stamp_of)
from .models import build_pipeline, device_of
from .overlay import render_overlay
from .pairing import StampPairer
from .qos import input_qos, output_qos
from .runner import spin_node
from .stats import (DETECTIONS_IN, DROPPED, FAILED, IMAGES_IN, INSTANCES, OVERLAYS, PAIRED, PROCESSED,
                    PUBLISHED, NodeStats)
from .worker import InferenceWorker

NODE_NAME = "scrap_perception_node"
# Errors of the node's construction that mean "bad configuration": reported in one line, no traceback.
CONFIG_ERRORS = (ValueError, CheckpointError, FileNotFoundError, ImportError)


@dataclass
class _Image:
    header: Any
    rgb: np.ndarray
    arrived: float  # time.monotonic() at the image callback


@dataclass
class Job:
    """One paired frame waiting for inference."""

    camera: str
    header: Any
    rgb: np.ndarray
    prompts: list
    arrived: float


class PerceptionNode(Node):
    """See the module docstring. ``pipeline_factory(params) -> Pipeline`` is replaceable for tests.
    inference_thread: run inference in the worker's own thread (started here); False leaves it to the
    caller to run ``worker.run()``, as ``main`` does on the main thread (see InferenceWorker.run)."""

    def __init__(self, pipeline_factory: Callable[[Mapping[str, Any]], Pipeline] = build_pipeline,
                 inference_thread: bool = True, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.p = params.declare(self)
        self.pipeline = pipeline_factory(self.p)
        self.cameras: list[str] = list(self.p["camera_names"])
        self.stats = NodeStats(self.cameras)
        self._last_warn: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._warn_lock = threading.Lock()
        self.pairers = {c: StampPairer(self.p["pairing.buffer_size"], self.p["pairing.max_age"])
                        for c in self.cameras}
        self._expired_seen = {c: dict(self.pairers[c].counts) for c in self.cameras}
        self.worker: InferenceWorker[Job] = InferenceWorker(self._process_batch, self._on_drop, self._on_error)
        self.add_on_set_parameters_callback(self._check_params)
        self.add_post_set_parameters_callback(self._apply_params)

        in_qos, out_qos = input_qos(self.p["qos.input_depth"]), output_qos(self.p["qos.output_depth"])
        image_topics = self.p["image_topics"] or [f"{c}/image_raw" for c in self.cameras]
        det_topics = self.p["detection_topics"] or [f"{c}/detections" for c in self.cameras]
        self.instance_pubs = {c: self.create_publisher(ScrapInstanceArray, f"{c}/scrap_instances", out_qos)
                              for c in self.cameras}
        self.overlay_pubs = {c: self.create_publisher(Image, f"{c}/scrap_overlay", out_qos) for c in self.cameras}
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.info = {"segmenter": self.pipeline.segmenter.name, "classifier": self.pipeline.classifier.name,
                     "device": device_of(self.pipeline), "prompt_mode": self.pipeline.prompt_mode}
        if inference_thread:
            self.worker.start()
        # Subscribing last: a publisher that sees the subscription knows the models are loaded.
        for cam, it, dt in zip(self.cameras, image_topics, det_topics):
            self.create_subscription(Image, it, lambda m, c=cam: self._on_image(c, m), in_qos)
            self.create_subscription(Detection2DArray, dt, lambda m, c=cam: self._on_detections(c, m), in_qos)
        self.create_timer(self.p["diagnostics_period"], self._publish_diagnostics)
        self.create_timer(0.2, self._expire)
        self.get_logger().info(
            f"ready: cameras {self.cameras}, segmenter {self.info['segmenter']}, classifier "
            f"{self.info['classifier']}, device {self.info['device']}; images from {image_topics}, "
            f"detections from {det_topics}")

    # --- callbacks (executor thread): convert, pair, enqueue -------------------------------------------
    def _on_image(self, cam: str, msg: Image) -> None:
        self.stats.count(cam, IMAGES_IN)
        t0 = time.perf_counter()
        try:
            rgb = image_to_rgb(msg)
        except ConversionError as e:
            self.stats.reject(cam, e.code)
            self._warn(f"{cam}.{e.code}", f"{cam}: image at stamp {stamp_of(msg.header)} refused: {e}")
            return
        self.stats.time("decode", time.perf_counter() - t0)
        pair = self.pairers[cam].add_image(stamp_of(msg.header), _Image(msg.header, rgb, time.monotonic()))
        if pair is not None:
            self._submit(cam, *pair)

    def _on_detections(self, cam: str, msg: Detection2DArray) -> None:
        self.stats.count(cam, DETECTIONS_IN)
        prompts, bad = detections_to_prompts(msg)
        for i, e in bad:
            self.stats.reject(cam, e.code)
            self._warn(f"{cam}.{e.code}", f"{cam}: detection {i} at stamp {stamp_of(msg.header)} refused: {e}")
        pair = self.pairers[cam].add_detections(stamp_of(msg.header), prompts)
        if pair is not None:
            self._submit(cam, *pair)

    def _submit(self, cam: str, image: _Image, prompts: list) -> None:
        self.stats.count(cam, PAIRED)
        self.worker.submit(cam, Job(cam, image.header, image.rgb, prompts, image.arrived))

    def _on_drop(self, job: Job) -> None:
        self.stats.count(job.camera, DROPPED)

    def _expire(self) -> None:
        for cam, pairer in self.pairers.items():
            pairer.expire()
            seen = self._expired_seen[cam]
            for reason, n in pairer.counts.items():
                if reason != "paired" and n > seen.get(reason, 0):
                    self._warn(f"{cam}.{reason}", f"{cam}: {n - seen.get(reason, 0)} more {reason.replace('_', ' ')} "
                                                  f"(pairing by exact header.stamp, max_age "
                                                  f"{pairer.max_age} s, buffer {pairer.buffer_size}); {n} in all")
                seen[reason] = n

    # --- worker thread -------------------------------------------------------------------------------
    def _process_batch(self, jobs: Sequence[Job]) -> None:
        t_batch = time.perf_counter()
        results = self.pipeline.process_frames([(j.rgb, j.prompts) for j in jobs])
        for job, res in zip(jobs, results):
            cam = job.camera
            self.stats.count(cam, PROCESSED)
            for stage, key in (("encode", "encode"), ("prompt_decode", "decode"), ("classify", "classify")):
                if key in res.timings:
                    self.stats.time(stage, res.timings[key])
            for i, reason in res.rejected:
                code = rejection_code(reason)
                self.stats.reject(cam, code)
                self._warn(f"{cam}.{code}", f"{cam}: detection {i} at stamp {stamp_of(job.header)} refused: {reason}")
            if self.worker.stopping:
                return
            try:
                self._publish(job, res)
            except Exception as e:  # e.g. a message field the middleware refuses: count it, keep serving
                self.stats.reject(cam, "publish_error")
                self._warn(f"{cam}.publish_error", f"{cam}: result of stamp {stamp_of(job.header)} not published: "
                                                   f"{e!r}")
        self.stats.batch(len(jobs), time.perf_counter() - t_batch)

    def _publish(self, job: Job, res: Any) -> None:
        cam, t0 = job.camera, time.perf_counter()
        msg = result_to_msg(res, job.header, cam, job.rgb.shape[:2], self.info["segmenter"],
                            self.pipeline.classifier, self.p["publish_embeddings"])
        self.instance_pubs[cam].publish(msg)
        self.stats.count(cam, PUBLISHED)
        self.stats.count(cam, INSTANCES, len(res.instances))
        if self.p["publish_overlay"] and self.overlay_pubs[cam].get_subscription_count() > 0:
            overlay = render_overlay(job.rgb, res.instances, self.p["overlay.alpha"])
            self.overlay_pubs[cam].publish(rgb_to_image(overlay, job.header))
            self.stats.count(cam, OVERLAYS)
        self.stats.time("publish", time.perf_counter() - t0)
        self.stats.time("total", time.monotonic() - job.arrived)

    def _on_error(self, exc: Exception, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self.stats.count(job.camera, FAILED)
        self._warn("pipeline_error", f"inference failed on {len(jobs)} frame(s) "
                                     f"({', '.join(j.camera for j in jobs)}): {exc!r}")
        self.get_logger().debug("".join(traceback.format_exception(exc)))

    # --- parameters, diagnostics, logging ------------------------------------------------------------
    def _check_params(self, changed: list) -> SetParametersResult:
        for prm in changed:
            spec = params.SPECS.get(prm.name)
            if spec is None:
                continue
            try:
                spec.validate(prm.value)
            except params.ParamError as e:
                return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    def _apply_params(self, changed: list) -> None:
        for prm in changed:
            if prm.name not in params.SPECS:
                continue
            value = params.SPECS[prm.name].validate(prm.value)
            self.p[prm.name] = value
            if prm.name == "segmenter.prompt_mode":
                self.pipeline.prompt_mode = self.info["prompt_mode"] = value
            elif prm.name in ("min_mask_score", "min_area"):
                setattr(self.pipeline, prm.name, value)
            elif prm.name == "classifier.min_score" and hasattr(self.pipeline.classifier, "min_score"):
                self.pipeline.classifier.min_score = value
            elif prm.name == "pairing.max_age":
                for pairer in self.pairers.values():
                    pairer.max_age = value
            self.get_logger().info(f"parameter {prm.name} set to {value!r}")

    def _publish_diagnostics(self) -> None:
        info = dict(self.info, **{"queue.pending": self.worker.pending, "worker.busy": self.worker.busy})
        self.diag_pub.publish(diagnostics.build(self.get_name(), self.get_fully_qualified_name(), self.stats,
                                                self.pairers, info, self.get_clock().now().to_msg()))

    def _warn(self, key: str, text: str) -> None:
        """One warning per ``key`` per log_throttle seconds; the ones held back are counted in the next."""
        now = time.monotonic()
        with self._warn_lock:
            if now - self._last_warn.get(key, -1e9) < self.p["log_throttle"]:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last_warn[key] = now
            held = self._suppressed.pop(key, 0)
        self.get_logger().warning(text + (f" ({held} similar messages held back)" if held else ""))

    def shutdown(self, timeout: float = 1.5) -> bool:
        """Stops the worker; True when it ended in time."""
        return self.worker.stop(timeout)


def main(args: Optional[list[str]] = None) -> None:
    """Entry point of scrap_perception_node; exit code 2 for a configuration error."""
    stopped = []
    code = spin_node(NODE_NAME, lambda: PerceptionNode(inference_thread=False), CONFIG_ERRORS,
                     lambda node: stopped.append(node.shutdown()), args,
                     main_loop=lambda node, spinning: node.worker.run(lambda: not spinning()))
    if not all(stopped):
        rclpy.logging.get_logger(NODE_NAME).info("inference still running at exit: not waiting for it")
    # Everything is released above. Skipping the interpreter's finalization saves ~2 s of unloading the
    # (CUDA) torch libraries, which would break the 2 s shutdown budget; and no frame is left mid-publish.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
