"""The perception node: camera images + detector boxes in, one ScrapInstanceArray per processed image out.

A managed (lifecycle) node, see PerceptionNode. Per camera ``<cam>``: subscribes ``<cam>/image_raw``
(sensor_msgs/Image, or sensor_msgs/CompressedImage on ``<cam>/image_raw/compressed`` with
``image_transport`` compressed) and ``<cam>/detections`` (vision_msgs/Detection2DArray) with the
sensor-data QoS; publishes ``<cam>/scrap_instances`` (ScrapInstanceArray) and ``<cam>/scrap_overlay``
(sensor_msgs/Image, rendered only while subscribed), reliable; ``label_info`` (vision_msgs/LabelInfo,
latched); and ``/diagnostics`` every ``diagnostics_period`` s.

The path of one frame (executor thread above the line, main thread below it):
  1. ``_on_image`` / ``_on_detections`` (subscription callbacks): ``conversions.image_to_rgb`` (or
     ``compressed_to_rgb``) / ``detections_from_cdr`` (the serialised detections, read in place; else
     ``detections_to_prompts``) turn the messages into an RGB array (a view) and Prompts; bad input is
     counted.
  2. ``StampPairer`` (pairing.py) pairs image and detections by exact ``header.stamp``.
  3. ``_submit`` hands the pair to ``InferenceWorker.submit`` (worker.py): per camera only the newest
     pending frame waits; a replaced one is counted as dropped. With ``sync.policy: sets`` the pair
     goes to ``SetSynchronizer.add`` (camera_sets.py) first, and only complete (or partial) sets are
     submitted, to one slot: the newest set waits, a replaced set is dropped whole.
  ---
  4. ``main`` runs ``InferenceWorker.run`` on the main thread (runner.spin_node spins the executor
     beside it); it takes every pending frame at once and calls ``_process_batch``.
  5. ``Pipeline.process_frames`` (pipeline.py): one encoder pass for the batch, masks per frame, all
     crops classified together.
  6. ``_publish``: ``conversions.result_to_msg`` builds the array, published per camera; the overlay
     only while someone subscribes; a set's arrays and CameraInfos also go out as one ScrapViewSet.

Run: ``python -m scrap_perception.ros.perception_node --ros-args --params-file config/scrap_perception.yaml``
"""
from __future__ import annotations

import gc
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
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from scrap_perception.msg import ScrapInstanceArray, ScrapViewSet

from ..checkpoints import CheckpointError
from ..labels import labels_from_strings
from ..pipeline import Pipeline
from . import diagnostics, params
from .camera_info import CameraInfoCache
from .camera_sets import SetSynchronizer, ViewSet
from .conversions import (ConversionError, cdr_detections_ok, compressed_to_rgb, detections_from_cdr,
                          detections_to_prompts, image_to_rgb, label_info_msg, result_to_msg, rgb_to_image, stamp_of)
from .pipeline_factory import build_pipeline, device_of
from .overlay import render_overlay
from .pairing import StampPairer
from .qos import input_qos, latched_qos, output_qos
from .runner import spin_node
from .stats import (CAMERA_INFO_MISSING, DETECTIONS_IN, DROPPED, FAILED, IMAGES_IN, INSTANCES, OVERLAYS, PAIRED,
                    PROCESSED, SETS_PUBLISHED,
                    PUBLISHED, NodeStats)
from .worker import InferenceWorker

NODE_NAME = "scrap_perception_node"
SET_SLOT = ("camera set",)  # the worker's one slot for camera sets (a key no camera name can be)
# Errors of the node's construction that mean "bad configuration": reported in one line, no traceback.
CONFIG_ERRORS = (ValueError, CheckpointError, FileNotFoundError, ImportError)


@dataclass
class _Image:
    header: Any
    rgb: np.ndarray
    arrived: float  # time.monotonic() at the image callback


@dataclass
class Job:
    """One paired frame waiting for inference; camera_info: its camera's CameraInfo (None: none yet)."""

    camera: str
    header: Any
    rgb: np.ndarray
    prompts: list
    arrived: float
    camera_info: Any = None


def frames_of(items: Sequence[Job | ViewSet]) -> list[Job]:
    """The frames of what the worker took: single frames (independent) or camera sets (sets)."""
    return [j for it in items for j in (it.frames.values() if isinstance(it, ViewSet) else (it,))]


class PerceptionNode(LifecycleNode):
    """See the module docstring. ``pipeline_factory(params) -> Pipeline`` is replaceable for tests.
    inference_thread: False (what ``main`` does) leaves running ``worker.run()`` to the caller, on the
    main thread (see InferenceWorker.run); True starts the worker in its own thread here.

    Lifecycle (rclpy.lifecycle): configure validates the parameters and loads the models (on the
    inference thread), creates the publishers and latches the LabelInfo; activate subscribes to the
    cameras; deactivate unsubscribes and lets the frames already taken finish (none is dropped);
    cleanup frees the models; shutdown does what is left of those. A configure that fails (a missing or
    wrong checkpoint) logs one line and leaves the node unconfigured: set the parameter and configure
    again. Non-dynamic parameters change only while unconfigured."""

    def __init__(self, pipeline_factory: Callable[[Mapping[str, Any]], Pipeline] = build_pipeline,
                 inference_thread: bool = False, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.p = params.declare(self, managed=True)
        self.pipeline_factory = pipeline_factory
        self.pipeline: Optional[Pipeline] = None
        self._set_cameras(self.p["camera_names"])
        self._last_warn: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._warn_lock = threading.Lock()
        self.worker: InferenceWorker[Job] = InferenceWorker(self._process_batch, self._on_drop, self._on_error)
        self.instance_pubs: dict[str, Any] = {}
        self.overlay_pubs: dict[str, Any] = {}
        self.label_pub: Any = None
        self.views_pub: Any = None
        self._activated, self._last_image = 0.0, {}
        self._camera_subs: list[Any] = []
        self.info: dict[str, Any] = {"segmenter": "", "classifier": "", "device": "", "prompt_mode": "",
                                     "segmenter.precision": "", "classifier.precision": ""}
        self.add_on_set_parameters_callback(self._check_params)
        self.add_post_set_parameters_callback(self._apply_params)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.p["diagnostics_period"], self._publish_diagnostics)
        self.create_timer(0.2, self._expire)
        if inference_thread:
            self.worker.start()

    @property
    def state(self) -> str:
        """'unconfigured', 'inactive', 'active', 'finalized' (or a transition's name while it runs)."""
        return self._state_machine.current_state[1]

    def autostart(self) -> bool:
        """Configure and activate (the ``autostart`` parameter); True when the node ended active."""
        return (self.trigger_configure() == TransitionCallbackReturn.SUCCESS
                and self.trigger_activate() == TransitionCallbackReturn.SUCCESS)

    # --- lifecycle transitions -------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            p = params.validate(params.current(self))
            pipeline = self.worker.call(lambda: self.pipeline_factory(p))
        except CONFIG_ERRORS as e:
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        self.p, self.pipeline = p, pipeline
        self._set_cameras(p["camera_names"])
        out_qos = output_qos(p["qos.output_depth"])
        self.instance_pubs = {c: self.create_publisher(ScrapInstanceArray, f"{c}/scrap_instances", out_qos)
                              for c in self.cameras}
        self.overlay_pubs = {c: self.create_publisher(Image, f"{c}/scrap_overlay", out_qos) for c in self.cameras}
        self.label_pub = self.create_publisher(LabelInfo, "label_info", latched_qos())
        if self.sets is not None:
            self.views_pub = self.create_publisher(ScrapViewSet, "scrap_views", out_qos)
        header = Header(stamp=self.get_clock().now().to_msg())
        # The id -> name map of ScrapInstance.class_id (the classifier is built from these labels).
        self.label_pub.publish(label_info_msg(labels_from_strings(p["classifier.labels"]), header,
                                              p["classifier.min_score"]))
        self.info = {"segmenter": pipeline.segmenter.name, "classifier": pipeline.classifier.name,
                     "device": device_of(pipeline), "prompt_mode": pipeline.prompt_mode,
                     # what precision 'auto' resolved to on this machine
                     "segmenter.precision": pipeline.segmenter.precision,
                     "classifier.precision": pipeline.classifier.precision}
        self.get_logger().info(f"configured: cameras {self.cameras}, segmenter {self.info['segmenter']} "
                               f"({self.info['segmenter.precision']}), classifier {self.info['classifier']} "
                               f"({self.info['classifier.precision']}), device {self.info['device']}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        in_qos = input_qos(self.p["qos.input_depth"])
        image_topics = self.p["image_topics"] or [f"{c}/image_raw" for c in self.cameras]
        det_topics = self.p["detection_topics"] or [f"{c}/detections" for c in self.cameras]
        transports = self.p["image_transport"] or ["raw"]
        if len(transports) == 1:
            transports = transports * len(self.cameras)
        for cam in self.cameras:  # sensor-data QoS matches reliable and best-effort drivers alike
            self._camera_subs.append(self.create_subscription(
                CameraInfo, self.camera_info_topics[cam], lambda m, c=cam: self._on_camera_info(c, m), in_qos))
        for cam, it, dt, tr in zip(self.cameras, image_topics, det_topics, transports):
            if tr == "compressed":
                it = f"{it}/compressed"
                sub = self.create_subscription(CompressedImage, it, lambda m, c=cam: self._on_image(c, m), in_qos)
            else:
                sub = self.create_subscription(Image, it, lambda m, c=cam: self._on_image(c, m), in_qos)
            # Serialised detections (raw) are read by detections_from_cdr: 8x cheaper than deserialising.
            self._camera_subs += [sub, self.create_subscription(
                Detection2DArray, dt, lambda m, c=cam: self._on_detections(c, m), in_qos, raw=cdr_detections_ok())]
        self._activated, self._last_image = time.monotonic(), {}
        self.get_logger().info(f"active: images from {image_topics} ({', '.join(transports)}), detections from "
                               f"{det_topics}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        if not self.worker.wait_idle(30.0):
            self.get_logger().warning("deactivate: frames still in inference after 30 s; they finish later")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in state {state.label}: unsubscribing and freeing the models")
        self._unsubscribe()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _set_cameras(self, cameras: Sequence[str]) -> None:
        self.cameras: list[str] = list(cameras)
        self.stats = NodeStats(self.cameras)
        self.pairers = {c: StampPairer(self.p["pairing.buffer_size"], self.p["pairing.max_age"])
                        for c in self.cameras}
        self._expired_seen = {c: dict(self.pairers[c].counts) for c in self.cameras}
        self.camera_infos = {c: CameraInfoCache() for c in self.cameras}
        self.camera_info_topics = dict(zip(self.cameras, self.p["camera_info_topics"]
                                           or [f"{c}/camera_info" for c in self.cameras]))
        self.sets: Optional[SetSynchronizer[Job]] = None
        if self.p["sync.policy"] == "sets":
            self.sets = SetSynchronizer(self.cameras, self.p["sync.slop"], self.p["sync.max_age"],
                                        self.p["sync.partial"])

    def _unsubscribe(self) -> None:
        for sub in self._camera_subs:
            self.destroy_subscription(sub)
        self._camera_subs = []

    def _release(self) -> None:
        """Publishers and models go; the CUDA cache is emptied so another process can have the memory."""
        for pub in [*self.instance_pubs.values(), *self.overlay_pubs.values(), self.label_pub, self.views_pub]:
            if pub is not None:
                self.destroy_publisher(pub)
        self.instance_pubs, self.overlay_pubs, self.label_pub, self.views_pub = {}, {}, None, None
        if self.pipeline is not None:
            self.pipeline = None
            gc.collect()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.info = {k: "" for k in self.info}

    # --- callbacks (executor thread): convert, pair, enqueue -------------------------------------------
    def _on_image(self, cam: str, msg: Image | CompressedImage) -> None:
        self.stats.count(cam, IMAGES_IN)
        self._last_image[cam] = time.monotonic()
        t0 = time.perf_counter()
        try:
            rgb = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
        except ConversionError as e:
            self.stats.reject(cam, e.code)
            self._warn(f"{cam}.{e.code}", f"{cam}: image at stamp {stamp_of(msg.header)} refused: {e}")
            return
        self.stats.time("convert", time.perf_counter() - t0)
        pair = self.pairers[cam].add_image(stamp_of(msg.header), _Image(msg.header, rgb, time.monotonic()))
        if pair is not None:
            self._submit(cam, *pair)

    def _on_detections(self, cam: str, msg: Detection2DArray | bytes) -> None:
        self.stats.count(cam, DETECTIONS_IN)
        parsed = None
        if isinstance(msg, bytes):  # raw: read in place; bytes in another encapsulation are deserialised
            try:
                parsed = detections_from_cdr(msg)
            except ValueError:
                msg = deserialize_message(msg, Detection2DArray)
        stamp, prompts, bad = parsed or (stamp_of(msg.header), *detections_to_prompts(msg))
        for i, e in bad:
            self.stats.reject(cam, e.code)
            self._warn(f"{cam}.{e.code}", f"{cam}: detection {i} at stamp {stamp} refused: {e}")
        pair = self.pairers[cam].add_detections(stamp, prompts)
        if pair is not None:
            self._submit(cam, *pair)

    def _on_camera_info(self, cam: str, msg: CameraInfo) -> None:
        self.camera_infos[cam].add(stamp_of(msg.header), msg)

    def _submit(self, cam: str, image: _Image, prompts: list) -> None:
        self.stats.count(cam, PAIRED)
        stamp = stamp_of(image.header)
        job = Job(cam, image.header, image.rgb, prompts, image.arrived, self.camera_infos[cam].get(stamp))
        if self.sets is None:
            self.worker.submit(cam, job)
            return
        for ready in self.sets.add(cam, stamp[0] * 1_000_000_000 + stamp[1], job):
            self.worker.submit(SET_SLOT, ready)

    def _on_drop(self, item: Job | ViewSet) -> None:
        for job in frames_of([item]):
            self.stats.count(job.camera, DROPPED)

    def _expire(self) -> None:
        if self.sets is not None:
            self.sets.max_age, self.sets.partial = self.p["sync.max_age"], self.p["sync.partial"]
            for ready in self.sets.expire():
                self.worker.submit(SET_SLOT, ready)
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
    def _process_batch(self, items: Sequence[Job | ViewSet]) -> None:
        t_batch = time.perf_counter()
        jobs = frames_of(items)
        results = self.pipeline.process_frames([(j.rgb, j.prompts) for j in jobs])
        arrays: dict[int, Any] = {}  # id(job) -> its published array, for the camera sets
        for job, res in zip(jobs, results):
            cam = job.camera
            self.stats.count(cam, PROCESSED)
            for stage, seconds in res.timings.items():
                self.stats.time(stage, seconds)
            for r in res.rejected:
                self.stats.reject(cam, r.code)
                self._warn(f"{cam}.{r.code}", f"{cam}: detection {r.index} at stamp {stamp_of(job.header)} refused: "
                                              f"{r.reason}")
            if self.worker.stopping:
                return
            try:
                arrays[id(job)] = self._publish(job, res)
            except Exception as e:  # e.g. a message field the middleware refuses: count it, keep serving
                self.stats.reject(cam, "publish_error")
                self._warn(f"{cam}.publish_error", f"{cam}: result of stamp {stamp_of(job.header)} not published: "
                                                   f"{e!r}")
        for view_set in (it for it in items if isinstance(it, ViewSet)):
            self._publish_set(view_set, arrays)
        self.stats.batch(len(jobs), time.perf_counter() - t_batch)

    def _publish_set(self, view_set: ViewSet, arrays: Mapping[int, Any]) -> None:
        """One ScrapViewSet: the set's arrays (as published per camera) and CameraInfos, in camera order."""
        msg = ScrapViewSet(partial=view_set.partial, missing_cameras=view_set.missing(self.cameras))
        msg.header.frame_id = self.p["sync.frame_id"]
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(min(view_set.stamps.values()), 1_000_000_000)
        for job in view_set.frames.values():
            if id(job) not in arrays:  # its array failed to publish (counted): the set goes without it
                msg.missing_cameras.append(job.camera)
                continue
            msg.views.append(arrays[id(job)])
            # A CameraInfo with the frame's stamp may arrive after the frame paired (another topic): look again.
            job.camera_info = self.camera_infos[job.camera].exact(stamp_of(job.header)) or job.camera_info
            if job.camera_info is None:
                self.stats.count(job.camera, CAMERA_INFO_MISSING)
                self._warn(f"{job.camera}.camera_info", f"{job.camera}: no CameraInfo received yet on "
                                                        f"{self.camera_info_topics[job.camera]}: the set carries "
                                                        "an empty one")
            msg.camera_infos.append(job.camera_info or CameraInfo())
        self.views_pub.publish(msg)
        self.stats.count_sets(SETS_PUBLISHED)

    def _publish(self, job: Job, res: Any) -> Any:
        """Publishes the frame's array (and overlay); returns the array."""
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
        return msg

    def _on_error(self, exc: Exception, items: Sequence[Job | ViewSet]) -> None:
        jobs = frames_of(items)
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
            if not spec.dynamic and self.state != "unconfigured":
                return SetParametersResult(successful=False, reason=(
                    f"{prm.name} changes only while the node is unconfigured (it is {self.state}): "
                    f"ros2 lifecycle set {self.get_fully_qualified_name()} deactivate / cleanup first"))
            try:
                spec.validate(prm.value)
            except params.ParamError as e:
                return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    def _apply_params(self, changed: list) -> None:
        """Dynamic values take effect at once; the others are read at the next configure."""
        for prm in changed:
            spec = params.SPECS.get(prm.name)
            if spec is None or not spec.dynamic:
                continue
            value = spec.validate(prm.value)
            self.p[prm.name] = value
            pipe = self.pipeline
            if pipe is not None and prm.name == "segmenter.prompt_mode":
                pipe.prompt_mode = self.info["prompt_mode"] = value
            elif pipe is not None and prm.name in ("min_mask_score", "min_area", "max_detections"):
                setattr(pipe, prm.name, value)
            elif pipe is not None and prm.name == "classifier.min_score" and hasattr(pipe.classifier, "min_score"):
                pipe.classifier.min_score = value
            elif prm.name == "pairing.max_age":
                for pairer in self.pairers.values():
                    pairer.max_age = value
            self.get_logger().info(f"parameter {prm.name} set to {value!r}")

    def _publish_diagnostics(self) -> None:
        info = dict(self.info, **{"state": self.state, "queue.pending": self.worker.pending,
                                  "worker.busy": self.worker.busy})
        self.diag_pub.publish(diagnostics.build(self.get_name(), self.get_fully_qualified_name(), self.stats,
                                                self.pairers, info, self.get_clock().now().to_msg(), self.sets,
                                                self._silent_cameras()))

    def _silent_cameras(self) -> dict[str, float]:
        """Active cameras without an image for 2 s (or twice sync.max_age): seconds since the last one."""
        if self.state != "active":
            return {}
        now, limit = time.monotonic(), max(2.0, 2 * self.p["sync.max_age"])
        ages = {c: now - self._last_image.get(c, self._activated) for c in self.cameras}
        return {c: age for c, age in ages.items() if age > limit}

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


def run_inference(node: PerceptionNode, spinning: Callable[[], bool]) -> None:
    """The main thread: autostart (models built here, where they will run), then step 4 of the module
    docstring, the inference loop, until the executor stops."""
    if node.p["autostart"] and not node.autostart():
        node.get_logger().warning(f"not active ({node.state}): fix the parameter named above with `ros2 param "
                                  f"set`, then `ros2 lifecycle set {node.get_fully_qualified_name()} configure`")
    node.worker.run(should_stop=lambda: not spinning())


def main(args: Optional[list[str]] = None) -> None:
    """Entry point of scrap_perception_node; exit code 2 for a configuration error."""
    stopped = []
    code = spin_node(NODE_NAME, PerceptionNode, CONFIG_ERRORS, lambda node: stopped.append(node.shutdown()), args,
                     main_loop=run_inference)
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
