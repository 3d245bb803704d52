"""Object ids kept over consecutive camera sets: gated nearest neighbour in 3D, constant velocity.

Each track holds a position and a velocity (world frame, m and m/s) filtered by an alpha-beta filter.
At a new set every track is predicted to the set's stamp (x + v dt); the Hungarian algorithm assigns
tracks to the set's objects minimising the total distance among pairs closer than ``gate`` metres (a
pair farther apart is never matched); a matched track takes the object's id, an unmatched object opens
a new track with a new id, and a track unmatched for more than ``max_missed`` consecutive sets is
dropped. A piece on a conveyor thus keeps its id while the prediction brings its track within the gate;
``initial_velocity`` (the belt's velocity, when known) lets a track's second set be predicted too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class TrackerConfig:
    """gate: largest distance (m) between a predicted track and an object it takes; max_missed: sets a
    track may go unmatched and survive; alpha, beta: position and velocity gains of the filter;
    initial_velocity: (3,) m/s of a new track."""

    gate: float = 0.5
    max_missed: int = 3
    alpha: float = 0.8
    beta: float = 0.5
    initial_velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class Track:
    """id; position, velocity: (3,) world m, m/s at ``stamp`` (s); missed: consecutive sets unmatched;
    hits: sets matched (the first included)."""

    id: int
    position: np.ndarray
    velocity: np.ndarray
    stamp: float
    missed: int = 0
    hits: int = 1

    def predict(self, stamp: float) -> np.ndarray:
        """(3,) position expected at ``stamp``."""
        return self.position + self.velocity * (stamp - self.stamp)


@dataclass
class Tracker:
    """Assigns stable integer ids (1, 2, ...) to the objects of consecutive sets (``update``)."""

    config: TrackerConfig = field(default_factory=TrackerConfig)
    tracks: list[Track] = field(default_factory=list)
    next_id: int = 1

    def update(self, positions: np.ndarray, stamp: float) -> list[int]:
        """The id of each object of one set: ``positions`` (N, 3) world m at ``stamp`` (s, increasing)."""
        pos = np.asarray(positions, float).reshape(-1, 3)
        cfg = self.config
        ids: list[Optional[int]] = [None] * len(pos)
        matched = set()
        if self.tracks and len(pos):
            pred = np.stack([t.predict(stamp) for t in self.tracks])
            dist = np.linalg.norm(pred[:, None] - pos[None], axis=2)
            big = cfg.gate * 1e3 + dist.max()
            rows, cols = linear_sum_assignment(np.where(dist <= cfg.gate, dist, big))
            for r, c in zip(rows, cols):
                if dist[r, c] <= cfg.gate:
                    self._correct(self.tracks[r], pos[c], stamp)
                    ids[c] = self.tracks[r].id
                    matched.add(r)
        for k, t in enumerate(self.tracks):
            if k not in matched:
                t.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= cfg.max_missed]
        for c in range(len(pos)):
            if ids[c] is None:
                ids[c] = self.next_id
                self.tracks.append(Track(self.next_id, pos[c].copy(), np.asarray(cfg.initial_velocity, float), stamp))
                self.next_id += 1
        return [int(i) for i in ids]

    def _correct(self, t: Track, z: np.ndarray, stamp: float) -> None:
        dt = stamp - t.stamp
        pred = t.predict(stamp)
        r = z - pred
        t.position = pred + self.config.alpha * r
        if dt > 0:
            t.velocity = t.velocity + self.config.beta * r / dt
        t.stamp, t.missed, t.hits = stamp, 0, t.hits + 1
