"""Procedural scrap-yard scenes with exact instance masks, for tests, the demo and smoke runs.

Each scene is a ground texture with unlabelled clutter (gravel, debris), then pieces of the seven
shapes drawn back to front with soft cast shadows, a few debris pieces on top, global lighting,
colour cast, blur and sensor noise. A piece is seen either from the side (its silhouette: long
rectangles with the shading of a cylinder, of flanges, of a flat face; a plate from above is an
irregular quadrilateral) or end-on (its section: L, disc, square, H, hollow ring, thin strip, U).
The ground-truth mask of a piece is what stays visible after everything drawn over it (occlusion),
and a pipe's bore is not part of its mask.

Sizes are relative to the image width, so small images give the same kind of scene. Every image is
drawn from its own generator seeded with (seed, image index): the same seed gives the same bytes, and
image k does not depend on how many images are made.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from .data import coco_categories, mask_to_rle, write_json
from .labels import DEFAULT_LABELS

ANGLE, BAR, BILLET, H_BEAM, PIPE, PLATE, U_CHANNEL = range(7)

# Side view: (min, max) length / width ratio per class.
_SIDE_ASPECT = {ANGLE: (4, 12), BAR: (8, 30), BILLET: (2, 5), H_BEAM: (3, 8), PIPE: (3, 10),
                PLATE: (1.2, 3), U_CHANNEL: (3, 9)}


@dataclass
class Piece:
    """One drawn object: class id, 'side' or 'end', its full (unoccluded) mask inside ``roi``
    (x, y, w, h) and its visible mask (same roi) after the later pieces were drawn."""

    class_id: int
    view: str
    roi: tuple[int, int, int, int]
    full: np.ndarray
    visible: Optional[np.ndarray] = None


def _noise(rng: np.random.Generator, hw: tuple[int, int], cells: float, octaves: int = 3) -> np.ndarray:
    """(H, W) float32 fractal value noise in [0, 1]: ``cells`` coarse cells across the longer side."""
    h, w = hw
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        gh = max(2, int(round(cells * h / max(h, w))) + 1)
        gw = max(2, int(round(cells * w / max(h, w))) + 1)
        out += amp * cv2.resize(rng.random((gh, gw), dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp, cells = amp * 0.5, cells * 2.3
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / (hi - lo + 1e-6)


def _rusty(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1]: steel grey blotched with rust, plus fine grain."""
    steel = rng.uniform(0.30, 0.60) * np.array([1.0, 1.0, 1.03]) + rng.normal(0, 0.02, 3)
    rust = np.array([rng.uniform(0.45, 0.75), rng.uniform(0.20, 0.38), rng.uniform(0.08, 0.18)])
    dark = rust * rng.uniform(0.35, 0.6)
    amount = rng.uniform(0.2, 1.0)
    blotch = _noise(rng, hw, rng.uniform(3, 10))
    t = np.clip((blotch - (1 - amount)) * 4, 0, 1)[..., None]
    pits = (_noise(rng, hw, rng.uniform(20, 60), octaves=2) > 0.75)[..., None]
    col = steel * (1 - t) + rust * t
    col = np.where(pits, dark, col)
    grain = rng.normal(0, 0.035, hw).astype(np.float32)[..., None]
    return np.clip(col + grain, 0, 1).astype(np.float32)


def _circle(cx: float, cy: float, r: float, n: int = 48) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)


def _section(cls: int, s: float, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """End-on section of size ``s`` centred at 0: (filled polygons, hole polygons) in (u, v) px."""
    t = s * rng.uniform(0.12, 0.25)
    half = s / 2
    if cls == ANGLE:
        poly = np.array([[0, 0], [s, 0], [s, t], [t, t], [t, s], [0, s]]) - half
        return [poly], []
    if cls == BAR:
        return [_circle(0, 0, half)], []
    if cls == BILLET:
        return [np.array([[-half, -half], [half, -half], [half, half], [-half, half]])], []
    if cls == H_BEAM:
        tw = max(2.0, t * 0.7)
        poly = np.array([[-half, -half], [-half + t, -half], [-half + t, -tw / 2], [half - t, -tw / 2],
                         [half - t, -half], [half, -half], [half, half], [half - t, half], [half - t, tw / 2],
                         [-half + t, tw / 2], [-half + t, half], [-half, half]])
        return [poly], []
    if cls == PIPE:
        return [_circle(0, 0, half)], [_circle(0, 0, half * rng.uniform(0.55, 0.85))]
    if cls == PLATE:
        th = max(2.0, s * rng.uniform(0.04, 0.12))
        return [np.array([[-half, -th / 2], [half, -th / 2], [half, th / 2], [-half, th / 2]])], []
    # U: web along the bottom, flanges up.
    depth = s * rng.uniform(0.5, 0.9)
    poly = np.array([[-half, -depth / 2], [-half + t, -depth / 2], [-half + t, depth / 2 - t],
                     [half - t, depth / 2 - t], [half - t, -depth / 2], [half, -depth / 2],
                     [half, depth / 2], [-half, depth / 2]])
    return [poly], []


def _silhouette(cls: int, length: float, width: float, rng: np.random.Generator) -> np.ndarray:
    """Side silhouette centred at 0, long axis along u: a rectangle, or for a plate seen from above an
    irregular quadrilateral."""
    hl, hw = length / 2, width / 2
    rect = np.array([[-hl, -hw], [hl, -hw], [hl, hw], [-hl, hw]], np.float64)
    if cls == PLATE:
        rect += rng.uniform(-0.15, 0.15, rect.shape) * np.array([length, width])
    return rect


def _side_shading(cls: int, v: np.ndarray, width: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness factor across the piece (v: signed distance from the long axis, px)."""
    x = np.clip(v / (width / 2 + 1e-6), -1, 1)
    if cls in (BAR, PIPE):
        shade = 0.45 + 0.75 * np.sqrt(np.clip(1 - x ** 2, 0, 1))
        return shade + 0.35 * np.exp(-((x - rng.uniform(-0.5, 0.5)) / 0.12) ** 2)  # specular line
    if cls == ANGLE:
        return np.where(x < -1 + 2 * rng.uniform(0.15, 0.35), 1.25, 0.85)
    if cls == H_BEAM:
        edge = rng.uniform(0.1, 0.2)
        return np.where(np.abs(x) > 1 - 2 * edge, 1.25, 0.6)
    if cls == U_CHANNEL:
        return np.where(x < -1 + 2 * rng.uniform(0.12, 0.25), 1.3, np.where(x > 0.6, 0.95, 0.55))
    if cls == BILLET:
        return np.where(x < rng.uniform(-0.4, 0.2), 1.1, 0.8)
    return 0.9 + 0.25 * x  # plate: flat, lit from one side


def _draw_piece(canvas: np.ndarray, owner: np.ndarray, index: int, cls: int, view: str,
                rng: np.random.Generator, light: np.ndarray) -> Optional[Piece]:
    """Draws one piece onto ``canvas`` (H, W, 3 float) and claims its pixels in ``owner``."""
    h, w = owner.shape
    cx, cy = rng.uniform(-0.05, 1.05) * w, rng.uniform(-0.05, 1.05) * h
    theta = rng.uniform(0, np.pi)
    if view == "end":
        s = w * np.exp(rng.uniform(np.log(0.015), np.log(0.11)))
        polys, holes = _section(cls, s, rng)
        width = s
    else:
        length = w * np.exp(rng.uniform(np.log(0.05), np.log(0.42)))
        width = max(3.0, length / rng.uniform(*_SIDE_ASPECT[cls]))
        if cls == PLATE and rng.random() < 0.3:  # a plate seen edge-on: a thin strip
            width = max(3.0, length * rng.uniform(0.02, 0.06))
        polys, holes = [_silhouette(cls, length, width, rng)], []
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    to_img = [p @ rot.T + (cx, cy) for p in polys]
    pts = np.concatenate(to_img)
    x0, y0 = max(0, int(np.floor(pts[:, 0].min())) - 1), max(0, int(np.floor(pts[:, 1].min())) - 1)
    x1, y1 = min(w, int(np.ceil(pts[:, 0].max())) + 2), min(h, int(np.ceil(pts[:, 1].max())) + 2)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    ph, pw = y1 - y0, x1 - x0
    local = np.zeros((ph, pw), np.uint8)
    shift = 4  # sub-pixel polygon vertices
    for p in to_img:
        cv2.fillPoly(local, [np.round((p - (x0, y0)) * (1 << shift)).astype(np.int32)], 1, cv2.LINE_8, shift)
    for hole in holes:
        hp = hole @ rot.T + (cx, cy) - (x0, y0)
        cv2.fillPoly(local, [np.round(hp * (1 << shift)).astype(np.int32)], 0, cv2.LINE_8, shift)
    mask = local.astype(bool)
    if not mask.any():
        return None
    region = canvas[y0:y1, x0:x1]
    # Soft cast shadow away from the light, drawn before the piece.
    off = -light * max(2.0, 0.08 * width)
    sh = cv2.warpAffine(local.astype(np.float32), np.float32([[1, 0, off[0]], [0, 1, off[1]]]), (pw, ph))
    sh = cv2.GaussianBlur(sh, (0, 0), max(1.0, 0.06 * width))
    region *= (1 - 0.45 * sh)[..., None]
    for hole in holes:  # the bore: dark inside of the pipe, not part of the mask
        bore = np.zeros((ph, pw), np.uint8)
        hp = hole @ rot.T + (cx, cy) - (x0, y0)
        cv2.fillPoly(bore, [np.round(hp * (1 << shift)).astype(np.int32)], 1, cv2.LINE_8, shift)
        region[bore.astype(bool)] *= rng.uniform(0.15, 0.4)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    tex = _rusty(rng, (ph, pw))
    if view == "end":
        # A cut face: brighter towards the middle, darker at the edges.
        depth = cv2.distanceTransform(local, cv2.DIST_L2, 3) / (0.5 * width + 1e-6)
        shade = np.clip(0.85 + 0.3 * depth, 0.6, 1.3) * rng.uniform(0.9, 1.3)
    else:
        shade = _side_shading(cls, v, width, rng)
    color = tex * (shade * rng.uniform(0.8, 1.2))[..., None]
    region[mask] = np.clip(color[mask], 0, 1)
    owner[y0:y1, x0:x1][mask] = index
    return Piece(cls, view, (x0, y0, pw, ph), mask)


def _debris(canvas: np.ndarray, owner: Optional[np.ndarray], rng: np.random.Generator, n: int,
            size: tuple[float, float]) -> None:
    """Small unlabelled irregular blobs (gravel, slag, offcuts); on top of pieces when ``owner`` is given
    (they then occlude: their pixels belong to no piece)."""
    h, w = canvas.shape[:2]
    for _ in range(n):
        r = w * rng.uniform(*size)
        k = int(rng.integers(5, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = r * rng.uniform(0.5, 1.0, k)
        c = rng.uniform(0, 1, 2) * (w, h)
        poly = np.stack([c[0] + rad * np.cos(ang), c[1] + rad * np.sin(ang)], 1)
        layer = np.zeros((h, w), np.uint8)
        cv2.fillPoly(layer, [np.round(poly).astype(np.int32)], 1)
        sel = layer.astype(bool)
        tone = rng.uniform(0.1, 0.5)
        canvas[sel] = np.array([tone * rng.uniform(0.9, 1.2), tone, tone * rng.uniform(0.8, 1.0)])
        if owner is not None:
            owner[sel] = -2


def _ground(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    # Earth, ash and concrete: a grey level with a warm tint.
    base = rng.uniform(0.25, 0.5) * np.array([rng.uniform(1.0, 1.15), rng.uniform(0.9, 1.0),
                                              rng.uniform(0.72, 0.9)], np.float32)
    dirt = _noise(rng, hw, rng.uniform(4, 12), octaves=4)[..., None]
    grit = rng.normal(0, 0.05, hw).astype(np.float32)[..., None]
    return np.clip(base * (0.6 + 0.8 * dirt) + grit, 0, 1)


def render_scene(rng: np.random.Generator, image_size: tuple[int, int] = (720, 1280),
                 objects: tuple[int, int] = (8, 24), min_area: int = 48, min_visible: float = 0.2
                 ) -> tuple[np.ndarray, list[Piece]]:
    """One scene: RGB uint8 (H, W, 3) and its pieces with visible masks (only those with at least
    ``min_area`` visible pixels and ``min_visible`` of their own area left after occlusion)."""
    h, w = image_size
    canvas = _ground(rng, (h, w))
    _debris(canvas, None, rng, int(rng.integers(10, 40)), (0.002, 0.012))
    owner = np.full((h, w), -1, np.int32)
    a = rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(a), np.sin(a)])
    pieces: list[Piece] = []
    for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
        cls = int(rng.integers(0, 7))
        view = "end" if rng.random() < 0.35 else "side"
        piece = _draw_piece(canvas, owner, len(pieces), cls, view, rng, light)
        if piece is not None:
            pieces.append(piece)
    _debris(canvas, owner, rng, int(rng.integers(0, 6)), (0.004, 0.015))
    # Global lighting: a gradient along the light direction, colour cast, blur, sensor noise.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((xx / w - 0.5) * light[0] + (yy / h - 0.5) * light[1]).astype(np.float32)
    gain = rng.uniform(0.7, 1.3) * (1 + rng.uniform(0.1, 0.5) * ramp)
    canvas *= gain[..., None] * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    sigma = rng.uniform(0.0, 1.0)
    if sigma > 0.3:
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigma)
    canvas += rng.normal(0, 0.015, canvas.shape).astype(np.float32)
    rgb = (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)
    kept = []
    for k, p in enumerate(pieces):
        x, y, pw, ph = p.roi
        p.visible = owner[y:y + ph, x:x + pw] == k
        area = int(p.visible.sum())
        if area >= min_area and area >= min_visible * int(p.full.sum()):
            kept.append(p)
    return rgb, kept


def generate_dataset(out_dir: str | os.PathLike, num_images: int, seed: int = 0,
                     image_size: tuple[int, int] = (720, 1280), objects: tuple[int, int] = (8, 24),
                     min_area: int = 48, progress: bool = True) -> Path:
    """Writes ``num_images`` scenes as ``out_dir/images/NNNNNN.png`` plus ``out_dir/annotations.json``
    (COCO, RLE masks, categories = DEFAULT_LABELS, ids 1..7) and returns the json's path.

    image_size: (H, W); objects: (min, max) pieces drawn per image; min_area: smallest visible mask kept.
    """
    from tqdm import tqdm

    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in tqdm(range(num_images), desc="synth", unit="img", disable=not progress):
        rng = np.random.default_rng([seed, i])
        rgb, pieces = render_scene(rng, image_size, objects, min_area)
        name = f"images/{i:06d}.png"
        if not cv2.imwrite(str(out_dir / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {out_dir / name}")
        images.append({"id": i + 1, "file_name": name, "height": image_size[0], "width": image_size[1]})
        for p in pieces:
            full = np.zeros(image_size, bool)
            x, y, pw, ph = p.roi
            full[y:y + ph, x:x + pw] = p.visible
            rows, cols = np.flatnonzero(full.any(1)), np.flatnonzero(full.any(0))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": p.class_id + 1,
                         "segmentation": mask_to_rle(full), "area": int(full.sum()),
                         "bbox": [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1),
                                  int(rows[-1] - rows[0] + 1)],
                         "iscrowd": 0, "view": p.view})
    coco = {"info": {"description": "scrap_perception synthetic scrap scenes", "seed": seed, "version": 1},
            "licenses": [], "images": images, "annotations": anns, "categories": coco_categories(DEFAULT_LABELS)}
    return write_json(out_dir / "annotations.json", coco)
