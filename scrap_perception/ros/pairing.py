"""Pairs each camera image with its detections by exact ``header.stamp``. No ROS import here.

Detectors echo the header of the image they ran on, so an image and its detections share a stamp
exactly. Either may arrive first: the early one waits in a bounded buffer until its partner comes,
it is pushed out by newer entries (buffer full) or it gets older than ``max_age`` seconds of
arrival (wall) time. Every entry that leaves without a partner is counted by reason.
"""
from __future__ import annotations

import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Generic, Optional, TypeVar

from .stats import PAIRED

Stamp = tuple[int, int]  # (sec, nanosec) of builtin_interfaces/Time
I = TypeVar("I")  # noqa: E741  (image payload)
D = TypeVar("D")  # detections payload

# Counter keys, also used as diagnostic keys (PAIRED is the node's frame counter of the same name).
IMAGE_EXPIRED = "image_expired_without_detections"
DETECTIONS_EXPIRED = "detections_expired_without_image"
IMAGE_OVERFLOW = "image_buffer_full"
DETECTIONS_OVERFLOW = "detections_buffer_full"
DUPLICATE_IMAGE = "duplicate_image_stamp"
DUPLICATE_DETECTIONS = "duplicate_detections_stamp"
REASONS = (IMAGE_EXPIRED, DETECTIONS_EXPIRED, IMAGE_OVERFLOW, DETECTIONS_OVERFLOW,
           DUPLICATE_IMAGE, DUPLICATE_DETECTIONS)


@dataclass
class _Waiting(Generic[I]):
    item: I
    arrived: float


class StampPairer(Generic[I, D]):
    """One camera's pairing buffers.

    buffer_size: entries kept per side (images, detections); the oldest leaves when full.
    max_age: seconds an entry may wait for its partner, measured on ``clock`` (default monotonic).
    ``counts`` holds PAIRED plus one counter per reason in REASONS. Not thread-safe: call from one
    thread (the node's executor) or guard it.
    """

    def __init__(self, buffer_size: int, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, not {buffer_size}")
        if not max_age > 0:
            raise ValueError(f"max_age must be > 0 s, not {max_age}")
        self.buffer_size = int(buffer_size)
        self.max_age = float(max_age)
        self._clock = clock
        self._images: OrderedDict[Stamp, _Waiting[I]] = OrderedDict()
        self._detections: OrderedDict[Stamp, _Waiting[D]] = OrderedDict()
        self.counts: Counter[str] = Counter({k: 0 for k in (PAIRED, *REASONS)})

    def add_image(self, stamp: Stamp, image: I) -> Optional[tuple[I, D]]:
        """Returns (image, detections) when the detections of ``stamp`` were waiting, else buffers it."""
        self.expire()
        det = self._detections.pop(stamp, None)
        if det is not None:
            self.counts[PAIRED] += 1
            return image, det.item
        self._put(self._images, stamp, image, DUPLICATE_IMAGE, IMAGE_OVERFLOW)
        return None

    def add_detections(self, stamp: Stamp, detections: D) -> Optional[tuple[I, D]]:
        """Returns (image, detections) when the image of ``stamp`` was waiting, else buffers them."""
        self.expire()
        img = self._images.pop(stamp, None)
        if img is not None:
            self.counts[PAIRED] += 1
            return img.item, detections
        self._put(self._detections, stamp, detections, DUPLICATE_DETECTIONS, DETECTIONS_OVERFLOW)
        return None

    def expire(self) -> list[tuple[str, Stamp]]:
        """Drops entries older than max_age; returns (reason, stamp) of each, oldest first."""
        limit = self._clock() - self.max_age
        out = []
        for buf, reason in ((self._images, IMAGE_EXPIRED), (self._detections, DETECTIONS_EXPIRED)):
            # Arrival order is insertion order, so the old ones are at the front.
            while buf and next(iter(buf.values())).arrived < limit:
                stamp, _ = buf.popitem(last=False)
                self.counts[reason] += 1
                out.append((reason, stamp))
        return out

    @property
    def waiting(self) -> tuple[int, int]:
        """(images, detections) currently buffered."""
        return len(self._images), len(self._detections)

    def _put(self, buf: OrderedDict, stamp: Stamp, item: Any, duplicate: str, overflow: str) -> None:
        if stamp in buf:
            # A second message with the same stamp: the newer one replaces it (and the older is counted).
            del buf[stamp]
            self.counts[duplicate] += 1
        buf[stamp] = _Waiting(item, self._clock())
        while len(buf) > self.buffer_size:
            buf.popitem(last=False)
            self.counts[overflow] += 1
