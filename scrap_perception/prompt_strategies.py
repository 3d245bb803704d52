"""The paper's prompting strategies S1-S6, built from a ground-truth mask, and their perturbations.

Coordinates as in ``scrap_perception.prompts``: x right, y down, origin at the top-left corner of the
top-left pixel, so pixel (row r, column c) has its centre at (c + 0.5, r + 0.5) and a mask's tight box
is (c_min, r_min, c_max + 1, r_max + 1).

- S1: everything mode: a regular grid of single positive points over the image (``grid_prompts``);
  every candidate mask is then matched to the ground truth by the evaluation.
- S2: one positive point at the interior maximum of the mask's Euclidean distance transform (the
  pixel deepest inside the object; the image border counts as outside).
- S3: five positive points: the S2 point plus four drawn from the mask's deep interior.
- S4: S3 plus five negative points outside the mask, inside the box grown by a margin (so they fall
  in holes, concavities and the ring around the object, where they are informative).
- S5: the tight box.  S6: the tight box plus the S2 point (an oracle: the node never sees the ground truth).
- S6-centre: the box plus its centre, what ``prompt_mode: box_point`` deploys; the centre lies off
  L-, U- and hollow sections.
- S6-refined: the box is decoded alone (S5), the deepest interior point of that mask inside the box is
  added, and box + point are decoded again (``refine_prompts``; ``prompt_mode: box_point_refined``).
  A box whose first mask is empty keeps its centre (counted as a fallback).
S6-centre and S6-refined are built from the box alone, so under perturbation only the box moves and the
point follows it, as in the node.

Robustness (``perturb``): a box is translated by a vector whose length is drawn in [lo, hi] px
('shift'), grown by [lo, hi] px on each side ('expand'), or either, 50/50 ('both'); each point is moved
by a vector of length in [lo, hi] px. Results are not clipped here: ``prompts.sanitize`` clips them
against the image like any detector prompt.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from .masks import InstanceMask
from .prompts import Prompt, PromptError, box_point_prompt

STRATEGIES: dict[str, str] = {
    "S1": "everything mode (point grid) + mask matching",
    "S2": "1 positive point (distance-transform maximum)",
    "S3": "5 positive points",
    "S4": "5 positive + 5 negative points",
    "S5": "tight box",
    "S6": "box + 1 positive point (ground truth's deepest point: oracle)",
    "S6-centre": "box + box centre (prompt_mode box_point)",
    "S6-refined": "box + deepest point of the box's mask, decoded twice (prompt_mode box_point_refined)",
}
#: Strategies whose point is derived from the box at decode time (perturbed: the box moves, the point follows).
BOX_DERIVED = ("S6-centre", "S6-refined")
SHIFT_RANGES: tuple[tuple[int, int], ...] = ((0, 10), (10, 20), (20, 30))
PERTURB_MODES = ("both", "shift", "expand")


def _check(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    if not mask.any():
        raise PromptError("cannot build a prompt from an empty mask", "empty_mask")
    return mask


def tight_box(mask: np.ndarray) -> np.ndarray:
    """(4,) float32 (x0, y0, x1, y1) enclosing every mask pixel."""
    mask = _check(mask)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def distance_map(mask: np.ndarray) -> np.ndarray:
    """(H, W) float64: Euclidean distance from each mask pixel to the nearest pixel outside the mask
    (pixels beyond the image border count as outside); 0 off the mask."""
    mask = np.asarray(mask, bool)
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def interior_point(mask: np.ndarray) -> np.ndarray:
    """(2,) float32 (x, y): centre of the pixel with the largest distance transform (first in raster
    order on ties)."""
    dist = distance_map(_check(mask))
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([c + 0.5, r + 0.5], np.float32)


def positive_points(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) float32: the S2 point, then n - 1 distinct pixels drawn from the deep interior (distance
    at least half the maximum), or from the whole mask when the interior has too few pixels."""
    mask = _check(mask)
    first = interior_point(mask)
    if n <= 1:
        return first[None][:max(n, 0)]
    dist = distance_map(mask)
    deep = dist >= 0.5 * dist.max()
    deep[int(first[1]), int(first[0])] = False
    rows, cols = np.nonzero(deep)
    if len(rows) < n - 1:
        rows, cols = np.nonzero(mask)
    pick = rng.choice(len(rows), size=n - 1, replace=len(rows) < n - 1)
    rest = np.stack([cols[pick] + 0.5, rows[pick] + 0.5], axis=1)
    return np.concatenate([first[None], rest]).astype(np.float32)


def negative_points(mask: np.ndarray, n: int, rng: np.random.Generator,
                    margin: Optional[float] = None) -> np.ndarray:
    """(m, 2) float32, m <= n: distinct pixels at least 2 px off the mask, inside the tight box grown
    by ``margin`` px (default max(5, 10 % of the box's longer side)), clipped to the image. Falls back
    to the whole image when that region is empty; m < n only when the image has too few such pixels."""
    mask = _check(mask)
    h, w = mask.shape
    x0, y0, x1, y1 = tight_box(mask)
    if margin is None:
        margin = max(5.0, 0.1 * max(x1 - x0, y1 - y0))
    near = ndimage.binary_dilation(mask, iterations=2)
    region = np.zeros_like(mask)
    region[max(0, int(y0 - margin)):min(h, int(np.ceil(y1 + margin))),
           max(0, int(x0 - margin)):min(w, int(np.ceil(x1 + margin)))] = True
    region &= ~near
    if not region.any():
        region = ~near
    rows, cols = np.nonzero(region)
    pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
    return np.stack([cols[pick] + 0.5, rows[pick] + 0.5], axis=1).astype(np.float32).reshape(-1, 2)


def strategy_prompt(strategy: str, mask: np.ndarray, rng: Optional[np.random.Generator] = None,
                    n_points: int = 5, id: str = "") -> Prompt:
    """The prompt of strategy S2..S6 for one (H, W) bool ground-truth mask (S1 is per image:
    ``grid_prompts``). ``rng`` draws the extra points of S3/S4 (default: seeded with 0). S6-centre and
    S6-refined get the tight box alone: their point comes from the box (``with_centre``, ``refine_prompts``)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    if strategy == "S2":
        return Prompt(points=interior_point(mask)[None], point_labels=[1], id=id)
    if strategy == "S3":
        return Prompt(points=positive_points(mask, n_points, rng), point_labels=np.ones(n_points), id=id)
    if strategy == "S4":
        pos = positive_points(mask, n_points, rng)
        neg = negative_points(mask, n_points, rng)
        labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
        return Prompt(points=np.concatenate([pos, neg]), point_labels=labels, id=id)
    if strategy in ("S5", *BOX_DERIVED):
        return Prompt(box=tight_box(mask), id=id)
    if strategy == "S6":
        return Prompt(box=tight_box(mask), points=interior_point(mask)[None], point_labels=[1], id=id)
    raise ValueError(f"strategy must be one of {list(STRATEGIES)[1:]} (S1 uses grid_prompts), not {strategy!r}")


def with_centre(prompt: Prompt) -> Prompt:
    """S6-centre: the prompt's box plus its centre as one positive point (``prompts.box_point_prompt``)."""
    return box_point_prompt(prompt.box, id=prompt.id, score=prompt.score)


def deepest_point(mask: InstanceMask, box: np.ndarray) -> Optional[np.ndarray]:
    """(2,) float32 (x, y): centre of the pixel of ``mask`` inside ``box`` (x0, y0, x1, y1; a pixel is
    inside when its centre is) deepest in that intersection: largest distance to the nearest pixel outside
    it, by OpenCV's exact Euclidean distance transform (the image border counts as outside; ties: first
    in raster order). None when no mask pixel lies in the box."""
    x, y, w, h = mask.roi
    if not w or not h:
        return None
    cols = np.arange(x, x + w) + 0.5
    rows = np.arange(y, y + h) + 0.5
    inside = mask.mask & ((rows >= box[1]) & (rows < box[3]))[:, None] & ((cols >= box[0]) & (cols < box[2]))[None]
    if not inside.any():
        return None
    import cv2

    dist = cv2.distanceTransform(np.pad(inside, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([x + c + 0.5, y + r + 0.5], np.float32)


def refine_prompts(segmenter, prompts: Sequence[Prompt], encoded) -> tuple[list[Prompt], list[bool]]:
    """S6-refined, first stage: the sanitized box prompts decoded in one ``segment`` call, then each box
    plus the deepest point of its own mask (``deepest_point``). Returns the box + point prompts in order
    and per prompt whether it was refined (False: its mask had no pixel in the box, the box centre is used)."""
    if not prompts:
        return [], []
    masks = segmenter.segment(list(prompts), encoded=encoded)
    points = [deepest_point(m, p.box) for p, m in zip(prompts, masks)]
    return ([box_point_prompt(p.box, point, id=p.id, score=p.score) for p, point in zip(prompts, points)],
            [point is not None for point in points])


def grid_prompts(image_hw: tuple[int, int], points_per_side: int) -> list[Prompt]:
    """S1: points_per_side**2 single positive points on a regular grid, cell centres, row-major
    (the layout of segment_anything's ``build_point_grid``)."""
    if points_per_side < 1:
        raise ValueError(f"points_per_side must be >= 1, got {points_per_side}")
    h, w = image_hw
    t = (np.arange(points_per_side) + 0.5) / points_per_side
    xs, ys = np.meshgrid(t * w, t * h)
    return [Prompt(points=[[x, y]], point_labels=[1], id=f"grid{i}")
            for i, (x, y) in enumerate(zip(xs.ravel(), ys.ravel()))]


def _offsets(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """(n, 2) vectors with length uniform in [lo, hi] and uniform direction."""
    length = rng.uniform(lo, hi, size=n)
    angle = rng.uniform(0.0, 2 * np.pi, size=n)
    return np.stack([length * np.cos(angle), length * np.sin(angle)], axis=1)


def perturb(prompt: Prompt, rng: np.random.Generator, shift_range: tuple[float, float],
            mode: str = "both") -> Prompt:
    """A copy of ``prompt`` with its box shifted or expanded and its points moved by [lo, hi] px
    (see the module doc). mode: 'both' (box shift or expansion, 50/50), 'shift' or 'expand'."""
    lo, hi = float(shift_range[0]), float(shift_range[1])
    if not 0 <= lo <= hi:
        raise ValueError(f"shift_range must satisfy 0 <= lo <= hi, got {shift_range}")
    if mode not in PERTURB_MODES:
        raise ValueError(f"mode must be one of {PERTURB_MODES}, not {mode!r}")
    box = prompt.box
    if box is not None:
        kind = mode if mode != "both" else ("shift" if rng.random() < 0.5 else "expand")
        if kind == "shift":
            d = _offsets(rng, 1, lo, hi)[0]
            box = box + np.array([d[0], d[1], d[0], d[1]], np.float32)
        else:
            grow = rng.uniform(lo, hi, size=4)
            box = box + np.array([-grow[0], -grow[1], grow[2], grow[3]], np.float32)
    points = prompt.points + _offsets(rng, len(prompt.points), lo, hi).astype(np.float32)
    return replace(prompt, box=box, points=points, point_labels=prompt.point_labels.copy())
