"""Rigid transforms as 4x4 matrices and a tree of named frames (what tf2 keeps), without ROS.

Conventions: ``T_a_b`` (4x4, homogeneous, metres) is the pose of frame b in frame a, p_a = T_a_b p_b:
what a geometry_msgs/TransformStamped with ``header.frame_id`` a and ``child_frame_id`` b carries.
Quaternions are (x, y, z, w), Hamilton convention, as geometry_msgs/Quaternion.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def quaternion_to_rotation(q: Sequence[float]) -> np.ndarray:
    """(x, y, z, w) -> (3, 3) rotation matrix; the quaternion is normalised first. ValueError for a
    zero-length or non-finite one."""
    q = np.asarray(q, float).reshape(4)
    n = np.linalg.norm(q)
    if not np.all(np.isfinite(q)) or n < 1e-9:
        raise ValueError(f"quaternion {q.tolist()} is not a rotation (zero length or not finite)")
    x, y, z, w = q / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (x, y, z, w) unit quaternion with w >= 0."""
    R = np.asarray(R, float)
    # From the largest of the four squared components (stable near 180-degree rotations).
    sq = np.array([1 + R[0, 0] - R[1, 1] - R[2, 2], 1 - R[0, 0] + R[1, 1] - R[2, 2],
                   1 - R[0, 0] - R[1, 1] + R[2, 2], 1 + R[0, 0] + R[1, 1] + R[2, 2]])
    k = int(np.argmax(sq))
    s = 2 * np.sqrt(max(sq[k], 1e-300))
    if k == 0:
        q = [s / 4, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s]
    elif k == 1:
        q = [(R[0, 1] + R[1, 0]) / s, s / 4, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s]
    elif k == 2:
        q = [(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, s / 4, (R[1, 0] - R[0, 1]) / s]
    else:
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, s / 4]
    q = np.asarray(q) / np.linalg.norm(q)
    return -q if q[3] < 0 else q


def transform_matrix(translation: Sequence[float], quaternion: Sequence[float]) -> np.ndarray:
    """(4, 4) T_a_b from b's origin in a (x, y, z) and b's orientation in a (x, y, z, w)."""
    t = np.asarray(translation, float).reshape(3)
    if not np.all(np.isfinite(t)):
        raise ValueError(f"translation {t.tolist()} is not finite")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation(quaternion)
    T[:3, 3] = t
    return T


def matrix_to_transform(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(4, 4) rigid T_a_b -> (translation (3,), quaternion (x, y, z, w)): the inverse of transform_matrix."""
    T = np.asarray(T, float)
    return T[:3, 3].copy(), rotation_to_quaternion(T[:3, :3])


def invert(T: np.ndarray) -> np.ndarray:
    """T_a_b -> T_b_a for a rigid 4x4 transform."""
    T = np.asarray(T, float)
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


class FrameTree:
    """Named frames, each child with one parent (as in tf2), joined by T_parent_child. Setting a child
    again replaces its edge (a static transform stays, a dynamic one is kept at its latest value).
    ``lookup`` composes the chain through the frames' lowest common ancestor."""

    def __init__(self) -> None:
        self._parent: dict[str, tuple[str, np.ndarray]] = {}

    @property
    def frames(self) -> set[str]:
        """Every frame named by an edge."""
        return set(self._parent) | {p for p, _ in self._parent.values()}

    def set(self, parent: str, child: str, T_parent_child: np.ndarray) -> None:
        """Adds or replaces child's edge; ValueError for empty names or a frame its own parent."""
        if not parent or not child:
            raise ValueError(f"frame names must not be empty (parent {parent!r}, child {child!r})")
        if parent == child:
            raise ValueError(f"frame {child!r} cannot be its own parent")
        self._parent[child] = (parent, np.asarray(T_parent_child, float))

    def _ancestors(self, frame: str) -> dict[str, np.ndarray]:
        """{ancestor: T_ancestor_frame} from the frame itself (identity) up to its root, in order."""
        out = {frame: np.eye(4)}
        T, f = np.eye(4), frame
        while f in self._parent:
            f, T_p = self._parent[f][0], self._parent[f][1]
            if f in out:
                raise LookupError(f"the frames above {frame!r} form a loop through {f!r}")
            T = T_p @ T
            out[f] = T
        return out

    def lookup(self, target: str, source: str) -> np.ndarray:
        """T_target_source (the pose of source in target); LookupError naming what is missing."""
        if target == source:
            return np.eye(4)
        known = self.frames
        unknown = [f for f in (target, source) if f not in known]
        if unknown:
            raise LookupError("unknown frame " + ", ".join(repr(f) for f in unknown))
        up_source, up_target = self._ancestors(source), self._ancestors(target)
        common = next((f for f in up_source if f in up_target), None)
        if common is None:
            raise LookupError(f"frames {target!r} and {source!r} are not connected (their roots are "
                              f"{list(up_target)[-1]!r} and {list(up_source)[-1]!r})")
        return invert(up_target[common]) @ up_source[common]
