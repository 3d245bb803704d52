"""Two-view geometry of the rig's cameras, and the epipolar consistency of two masks.

Frames as in ``rig``: world z up, cameras are ROS optical frames, pixels with the origin at the top-left
corner of the top-left pixel. ``fundamental(a, b)`` maps undistorted pixels of ``a`` to epipolar lines of
``b``: x_b^T F x_a = 0.

Mask consistency uses the pencil of epipolar planes of a camera pair: every plane through the baseline
c_a -> c_b, parameterised by its angle theta about the baseline (0 = the half-plane pointing down,
towards the floor). A pixel of either camera lies on exactly one half-plane (the one holding its ray),
and the two pixels of one world point lie on the same one, so each mask maps to a set of angles and two
masks of one solid (both fully visible) map to the same set. ``consistency`` returns, for masks A and B,
the fraction of A's pixels whose epipolar line in B passes through B (their angle is within the
tolerance of one of B's) and the same from B to A: a test of the whole masks, not only their centroids.
The tolerance is a pixel distance, turned into an angle with the local rate d theta / d pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .rig import Camera
from .views import Detection


def undistort(camera: Camera, pixels: np.ndarray) -> np.ndarray:
    """(N, 2) raw image pixels -> (N, 2) pixels of the ideal pinhole camera (K, no distortion)."""
    px = np.asarray(pixels, float).reshape(-1, 2)
    if not np.any(camera.dist) or len(px) == 0:
        return px
    out = cv2.undistortPoints(px.reshape(-1, 1, 2), camera.K, camera.dist, P=camera.K)
    return out.reshape(-1, 2)


def _skew(t: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])


def fundamental(a: Camera, b: Camera) -> np.ndarray:
    """(3, 3) F with x_b^T F x_a = 0 for undistorted homogeneous pixels x_a of ``a``, x_b of ``b``."""
    R = b.R @ a.R.T  # a's camera frame -> b's
    t = b.R @ (a.centre - b.centre)  # a's centre in b's frame
    F = np.linalg.inv(b.K).T @ _skew(t) @ R @ np.linalg.inv(a.K)
    return F / np.linalg.norm(F)


@dataclass(frozen=True)
class EpipolarPencil:
    """The planes through the baseline of cameras a and b (world frame). axis: (3,) unit baseline
    a -> b; down, side: (3,) unit vectors completing (axis, down, side) to a right-handed frame, ``down``
    the component of world -z normal to the baseline."""

    axis: np.ndarray
    down: np.ndarray
    side: np.ndarray

    @classmethod
    def of(cls, a: Camera, b: Camera) -> "EpipolarPencil":
        base = b.centre - a.centre
        if np.linalg.norm(base) < 1e-9:
            raise ValueError(f"cameras {a.name!r} and {b.name!r} share a centre: no epipolar geometry")
        axis = base / np.linalg.norm(base)
        down = np.array([0.0, 0.0, -1.0]) - axis * -axis[2]
        if np.linalg.norm(down) < 1e-6:  # a vertical baseline: any normal direction
            down = np.cross(axis, [1.0, 0.0, 0.0])
        down /= np.linalg.norm(down)
        return cls(axis, down, np.cross(axis, down))

    def theta(self, rays: np.ndarray) -> np.ndarray:
        """(..., 3) world directions from either camera centre -> (...) angle of their half-plane."""
        return np.arctan2(rays @ self.side, rays @ self.down)

    def angles(self, camera: Camera, pixels: np.ndarray) -> np.ndarray:
        """(N, 2) undistorted pixels of ``camera`` (a or b) -> (N,) angle of their epipolar half-plane."""
        return self.theta(camera.rays(pixels))


def _wrap(a: np.ndarray) -> np.ndarray:
    """Angles to (-pi, pi]."""
    return np.pi - np.mod(np.pi - a, 2 * np.pi)


#: sampled pixels of a mask at which d theta / d pixel is measured
RATE_SAMPLES = 64


@dataclass(frozen=True)
class MaskRays:
    """A mask's sampled pixels as world rays, computed once per detection for all its camera pairs.
    rays: (N, 3) unit world directions through the sampled (undistorted) pixel centres; probes: (3, M, 3)
    for M <= RATE_SAMPLES of those pixels the rays through them, through the pixel one to the right and
    the one below; stride: sampling step (px)."""

    rays: np.ndarray
    probes: np.ndarray
    stride: int

    @classmethod
    def of(cls, camera: Camera, det: Detection, max_points: int) -> "MaskRays":
        px, stride = det.pixels(max_points)
        px = undistort(camera, px)
        sub = px[np.linspace(0, len(px) - 1, min(len(px), RATE_SAMPLES)).astype(int)]
        probes = camera.rays(np.concatenate([sub, sub + [1.0, 0.0], sub + [0.0, 1.0]])).reshape(3, -1, 3)
        return cls(camera.rays(px), probes, stride)


@dataclass(frozen=True)
class MaskAngles:
    """A mask seen through a pencil. theta: (N,) sorted angles of its sampled pixels; centre: circular
    mean angle; half_width: largest angular distance of a pixel from centre; rate: median radians per
    pixel; stride: sampling step of the pixels (px)."""

    theta: np.ndarray
    centre: float
    half_width: float
    rate: float
    stride: int

    @classmethod
    def of(cls, pencil: EpipolarPencil, mask: MaskRays) -> "MaskAngles":
        theta = np.sort(pencil.theta(mask.rays))
        centre = float(np.angle(np.exp(1j * theta).mean()))
        half = float(np.abs(_wrap(theta - centre)).max())
        t0, tx, ty = pencil.theta(mask.probes)
        rate = float(np.median(np.hypot(_wrap(tx - t0), _wrap(ty - t0))))
        return cls(theta, centre, half, rate, mask.stride)


def _hit_fraction(query: np.ndarray, ref: np.ndarray, tol: float) -> float:
    """Fraction of ``query`` angles within ``tol`` (circularly) of one of the sorted ``ref`` angles."""
    idx = np.searchsorted(ref, query)
    n = len(ref)
    near = np.minimum(np.abs(_wrap(query - ref[idx % n])), np.abs(_wrap(query - ref[(idx - 1) % n])))
    return float(np.mean(near <= tol))


def consistency(a: MaskAngles, b: MaskAngles, tolerance_px: float) -> tuple[float, float]:
    """(fraction of a's pixels whose epipolar line passes within ``tolerance_px`` of b, the same from b
    to a). The tolerance grows by half the sampling strides, so sampling leaves no gap."""
    tol = tolerance_px * max(a.rate, b.rate) + 0.5 * max(a.stride * a.rate, b.stride * b.rate)
    if abs(_wrap(a.centre - b.centre)) > a.half_width + b.half_width + tol:
        return 0.0, 0.0
    return _hit_fraction(a.theta, b.theta, tol), _hit_fraction(b.theta, a.theta, tol)
