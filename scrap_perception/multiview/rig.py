"""A calibrated camera rig: per camera its intrinsics, image size and pose in the rig's world frame.

Frames: the world frame is right-handed, z up (the floor is z = 0 in generated scenes); each camera
frame is the ROS optical frame (x right, y down, z forward), so a world point X projects to pixels
u ~ K [R | t] X with ``T_world_camera`` = [[R^T, c], [0, 1]], R = world->camera rotation, c = the
camera centre in the world, t = -R c. Pixel coordinates as everywhere in the package: origin at the
top-left corner of the top-left pixel (a pixel's centre is at +0.5).

File format (YAML): ``frame_id`` and ``cameras: {name: block}`` where each block is what ROS's
camera_calibration / camera_info_manager write for one camera (``image_width``, ``image_height``,
``camera_name``, ``camera_matrix``, ``distortion_model``, ``distortion_coefficients``,
``rectification_matrix``, ``projection_matrix``, each matrix as ``{rows, cols, data}``), plus
``T_world_camera`` (4x4, row-major) for the pose. Distortion is plumb_bob (k1, k2, p1, p2, k3).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml


class RigError(ValueError):
    """A rig file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Camera:
    """name; width, height: pixels; K: (3, 3) intrinsics; dist: (5,) plumb_bob coefficients;
    T_world_camera: (4, 4) pose of the camera's optical frame in the world."""

    name: str
    width: int
    height: int
    K: np.ndarray
    T_world_camera: np.ndarray
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))

    @property
    def R(self) -> np.ndarray:
        """(3, 3) world -> camera rotation."""
        return self.T_world_camera[:3, :3].T

    @property
    def centre(self) -> np.ndarray:
        """(3,) the camera centre in the world."""
        return self.T_world_camera[:3, 3].copy()

    @property
    def P(self) -> np.ndarray:
        """(3, 4) world -> homogeneous pixels, K [R | -R c] (distortion not applied)."""
        return self.K @ np.hstack([self.R, (-self.R @ self.centre)[:, None]])

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) in the camera's optical frame."""
        return (np.asarray(points, float) - self.centre) @ self.R.T

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) world points -> ((N, 2) pixels, (N,) depth along z); no distortion."""
        cam = self.to_camera(points)
        z = cam[:, 2]
        uv = cam @ self.K.T
        with np.errstate(divide="ignore", invalid="ignore"):
            return uv[:, :2] / uv[:, 2:3], z

    def rays(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 2) pixels -> (N, 3) unit directions in the world (from ``centre``); no distortion."""
        px = np.asarray(pixels, float).reshape(-1, 2)
        d_cam = np.linalg.solve(self.K, np.hstack([px, np.ones((len(px), 1))]).T).T
        d = d_cam @ self.R  # R^T applied to each row
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    def camera_info(self) -> dict[str, Any]:
        """The fields of a sensor_msgs/CameraInfo (height, width, distortion_model, d, k, r, p)."""
        p = np.hstack([self.K, np.zeros((3, 1))])
        return {"height": self.height, "width": self.width, "distortion_model": "plumb_bob",
                "d": [float(v) for v in self.dist], "k": [float(v) for v in self.K.ravel()],
                "r": [float(v) for v in np.eye(3).ravel()], "p": [float(v) for v in p.ravel()]}


@dataclass(frozen=True)
class Rig:
    """frame_id: the world frame's name (a ScrapViewSet's header.frame_id); cameras: name -> Camera."""

    cameras: Mapping[str, Camera]
    frame_id: str = "world"

    def __getitem__(self, name: str) -> Camera:
        return self.cameras[name]

    def __contains__(self, name: str) -> bool:
        return name in self.cameras

    @property
    def names(self) -> list[str]:
        return list(self.cameras)


def look_at(centre: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """(4, 4) T_world_camera of an optical frame at ``centre`` whose z axis points at ``target``."""
    z = np.asarray(target, float) - np.asarray(centre, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:  # looking straight down: any x in the floor plane
        x = np.array([1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = centre
    return T


def _matrix(block: Mapping[str, Any], key: str, shape: tuple[int, int], where: str) -> np.ndarray:
    try:
        m = block[key]
        data = np.asarray(m["data"], float)
        rows, cols = int(m.get("rows", shape[0])), int(m.get("cols", shape[1]))
    except (KeyError, TypeError, ValueError) as e:
        raise RigError(f"{where}: {key} must be {{rows, cols, data}} ({e})") from None
    if (rows, cols) != shape or data.size != rows * cols or not np.all(np.isfinite(data)):
        raise RigError(f"{where}: {key} must be {shape[0]}x{shape[1]} finite numbers, got {rows}x{cols} "
                       f"with {data.size} values")
    return data.reshape(shape)


def _block(name: str, cam: Camera) -> dict[str, Any]:
    info = cam.camera_info()

    def m(rows: int, cols: int, values) -> dict[str, Any]:
        return {"rows": rows, "cols": cols, "data": [float(v) for v in np.asarray(values).ravel()]}

    return {"image_width": cam.width, "image_height": cam.height, "camera_name": name,
            "camera_matrix": m(3, 3, cam.K), "distortion_model": "plumb_bob",
            "distortion_coefficients": m(1, 5, cam.dist), "rectification_matrix": m(3, 3, np.eye(3)),
            "projection_matrix": m(3, 4, info["p"]), "T_world_camera": m(4, 4, cam.T_world_camera)}


def save_rig(rig: Rig, path: str | os.PathLike) -> Path:
    """Writes the rig file (see the module docstring)."""
    path = Path(path)
    doc = {"frame_id": rig.frame_id, "cameras": {n: _block(n, c) for n, c in rig.cameras.items()}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def load_rig(path: str | os.PathLike) -> Rig:
    """Reads a rig file; RigError naming the file and field for anything unusable."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise RigError(f"rig file {str(path)!r}: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cameras"), dict) or not doc["cameras"]:
        raise RigError(f"rig file {str(path)!r}: needs a 'cameras' mapping of camera name -> calibration")
    cams = {}
    for name, block in doc["cameras"].items():
        where = f"rig file {str(path)!r}, camera {name!r}"
        if not isinstance(block, dict):
            raise RigError(f"{where}: not a mapping")
        if block.get("distortion_model", "plumb_bob") != "plumb_bob":
            raise RigError(f"{where}: distortion_model {block['distortion_model']!r}; only plumb_bob is supported")
        try:
            width, height = int(block["image_width"]), int(block["image_height"])
        except (KeyError, TypeError, ValueError):
            raise RigError(f"{where}: image_width and image_height (integers) are needed") from None
        K = _matrix(block, "camera_matrix", (3, 3), where)
        T = _matrix(block, "T_world_camera", (4, 4), where)
        if not np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6) or not np.allclose(T[3], [0, 0, 0, 1]):
            raise RigError(f"{where}: T_world_camera is not a rigid transform")
        dist = (_matrix(block, "distortion_coefficients", (1, 5), where).ravel()
                if "distortion_coefficients" in block else np.zeros(5))
        cams[str(name)] = Camera(str(name), width, height, K, T, dist)
    return Rig(cams, str(doc.get("frame_id", "world")))
