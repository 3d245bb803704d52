"""A 3D scrap scene for multi-view rendering: the seven shapes as triangle-mesh solids on the floor.

Frames: the world frame of ``multiview.rig`` (right-handed, z up, floor z = 0, metres). Each solid has
its object frame: x along its length, z up, origin at the centre of its bounding box in that frame; a
world point is ``Rz(yaw) p + position``. A section (L, disc, square, I, ring, flat bar, U) lies in the
object's (y, z) plane and is extruded along x; an angle, a beam or a channel rests in one of its stable
poses (``roll``: the section's rotation about x, applied before centring). Every section is a union of
boxes or a (hollow) cylinder, so the mesh is exact: a pipe's bore is empty, an angle's inside corner
is open.

The pile: pieces are placed one by one, each slid from the pile's centre outwards along a random
direction until its footprint (an oriented rectangle) no longer overlaps a placed one, so each touches
one placed before it (gap under ``CONTACT_TOL``) and the cameras see them occlude each other.
``Scene.at_frame`` moves the pile along +x like a conveyor. ``camera_ring`` puts N pinhole cameras on a
circle around the pile, looking down at it at 30-60 degrees. Everything is drawn from the generator it
is given: the same seed gives the same scene and rig.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np

from ..labels import DEFAULT_LABELS, name_of
from .rig import Camera, Rig, look_at

ANGLE, BAR, BILLET, H_BEAM, PIPE, PLATE, U_CHANNEL = range(7)
CONTACT_TOL = 1e-3  # m: the largest gap left between a piece and the one it was slid against
SEGMENTS = 32  # facets around a round bar or pipe


@dataclass(frozen=True)
class Mesh:
    """triangles: (F, 3, 3) corners (m, object frame); normals: (F, 3, 3) unit outward normal per corner
    (smooth on round walls); ambient: (F,) ambient-light factor in (0, 1] (< 1 inside a pipe's bore)."""

    triangles: np.ndarray
    normals: np.ndarray
    ambient: np.ndarray

    @staticmethod
    def concat(meshes: Sequence["Mesh"]) -> "Mesh":
        return Mesh(np.concatenate([m.triangles for m in meshes]), np.concatenate([m.normals for m in meshes]),
                    np.concatenate([m.ambient for m in meshes]))

    def transformed(self, R: np.ndarray, t: np.ndarray) -> "Mesh":
        """The mesh with points mapped to ``R p + t`` (R: (3, 3) rotation, t: (3,))."""
        return Mesh(self.triangles @ R.T + t, self.normals @ R.T, self.ambient)


def _mesh(tris: list, normals: list, ambient: float = 1.0) -> Mesh:
    t, n = np.asarray(tris, float).reshape(-1, 3, 3), np.asarray(normals, float).reshape(-1, 3, 3)
    return Mesh(t, n, np.full(len(t), ambient))


def box(lo: Sequence[float], hi: Sequence[float]) -> Mesh:
    """An axis-aligned box from corner ``lo`` to ``hi`` (3,): 12 triangles, flat normals."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    tris, normals = [], []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        for side, sign in ((lo, -1.0), (hi, 1.0)):
            corners = []
            for cu, cv in ((lo[u], lo[v]), (hi[u], lo[v]), (hi[u], hi[v]), (lo[u], hi[v])):
                p = np.empty(3)
                p[axis], p[u], p[v] = side[axis], cu, cv
                corners.append(p)
            n = np.zeros(3)
            n[axis] = sign
            tris += [[corners[0], corners[1], corners[2]], [corners[0], corners[2], corners[3]]]
            normals += [[n] * 3] * 2
    return _mesh(tris, normals)


def _circle(radius: float, n: int) -> np.ndarray:
    """(n + 1, 2) points (y, z) around a circle, the first repeated at the end."""
    a = np.linspace(0.0, 2 * np.pi, n + 1)
    return radius * np.stack([np.cos(a), np.sin(a)], 1)


def tube(length: float, r_out: float, r_in: float = 0.0, n: int = SEGMENTS) -> Mesh:
    """A cylinder along x (centred at 0, axis through y = z = 0) of radius ``r_out``; with ``r_in`` > 0 a
    pipe whose bore of radius ``r_in`` is open at both ends (its wall's ambient light is halved)."""
    hx = length / 2
    out, inn = _circle(r_out, n), _circle(r_in, n)
    tris, normals = [], []
    inner_tris, inner_normals = [], []
    for i in range(n):
        for ring, sign, tl, nl in ((out, 1.0, tris, normals), (inn, -1.0, inner_tris, inner_normals)):
            if ring is inn and r_in <= 0:
                continue
            a0, a1 = np.r_[-hx, ring[i]], np.r_[hx, ring[i]]
            b0, b1 = np.r_[-hx, ring[i + 1]], np.r_[hx, ring[i + 1]]
            na = sign * np.r_[0.0, ring[i] / np.linalg.norm(ring[i])]
            nb = sign * np.r_[0.0, ring[i + 1] / np.linalg.norm(ring[i + 1])]
            tl += [[a0, b0, b1], [a0, b1, a1]]
            nl += [[na, nb, nb], [na, nb, na]]
        for x, sign in ((-hx, -1.0), (hx, 1.0)):  # end faces: a disc, or a ring around the bore
            n_cap = [np.r_[sign, 0.0, 0.0]] * 3
            o0, o1 = np.r_[x, out[i]], np.r_[x, out[i + 1]]
            if r_in <= 0:
                tris.append([np.r_[x, 0.0, 0.0], o0, o1])
                normals.append(n_cap)
            else:
                i0, i1 = np.r_[x, inn[i]], np.r_[x, inn[i + 1]]
                tris += [[i0, o0, o1], [i0, o1, i1]]
                normals += [n_cap, n_cap]
    parts = [_mesh(tris, normals)]
    if inner_tris:
        parts.append(_mesh(inner_tris, inner_normals, ambient=0.5))
    return Mesh.concat(parts)


def _boxes(length: float, rects: Sequence[tuple[float, float, float, float]]) -> Mesh:
    """The union of boxes extruded along x from (y0, y1, z0, z1) section rectangles."""
    hx = length / 2
    return Mesh.concat([box((-hx, y0, z0), (hx, y1, z1)) for y0, y1, z0, z1 in rects])


def section_mesh(class_id: int, length: float, dims: dict[str, float]) -> Mesh:
    """The solid of ``class_id`` before its pose: section in (y, z), extruded along x over ``length``.

    dims (m): ANGLE legs a, b, thickness t; BAR radius r; BILLET width w, height h; H_BEAM flange width
    b, depth d, flange thickness tf, web thickness tw; PIPE outer radius r, wall t; PLATE width w,
    thickness t; U_CHANNEL width b, depth d, thickness t.
    """
    g = dims.get
    if class_id == ANGLE:
        return _boxes(length, [(0, g("a"), 0, g("t")), (0, g("t"), g("t"), g("b"))])
    if class_id == BAR:
        return tube(length, g("r"))
    if class_id == BILLET:
        return _boxes(length, [(0, g("w"), 0, g("h"))])
    if class_id == H_BEAM:
        b, d, tf, tw = g("b"), g("d"), g("tf"), g("tw")
        return _boxes(length, [(-b / 2, b / 2, 0, tf), (-b / 2, b / 2, d - tf, d), (-tw / 2, tw / 2, tf, d - tf)])
    if class_id == PIPE:
        return tube(length, g("r"), g("r") - g("t"))
    if class_id == PLATE:
        return _boxes(length, [(0, g("w"), 0, g("t"))])
    if class_id == U_CHANNEL:
        b, d, t = g("b"), g("d"), g("t")
        return _boxes(length, [(-b / 2, b / 2, 0, t), (-b / 2, -b / 2 + t, t, d), (b / 2 - t, b / 2, t, d)])
    raise ValueError(f"unknown class id {class_id}")


# Stable resting poses: rolls (rad) of the section about x. An angle lies on a leg or as a roof (both
# leg edges down), a beam on a flange or on its flange edges, a channel opening up, down or sideways.
_ROLLS = {ANGLE: (0.0, np.pi / 2, -3 * np.pi / 4), H_BEAM: (0.0, np.pi / 2), U_CHANNEL: (0.0, np.pi, np.pi / 2)}


def random_dims(class_id: int, rng: np.random.Generator) -> tuple[float, dict[str, float]]:
    """(length, dims) in plausible ranges for cut scrap, metres (see ``section_mesh``)."""
    u = rng.uniform
    if class_id == ANGLE:
        a = u(0.05, 0.16)
        return u(0.6, 2.0), {"a": a, "b": a * u(0.6, 1.0), "t": u(0.006, 0.016)}
    if class_id == BAR:
        return u(0.6, 2.0), {"r": u(0.015, 0.06)}
    if class_id == BILLET:
        w = u(0.10, 0.20)
        return u(0.5, 1.5), {"w": w, "h": w * u(0.9, 1.0)}
    if class_id == H_BEAM:
        d = u(0.15, 0.35)
        return u(0.8, 2.2), {"b": d * u(0.5, 1.0), "d": d, "tf": u(0.010, 0.022), "tw": u(0.007, 0.014)}
    if class_id == PIPE:
        r = u(0.05, 0.18)
        return u(0.6, 2.0), {"r": r, "t": r * u(0.08, 0.2)}
    if class_id == PLATE:
        return u(0.5, 1.6), {"w": u(0.3, 1.0), "t": u(0.01, 0.04)}
    if class_id == U_CHANNEL:
        d = u(0.08, 0.22)
        return u(0.8, 2.2), {"b": d * u(0.8, 1.4), "d": d * u(0.4, 0.6), "t": u(0.006, 0.013)}
    raise ValueError(f"unknown class id {class_id}")


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


@dataclass(frozen=True)
class SceneObject:
    """One solid. object_id >= 1 (shared by every view and frame); class_id: a ``labels`` id; mesh: in
    the object frame, centred on its bounding box; position: (3,) world position of that centre (m);
    yaw: rotation about world z (rad); roll: the pose of the section (rad, see the module docstring);
    albedo: (3,) RGB of its bare steel in [0, 1]; rust: fraction of the surface rusted, in [0, 1];
    texture_offset: (3,) where its texture is taken from the noise tables (m)."""

    object_id: int
    class_id: int
    mesh: Mesh
    position: np.ndarray
    yaw: float
    roll: float = 0.0
    albedo: np.ndarray = field(default_factory=lambda: np.array([0.33, 0.33, 0.35]))
    rust: float = 0.5
    texture_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @property
    def size(self) -> np.ndarray:
        """(3,) length, width, height (m): the extents of the mesh in the object frame."""
        pts = self.mesh.triangles.reshape(-1, 3)
        return pts.max(0) - pts.min(0)

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) object -> world rotation."""
        return rot_z(self.yaw)

    def world_mesh(self) -> Mesh:
        return self.mesh.transformed(self.rotation, np.asarray(self.position, float))

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> object frame."""
        return (np.asarray(points, float) - self.position) @ self.rotation

    def footprint(self) -> np.ndarray:
        """(4, 2) world (x, y) corners of its bounding box seen from above."""
        hl, hw = self.size[0] / 2, self.size[1] / 2
        corners = np.array([[-hl, -hw], [hl, -hw], [hl, hw], [-hl, hw]])
        return corners @ self.rotation[:2, :2].T + np.asarray(self.position[:2], float)

    def corners(self) -> np.ndarray:
        """(8, 3) world corners of its bounding box."""
        h = self.size / 2
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
        return (signs * h) @ self.rotation.T + np.asarray(self.position, float)

    def record(self) -> dict:
        """Its ground-truth entry of objects.json (position, size in m; yaw, roll in rad)."""
        return {"object_id": self.object_id, "class_id": self.class_id,
                "class_name": name_of(self.class_id, DEFAULT_LABELS),
                "position": [round(float(v), 6) for v in self.position], "yaw": round(float(self.yaw), 6),
                "roll": round(float(self.roll), 6), "size": [round(float(v), 6) for v in self.size]}


def make_object(object_id: int, class_id: int, length: float, dims: dict[str, float], xy: Sequence[float],
                yaw: float, roll: float = 0.0, **appearance) -> SceneObject:
    """A solid of ``class_id`` lying on the floor (its lowest point at z = 0) with its bounding-box centre
    above world ``xy``; ``appearance``: albedo, rust, texture_offset (see ``SceneObject``)."""
    mesh = section_mesh(class_id, length, dims)
    mesh = mesh.transformed(rot_x(roll), np.zeros(3))
    pts = mesh.triangles.reshape(-1, 3)
    mesh = mesh.transformed(np.eye(3), -(pts.max(0) + pts.min(0)) / 2)
    height = pts[:, 2].max() - pts[:, 2].min()
    return SceneObject(object_id, class_id, mesh, np.array([xy[0], xy[1], height / 2], float), float(yaw),
                       float(roll), **appearance)


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two convex polygons (K, 2) overlap with positive area (separating axis test)."""
    for poly in (a, b):
        edges = np.roll(poly, -1, 0) - poly
        for n in np.stack([-edges[:, 1], edges[:, 0]], 1):
            pa, pb = a @ n, b @ n
            if pa.max() <= pb.min() + 1e-12 or pb.max() <= pa.min() + 1e-12:
                return False
    return True


def _slide_out(obj: SceneObject, placed: list[SceneObject], direction: np.ndarray, step: float = 0.05
               ) -> SceneObject:
    """``obj`` moved from the origin along ``direction`` (2,) to the nearest free place: first by ``step``,
    then by bisection to within CONTACT_TOL of the last overlapping position (a contact)."""
    def at(d: float) -> SceneObject:
        return replace(obj, position=np.r_[d * direction, obj.position[2]])

    def free(d: float) -> bool:
        fp = at(d).footprint()
        return not any(_overlap(fp, p.footprint()) for p in placed)

    if free(0.0):
        return at(0.0)
    lo, hi = 0.0, step
    while not free(hi):
        lo, hi = hi, hi + step
    while hi - lo > CONTACT_TOL:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if free(mid) else (mid, hi)
    return at(hi)


def _appearance(rng: np.random.Generator) -> dict:
    grey = rng.uniform(0.22, 0.42)
    return {"albedo": np.clip(grey * np.array([1.0, 1.0, 1.04]) + rng.normal(0, 0.02, 3), 0, 1),
            "rust": float(rng.uniform(0.1, 0.95)), "texture_offset": rng.uniform(0, 100, 3)}


@dataclass(frozen=True)
class Scene:
    """objects: the solids; light: (3,) unit direction from the scene towards the sun (world);
    texture_seed: seed of the floor's and the steel's noise tables (render)."""

    objects: tuple[SceneObject, ...]
    light: np.ndarray
    texture_seed: int

    def at_frame(self, frame: int, speed: float) -> "Scene":
        """The pile after ``frame`` conveyor steps of ``speed`` m along +x (ids, poses otherwise kept)."""
        shift = np.array([frame * speed, 0.0, 0.0])
        return replace(self, objects=tuple(replace(o, position=o.position + shift) for o in self.objects))

    def bounds(self) -> tuple[np.ndarray, float]:
        """((3,) centre, radius): a sphere around every object's bounding box (m, world)."""
        pts = np.concatenate([o.corners() for o in self.objects]) if self.objects else np.zeros((1, 3))
        centre = (pts.max(0) + pts.min(0)) / 2
        return centre, float(np.linalg.norm(pts - centre, axis=1).max())


def random_scene(rng: np.random.Generator, n_objects: int, classes: Sequence[int] = tuple(range(7))) -> Scene:
    """A pile of ``n_objects`` solids around the world origin; classes are dealt from shuffled rounds of
    ``classes`` (with 7 or more objects every class is there); object ids 1..n in placement order."""
    if n_objects < 1:
        raise ValueError(f"n_objects must be >= 1, got {n_objects}")
    deck = np.concatenate([rng.permutation(classes) for _ in range(-(-n_objects // len(classes)))])
    placed: list[SceneObject] = []
    for k, cls in enumerate(deck[:n_objects]):
        cls = int(cls)
        length, dims = random_dims(cls, rng)
        roll = float(rng.choice(_ROLLS.get(cls, (0.0,))))
        obj = make_object(k + 1, cls, length, dims, (0.0, 0.0), rng.uniform(-np.pi, np.pi), roll,
                          **_appearance(rng))
        a = rng.uniform(0, 2 * np.pi)
        placed.append(_slide_out(obj, placed, np.array([np.cos(a), np.sin(a)])))
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(35), np.radians(70))
    light = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return Scene(tuple(placed), light, int(rng.integers(2 ** 31)))


def _fit_distance(K: np.ndarray, width: int, height: int, target: np.ndarray, direction: np.ndarray,
                  points: np.ndarray, fill: float) -> float:
    """The distance from ``target`` along ``direction`` (unit, world) at which ``points`` (N, 3) project
    inside the central ``fill`` fraction of the image (bisection; the projection shrinks with distance)."""
    lo, hi = 0.1, 1000.0
    for _ in range(40):
        mid = np.sqrt(lo * hi)
        cam = Camera("fit", width, height, K, look_at(target + mid * direction, target))
        uv, z = cam.project(points)
        margin = (1 - fill) / 2
        inside = np.all(z > 0) and np.all((uv >= margin * np.array([width, height]))
                                          & (uv <= (1 - margin) * np.array([width, height])))
        lo, hi = (lo, mid) if inside else (mid, hi)
    return hi


def camera_ring(rng: np.random.Generator, scene: Scene, n: int, width: int = 640, height: int = 480,
                elevation_deg: tuple[float, float] = (30.0, 60.0), fill: float = 0.9,
                names: Optional[Sequence[str]] = None) -> Rig:
    """``n`` cameras ``cam0``.. evenly around the pile (azimuth jittered), each looking at its centre from
    ``elevation_deg`` above the floor, as close as lets every object's bounding box project into the
    central ``fill`` of the image; focal lengths 0.8-1.0 image widths, principal points within 2 % of the
    centre, no distortion. Rig frame "world"."""
    centre, _ = scene.bounds()
    corners = np.concatenate([o.corners() for o in scene.objects])
    phase = rng.uniform(0, 2 * np.pi)
    cams = {}
    for k in range(n):
        name = names[k] if names else f"cam{k}"
        f = width * rng.uniform(0.8, 1.0)
        K = np.array([[f, 0, width / 2 * (1 + rng.uniform(-0.02, 0.02))],
                      [0, f * rng.uniform(0.99, 1.01), height / 2 * (1 + rng.uniform(-0.02, 0.02))], [0, 0, 1]])
        az = phase + 2 * np.pi * k / n + rng.uniform(-0.15, 0.15)
        el = np.radians(rng.uniform(*elevation_deg))
        target = centre * np.array([1, 1, 0])
        direction = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        eye = target + _fit_distance(K, width, height, target, direction, corners, fill) * direction
        cams[name] = Camera(name, width, height, K, look_at(eye, target))
    return Rig(cams, "world")
