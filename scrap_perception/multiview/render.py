"""Z-buffered rasterisation of triangle meshes in numpy, and the rendering of a scene's camera views.

``rasterise`` draws triangles (world frame) into one pinhole camera: per triangle, over its pixel
bounding box, the barycentric coordinates of every pixel centre (pixel (r, c) has its centre at
u = c + 0.5, v = r + 0.5, origin at the top-left corner of the image as in ``multiview.rig``) decide
coverage (edges inclusive, so shared edges leave no crack), and the depth is interpolated as 1/z
(linear in screen space), so it is exact for the triangle's plane. Depth is z in the camera's optical
frame. Triangles crossing the near plane are clipped. Distortion is not modelled: the cameras must have
zero distortion coefficients.

``render_view`` composes a view: the floor (z = 0) per pixel by ray casting, the objects' z-buffer in
front of it, the id buffer (0 = floor or nothing, else the object_id of the nearest surface, so masks
are exact under occlusion), Lambertian shading of interpolated normals under a sun with shadows (a
shadow map: the same rasteriser seen from the sun), concrete and rusted-steel textures from noise
tables in world / object coordinates (a piece looks the same from every camera) and sensor noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np
from scipy.ndimage import map_coordinates

from .rig import Camera, look_at
from .scene import Scene

SHADOW_SIZE = 1280  # px, side of the shadow map (twice 640)
SKY = np.array([0.55, 0.58, 0.62])  # linear RGB above the horizon


def _clip_near(cam: np.ndarray, near: float) -> tuple[np.ndarray, np.ndarray]:
    """(F, 3, 3) camera-frame triangles -> (F', 3, 3) the parts with z >= near, (F',) source index."""
    z_in = cam[..., 2] >= near
    count = z_in.sum(1)
    tris, owners = [cam[count == 3]], [np.flatnonzero(count == 3)]
    for t in np.flatnonzero((count > 0) & (count < 3)):
        poly = []
        for i in range(3):  # Sutherland-Hodgman against the plane z = near
            a, b = cam[t, i], cam[t, (i + 1) % 3]
            if a[2] >= near:
                poly.append(a)
            if (a[2] >= near) != (b[2] >= near):
                poly.append(a + (b - a) * (near - a[2]) / (b[2] - a[2]))
        fan = [[poly[0], poly[k], poly[k + 1]] for k in range(1, len(poly) - 1)]
        tris.append(np.asarray(fan).reshape(-1, 3, 3))
        owners.append(np.full(len(fan), t))
    return np.concatenate(tris), np.concatenate(owners)


def rasterise(camera: Camera, triangles: np.ndarray, near: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer of (F, 3, 3) world triangles in ``camera``: ((H, W) float64 depth, z in the optical frame,
    inf where nothing is drawn; (H, W) int64 index of the nearest triangle, -1 where none)."""
    if np.any(camera.dist != 0):
        raise ValueError(f"camera {camera.name}: rasterise needs zero distortion coefficients")
    h, w = camera.height, camera.width
    depth = np.full((h, w), np.inf)
    index = np.full((h, w), -1, np.int64)
    tris = np.asarray(triangles, float).reshape(-1, 3, 3)
    if not len(tris):
        return depth, index
    cam, owner = _clip_near(camera.to_camera(tris.reshape(-1, 3)).reshape(-1, 3, 3), near)
    if not len(cam):
        return depth, index
    uv = (cam @ camera.K.T)[..., :2] / cam[..., 2:3]
    inv_z = 1.0 / cam[..., 2]
    # Barycentric coordinate of corner i: l_i(u, v) = a_i u + b_i v + c_i, from the edge opposite to it.
    vj, vk = uv[:, [1, 2, 0]], uv[:, [2, 0, 1]]
    d = vk - vj
    area = (uv[:, 1, 0] - uv[:, 0, 0]) * (uv[:, 2, 1] - uv[:, 0, 1]) \
        - (uv[:, 1, 1] - uv[:, 0, 1]) * (uv[:, 2, 0] - uv[:, 0, 0])
    ok = np.abs(area) > 1e-12
    safe = np.where(ok, area, 1.0)[:, None]
    a, b = -d[..., 1] / safe, d[..., 0] / safe
    c = (d[..., 1] * vj[..., 0] - d[..., 0] * vj[..., 1]) / safe
    # Pixel centres inside the triangle's box: u in [c0 + 0.5, c1 + 0.5].
    c0 = np.maximum(np.ceil(uv[..., 0].min(1) - 0.5), 0).astype(np.int64)
    c1 = np.minimum(np.floor(uv[..., 0].max(1) - 0.5), w - 1).astype(np.int64)
    r0 = np.maximum(np.ceil(uv[..., 1].min(1) - 0.5), 0).astype(np.int64)
    r1 = np.minimum(np.floor(uv[..., 1].max(1) - 0.5), h - 1).astype(np.int64)
    for t in np.flatnonzero(ok & (c1 >= c0) & (r1 >= r0)):
        us = np.arange(c0[t], c1[t] + 1) + 0.5
        vs = np.arange(r0[t], r1[t] + 1)[:, None] + 0.5
        lam = a[t][:, None, None] * us + b[t][:, None, None] * vs + c[t][:, None, None]  # (3, h, w)
        inside = (lam >= -1e-9).all(0)
        z = 1.0 / np.einsum("i,ihw->hw", inv_z[t], lam)
        zbuf = depth[r0[t]:r1[t] + 1, c0[t]:c1[t] + 1]
        nearer = inside & (z < zbuf)
        zbuf[nearer] = z[nearer]
        index[r0[t]:r1[t] + 1, c0[t]:c1[t] + 1][nearer] = owner[t]
    return depth, index


def pixel_rays(camera: Camera) -> np.ndarray:
    """(H, W, 3) world directions through the pixel centres, scaled to unit length along the optical
    axis: the point at depth z of pixel (r, c) is ``camera.centre + z * rays[r, c]``."""
    v, u = np.mgrid[0:camera.height, 0:camera.width] + 0.5
    pix = np.stack([u, v, np.ones_like(u)], -1)
    return (pix @ np.linalg.inv(camera.K).T) @ camera.R


def floor_depth(camera: Camera, rays: np.ndarray) -> np.ndarray:
    """(H, W) depth of the floor z = 0 along ``rays`` (``pixel_rays``), inf at and above the horizon."""
    dz = rays[..., 2]
    with np.errstate(divide="ignore"):
        t = -camera.centre[2] / dz
    return np.where(dz < 0, t, np.inf)


@lru_cache(maxsize=4)
def _tables(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise tables of a scene: (256, 256) for the floor, (48, 48, 48) for steel, uniform in [0, 1)."""
    rng = np.random.default_rng([seed, 7])
    return rng.random((256, 256), np.float32), rng.random((48, 48, 48))


def _lookup(table: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """(N,) values of a periodic table at (N, D) lattice coordinates, linear between lattice points."""
    if table.ndim == 2:  # OpenCV's remap is several times faster than scipy's for the many floor pixels
        c = np.mod(coords, table.shape[::-1]).astype(np.float32)
        n = len(c)
        c = np.pad(c, ((0, -n % 4096), (0, 0))).reshape(-1, 4096, 2)  # remap takes images under 32767 rows
        return cv2.remap(table, c[..., 0], c[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP).ravel()[:n]
    return map_coordinates(table, coords.T, order=1, mode="grid-wrap")


def _noise(table: np.ndarray, points: np.ndarray, cell: float, octaves: int = 3) -> np.ndarray:
    """Fractal value noise in [0, 1] at (N, D) ``points`` (m), D = table.ndim; ``cell``: coarsest lattice
    step (m); smooth (multilinear) between lattice points, periodic over the table."""
    out, amp, total = np.zeros(len(points)), 1.0, 0.0
    for k in range(octaves):
        out += amp * _lookup(table, points / (cell * 0.45 ** k) + 17.3 * k)
        total += amp
        amp *= 0.5
    return out / total


def _concrete(seed: int, xy: np.ndarray) -> np.ndarray:
    """(N, 3) linear RGB of the concrete floor at world (N, 2) points: grey with stains, aggregate and
    a joint every 4 m."""
    floor, _ = _tables(seed)
    base = 0.30 + 0.12 * (_noise(floor, xy, 1.5, 4) - 0.5)
    stain = np.clip((_noise(floor, xy + 50.0, 0.8, 3) - 0.55) * 3.0, 0, 1)
    speck = _noise(floor, xy * 1.0 + 90.0, 0.015, 1)
    grey = base * (1 - 0.35 * stain) + 0.08 * (speck - 0.5)
    joint = np.min(np.abs((xy + 2.0) % 4.0 - 2.0), axis=1) > 1.98
    grey = np.where(joint, grey * 0.45, grey)
    tint = np.array([1.03, 1.0, 0.94]) * (1 - 0.1 * stain[:, None]) + np.array([0.04, 0.02, 0.0]) * stain[:, None]
    return grey[:, None] * tint


def _steel(seed: int, local: np.ndarray, albedo: np.ndarray, rust: float, offset: np.ndarray) -> np.ndarray:
    """(N, 3) linear RGB of one object's surface at (N, 3) object-frame points: bare steel blotched with
    rust, pitting and grain."""
    _, steel = _tables(seed)
    p = local + offset
    blotch = _noise(steel, p, 0.18, 3)
    t = np.clip((blotch - (1 - rust)) * 5, 0, 1)[:, None]
    rust_rgb = np.array([0.25, 0.12, 0.06]) * (0.5 + 1.0 * _noise(steel, p + 31.0, 0.05, 2))[:, None]
    col = albedo * (1 - t) + rust_rgb * t
    pits = _noise(steel, p + 63.0, 0.012, 1) > 0.78
    col = np.where(pits[:, None], col * 0.55, col)
    return col * (0.85 + 0.3 * _noise(steel, p + 11.0, 0.006, 1))[:, None]


@dataclass(frozen=True)
class ShadowMap:
    """The objects' depth seen from the sun: ``camera`` far along the light direction, ``depth`` its
    (size, size) z-buffer."""

    camera: Camera
    depth: np.ndarray

    def lit(self, points: np.ndarray, bias: float = 0.015) -> np.ndarray:
        """(N,) fraction of the sun reaching world (N, 3) points (3x3 percentage-closer filtering)."""
        cam = np.einsum("ni,ji->nj", points - self.camera.centre, self.camera.R)
        uv = np.einsum("ni,ji->nj", cam, self.camera.K)[:, :2] / cam[:, 2:3]
        n = self.depth.shape[0]
        padded = np.pad(self.depth, 2, constant_values=np.inf)  # points off the map sample the inf border
        col = np.clip(np.floor(uv[:, 0]), -1, n).astype(np.int64) + 2
        row = np.clip(np.floor(uv[:, 1]), -1, n).astype(np.int64) + 2
        total = np.zeros(len(points))
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                total += cam[:, 2] <= padded[row + dr, col + dc] + bias
        return total / 9.0


def shadow_map(scene: Scene, size: int = SHADOW_SIZE, distance: float = 200.0) -> ShadowMap:
    """Rasterises the scene into a (size, size) map from a pinhole ``distance`` m towards the sun (nearly
    parallel light) that sees every object."""
    centre, radius = scene.bounds()
    f = (size / 2) * distance / (1.1 * max(radius, 0.1))
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])
    cam = Camera("sun", size, size, K, look_at(centre + distance * scene.light, centre))
    tris = np.concatenate([o.world_mesh().triangles for o in scene.objects] + [np.zeros((0, 3, 3))])
    return ShadowMap(cam, rasterise(cam, tris)[0])


@dataclass(frozen=True)
class View:
    """One rendered camera image: rgb (H, W, 3) uint8; ids (H, W) int32, 0 = floor or nothing, else the
    object_id of the nearest surface; depth (H, W) float64, z in the optical frame (m), inf = nothing."""

    rgb: np.ndarray
    ids: np.ndarray
    depth: np.ndarray


def _barycentric(tri: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(N, 3) barycentric coordinates of (N, 3) points ``p`` in their (N, 3, 3) triangles' planes."""
    e0, e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], p - tri[:, 0]
    d00, d01, d11 = (e0 * e0).sum(1), (e0 * e1).sum(1), (e1 * e1).sum(1)
    d20, d21 = (e2 * e0).sum(1), (e2 * e1).sum(1)
    den = d00 * d11 - d01 * d01
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    return np.stack([1 - v - w, v, w], 1)


def render_view(scene: Scene, camera: Camera, rng: np.random.Generator, shadows: ShadowMap | None = None,
                response: Sequence[float] = (1.0, 1.0, 1.0)) -> View:
    """Renders ``scene`` from ``camera`` (see the module docstring); ``rng`` draws the sensor noise;
    ``shadows``: the scene's ``shadow_map`` (computed at twice the image's longer side when not given);
    ``response``: (3,) the camera's RGB gains (exposure and white balance, fixed per camera)."""
    if shadows is None:
        shadows = shadow_map(scene, 2 * max(camera.width, camera.height))
    meshes = [o.world_mesh() for o in scene.objects]
    tris = np.concatenate([m.triangles for m in meshes] + [np.zeros((0, 3, 3))])
    normals = np.concatenate([m.normals for m in meshes] + [np.zeros((0, 3, 3))])
    ambient = np.concatenate([m.ambient for m in meshes] + [np.zeros(0)])
    owner = np.concatenate([np.full(len(m.triangles), k) for k, m in enumerate(meshes)] + [np.zeros(0, int)])
    rays = pixel_rays(camera)
    z_floor = floor_depth(camera, rays)
    z_obj, tri = rasterise(camera, tris)
    on_obj = z_obj < z_floor
    depth = np.where(on_obj, z_obj, z_floor)
    ids = np.zeros(depth.shape, np.int32)
    object_ids = np.array([o.object_id for o in scene.objects], np.int32)
    ids[on_obj] = object_ids[owner[tri[on_obj]]]

    rgb = np.tile(SKY, depth.shape + (1,))
    hit = np.isfinite(depth)
    points = camera.centre + depth[hit][:, None] * rays[hit]
    lit = shadows.lit(points)
    colour = np.empty_like(points)
    normal = np.tile([0.0, 0.0, 1.0], (len(points), 1))
    amb = np.ones(len(points))
    obj_px = on_obj[hit]
    t = tri[hit][obj_px]
    n = np.einsum("ni,nij->nj", _barycentric(tris[t], points[obj_px]), normals[t])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    away = np.einsum("nj,nj->n", n, camera.centre - points[obj_px]) < 0  # two-sided: face the camera
    normal[obj_px] = np.where(away[:, None], -n, n)
    amb[obj_px] = ambient[t]
    colour[~obj_px] = _concrete(scene.texture_seed, points[~obj_px, :2])
    for k, o in enumerate(scene.objects):
        sel = np.flatnonzero(obj_px)[owner[t] == k]
        colour[sel] = _steel(scene.texture_seed, o.to_local(points[sel]), o.albedo, o.rust, o.texture_offset)
    sun = np.clip(normal @ scene.light, 0, None) * lit
    rgb[hit] = colour * (0.3 * amb + 0.9 * sun)[:, None]
    # Camera: exposure and white balance, gamma, a little optical blur, sensor noise.
    rgb = rgb * np.asarray(response, float)
    rgb = np.clip(rgb, 0, 1) ** (1 / 1.8)
    rgb = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), 0.6)
    rgb = rgb + rng.normal(0, 0.012, rgb.shape).astype(np.float32)
    return View((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), ids, depth)
