"""Counters and latency percentiles the node reports in /diagnostics. Thread-safe, no ROS import.

Stages (seconds, per frame): ``convert`` image message -> RGB array, ``encode`` image encoder (a batch's
time divided by its frames), ``mask_decode`` mask decoder for all prompts of a frame, ``classify``
CN-CLIP, ``publish`` message building and publishing, ``total`` image arrival -> array published;
and ``batch``: seconds the worker spent on one batch (frames of several cameras), per batch.
"""
from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Iterable

import numpy as np

STAGES = ("convert", "encode", "mask_decode", "classify", "publish", "total", "batch")

# Per-camera frame counters (keys of CameraCounts); rejections are kept apart with their reason.
IMAGES_IN = "images_in"
DETECTIONS_IN = "detections_in"
PAIRED = "paired"
DROPPED = "dropped"  # replaced by a newer frame of the camera before inference took it
PROCESSED = "processed"  # went through the pipeline
PUBLISHED = "published"  # ScrapInstanceArray published
FAILED = "failed"  # the pipeline raised on the frame
INSTANCES = "instances"
OVERLAYS = "overlays"
CAMERA_INFO_MISSING = "camera_info_missing"  # frames that went into a camera set without a CameraInfo
FRAME_COUNTERS = (IMAGES_IN, DETECTIONS_IN, PAIRED, DROPPED, PROCESSED, PUBLISHED, FAILED, INSTANCES, OVERLAYS,
                  CAMERA_INFO_MISSING)
# Camera-set counters (sync.policy sets).
SETS_PUBLISHED = "published"


class LatencyWindow:
    """The last ``size`` samples of one stage; percentiles in seconds."""

    def __init__(self, size: int = 512) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self.count = 0

    def add(self, seconds: float) -> None:
        self._samples.append(float(seconds))
        self.count += 1

    def percentiles(self, qs: Iterable[float] = (50, 95, 100)) -> list[float]:
        """Percentiles of the window (numpy 'linear'); NaN for an empty window."""
        if not self._samples:
            return [float("nan") for _ in qs]
        return [float(v) for v in np.percentile(np.fromiter(self._samples, float), list(qs))]


class NodeStats:
    """Everything the diagnostics report: per-stage latency, and per camera frame counters plus
    rejections (``reject``) and expiries keyed by reason."""

    def __init__(self, cameras: Iterable[str], window: int = 512) -> None:
        self._lock = threading.Lock()
        self.cameras = tuple(cameras)
        self._latency = {s: LatencyWindow(window) for s in STAGES}
        self._frames = {c: Counter({k: 0 for k in FRAME_COUNTERS}) for c in self.cameras}
        self._rejected: dict[str, Counter[str]] = {c: Counter() for c in self.cameras}
        self._batch_sizes: deque[int] = deque(maxlen=window)
        self._sets: Counter[str] = Counter({SETS_PUBLISHED: 0})

    def time(self, stage: str, seconds: float) -> None:
        if stage not in self._latency:
            raise KeyError(f"unknown stage {stage!r}; stages are {STAGES}")
        with self._lock:
            self._latency[stage].add(seconds)

    def batch(self, size: int, seconds: float) -> None:
        """One batch of ``size`` frames took ``seconds`` in the worker."""
        with self._lock:
            self._batch_sizes.append(size)
            self._latency["batch"].add(seconds)

    def batch_sizes(self) -> tuple[float, int]:
        """(mean, max) frames per batch over the window; (nan, 0) before the first batch."""
        with self._lock:
            if not self._batch_sizes:
                return float("nan"), 0
            return float(np.mean(self._batch_sizes)), int(max(self._batch_sizes))

    def count(self, camera: str, key: str, n: int = 1) -> None:
        with self._lock:
            self._frames[camera][key] += n

    def count_sets(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._sets[key] += n

    def sets(self) -> dict[str, int]:
        with self._lock:
            return dict(self._sets)

    def reject(self, camera: str, reason: str, n: int = 1) -> None:
        """Counts ``n`` inputs of ``camera`` refused for ``reason`` (a short snake_case key)."""
        with self._lock:
            self._rejected[camera][reason] += n

    def latency(self) -> dict[str, tuple[float, float, float, int]]:
        """stage -> (p50 s, p95 s, max s, samples seen)."""
        with self._lock:
            return {s: (*w.percentiles(), w.count) for s, w in self._latency.items()}

    def frames(self, camera: str) -> dict[str, int]:
        with self._lock:
            return dict(self._frames[camera])

    def rejected(self, camera: str) -> dict[str, int]:
        with self._lock:
            return dict(self._rejected[camera])
