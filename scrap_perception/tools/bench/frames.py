"""The benchmark's input: one synthetic scrap scene per camera and its detector boxes.

Boxes are the tight boxes of the scene's visible pieces (largest first), as a good detector would give.
A scene rarely holds 50 pieces, so further boxes are copies of the scene's boxes shifted by up to a
quarter of their size (overlapping detections, as a detector's duplicates). All coordinates are pixels
(x0, y0, x1, y1) of the (H, W) image; a frame set is written to one ``.npz`` so that the ROS publisher
process sends exactly the images and boxes the in-process runs used.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ...prompts import Prompt, box_prompt
from ...synth import render_scene


@dataclass
class Frame:
    """rgb: (H, W, 3) uint8; boxes: (M, 4) float32 pixel boxes, the first n are the frame's n detections."""

    rgb: np.ndarray
    boxes: np.ndarray

    def prompts(self, n: int) -> list[Prompt]:
        """The first ``n`` boxes as detector prompts (box only: the pipeline's prompt mode adds the point)."""
        if n > len(self.boxes):
            raise ValueError(f"frame has {len(self.boxes)} boxes, {n} requested")
        return [box_prompt(b, id=f"d{i}", score=0.9) for i, b in enumerate(self.boxes[:n])]


def make_frames(cameras: int, max_boxes: int, image_hw: tuple[int, int] = (720, 1280), seed: int = 0) -> list[Frame]:
    """One scene per camera with at least ``max_boxes`` boxes; deterministic in ``seed``."""
    frames = []
    for cam in range(cameras):
        rng = np.random.default_rng([seed, cam])
        rgb, pieces = render_scene(rng, image_hw, objects=(24, 30))
        boxes = []
        for p in sorted(pieces, key=lambda q: -int(q.visible.sum())):
            x, y, _, _ = p.roi
            rows, cols = np.flatnonzero(p.visible.any(1)), np.flatnonzero(p.visible.any(0))
            boxes.append((x + cols[0], y + rows[0], x + cols[-1] + 1, y + rows[-1] + 1))
        frames.append(Frame(rgb, _pad_boxes(np.asarray(boxes, np.float32).reshape(-1, 4), max_boxes, image_hw, rng)))
    return frames


def _pad_boxes(boxes: np.ndarray, n: int, image_hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = image_hw
    if not len(boxes):  # an empty scene: a centred box to copy from
        boxes = np.array([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]], np.float32)
    out = [boxes]
    while sum(len(b) for b in out) < n:
        src = boxes[rng.integers(0, len(boxes))]
        size = src[2:] - src[:2]
        shift = rng.uniform(-0.25, 0.25, 2) * size
        x0, y0 = np.clip(src[:2] + shift, 0, [w - 2, h - 2])
        x1, y1 = np.clip(src[2:] + shift, [x0 + 2, y0 + 2], [w, h])
        out.append(np.array([[x0, y0, x1, y1]], np.float32))
    return np.concatenate(out).astype(np.float32)


def save_frames(path: str | os.PathLike, frames: Sequence[Frame]) -> Path:
    """Writes the frames (images and boxes) to ``path`` (.npz) for another process."""
    path = Path(path)
    arrays = {f"rgb{i}": f.rgb for i, f in enumerate(frames)}
    arrays.update({f"boxes{i}": f.boxes for i, f in enumerate(frames)})
    np.savez(path, **arrays)
    return path


def load_frames(path: str | os.PathLike) -> list[Frame]:
    with np.load(path) as z:
        count = sum(1 for k in z.files if k.startswith("rgb"))
        return [Frame(z[f"rgb{i}"], z[f"boxes{i}"]) for i in range(count)]
