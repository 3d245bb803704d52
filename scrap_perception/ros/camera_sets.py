"""Groups the paired frames of several cameras into synchronized sets by stamp. No ROS import here.

A set holds at most one frame per camera whose stamps lie within ``slop`` of the set's stamp (its first
frame's): ``slop`` 0 is exact equality (hardware-triggered cameras), else like message_filters'
ApproximateTime, but every frame that does not end in a processed set is counted with its reason. A
set is complete when every camera has a frame in it. The newest complete set wins: when one
completes, the open sets older than it can no longer be processed and expire. An incomplete set
expires ``max_age`` seconds (arrival time) after its first frame came; with ``partial`` it is handed on
marked partial instead, if it holds any frame. A frame no newer than the last set handed on (plus
slop) is late.
Stamps are integer nanoseconds, so exact matching is exact.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

F = TypeVar("F")  # one camera's frame payload

# Per-camera counter keys (also diagnostic keys).
EXPIRED = "expired"  # a paired frame that ended in no processed set (its set expired, or it came late)
MISSING = "missing"  # sets that expired or went on partial without this camera
# Set counter keys.
SETS_COMPLETE = "complete"
SETS_PARTIAL = "partial"
SETS_EXPIRED = "expired"
SETS_SUPERSEDED = "superseded"  # expired because a newer set completed first
LATE = "late"  # frames older than the last set handed on


@dataclass
class ViewSet(Generic[F]):
    """One moment seen by the cameras. stamp: ns, the first frame's; frames: camera -> frame, in the
    synchronizer's camera order; opened: monotonic seconds when its first frame came."""

    stamp: int
    opened: float
    frames: dict[str, F] = field(default_factory=dict)
    stamps: dict[str, int] = field(default_factory=dict)
    partial: bool = False

    def missing(self, cameras: Sequence[str]) -> list[str]:
        return [c for c in cameras if c not in self.frames]


class SetSynchronizer(Generic[F]):
    """cameras: every camera of the rig; slop: seconds; max_age: seconds an incomplete set waits;
    partial: hand on expired sets that hold a frame, marked partial. ``add`` and ``expire`` return the
    sets ready for inference (complete, or partial), oldest first. Not thread-safe: call from one thread
    (the executor's). counts: per camera Counter (EXPIRED, MISSING, LATE); set_counts: Counter of sets."""

    def __init__(self, cameras: Sequence[str], slop: float, max_age: float, partial: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if slop < 0 or max_age <= 0:
            raise ValueError(f"slop must be >= 0 and max_age > 0, not {slop}, {max_age}")
        self.cameras = list(cameras)
        self.slop_ns = int(round(slop * 1e9))
        self.max_age = max_age
        self.partial = partial
        self.clock = clock
        self.open: list[ViewSet[F]] = []  # by stamp
        self.last_out: int | None = None
        self.counts: dict[str, Counter[str]] = {c: Counter({EXPIRED: 0, MISSING: 0, LATE: 0}) for c in cameras}
        self.set_counts: Counter[str] = Counter(
            {k: 0 for k in (SETS_COMPLETE, SETS_PARTIAL, SETS_EXPIRED, SETS_SUPERSEDED)})

    @property
    def waiting(self) -> dict[str, int]:
        """Frames per camera in open sets."""
        return {c: sum(c in s.frames for s in self.open) for c in self.cameras}

    def add(self, camera: str, stamp_ns: int, frame: F) -> list[ViewSet[F]]:
        """One paired frame of ``camera``; returns the sets it made ready (complete: at most one)."""
        if camera not in self.counts:
            raise KeyError(f"unknown camera {camera!r}; cameras are {self.cameras}")
        # Within slop of the last set handed on (or older): its moment is gone.
        if self.last_out is not None and stamp_ns <= self.last_out + self.slop_ns:
            self.counts[camera][LATE] += 1
            self.counts[camera][EXPIRED] += 1
            return []
        fits = [s for s in self.open if camera not in s.frames and abs(stamp_ns - s.stamp) <= self.slop_ns]
        if fits:
            target = min(fits, key=lambda s: (abs(stamp_ns - s.stamp), s.stamp))
        else:
            target = ViewSet(stamp_ns, self.clock())
            self.open.append(target)
            self.open.sort(key=lambda s: s.stamp)
        target.frames[camera] = frame
        target.stamps[camera] = stamp_ns
        if len(target.frames) < len(self.cameras):
            return []
        self.set_counts[SETS_COMPLETE] += 1
        for older in [s for s in self.open if s.stamp < target.stamp]:
            self._close(older, SETS_SUPERSEDED)
        self.open.remove(target)
        return [self._hand_on(target)]

    def expire(self) -> list[ViewSet[F]]:
        """Closes the incomplete sets older than max_age; returns those handed on partial."""
        now = self.clock()
        ready = []
        for s in [s for s in self.open if now - s.opened > self.max_age]:
            self.open.remove(s)
            if self.partial and s.frames:
                for cam in s.missing(self.cameras):
                    self.counts[cam][MISSING] += 1
                s.partial = True
                self.set_counts[SETS_PARTIAL] += 1
                ready.append(self._hand_on(s))
            else:
                self._close(s, SETS_EXPIRED)
        return ready

    def _hand_on(self, s: ViewSet[F]) -> ViewSet[F]:
        s.frames = {c: s.frames[c] for c in self.cameras if c in s.frames}
        self.last_out = s.stamp if self.last_out is None else max(self.last_out, s.stamp)
        return s

    def _close(self, s: ViewSet[F], reason: str) -> None:
        if s in self.open:
            self.open.remove(s)
        self.set_counts[reason] += 1
        for cam in self.cameras:
            self.counts[cam][EXPIRED if cam in s.frames else MISSING] += 1
