"""Prompts for the segmenter: a detector box and/or points, in pixel coordinates of the source image.

Coordinates: x to the right, y down, origin at the top-left corner of the top-left pixel, as in
``segment_anything``. A box is ``(x0, y0, x1, y1)`` with ``x0 < x1`` and ``y0 < y1``.

Policy for bad prompts (``sanitize``); a rejection raises ``PromptError`` with the ``code`` in brackets:
- a box with a NaN or infinite coordinate (nan_box) or zero or negative size (empty_box): rejected;
- a box partly outside the image: clipped to the image;
- a box wholly outside the image (nothing left after clipping): rejected (box_outside_image);
- point labels other than 1 (positive) and 0 (negative): rejected (bad_point_label; SAM reserves -1, 2, 3
  for padding and box corners);
- a point with a NaN or infinite coordinate: rejected (nan_point);
- points outside the image: dropped; a prompt left with neither box nor point is rejected (no_prompt);
- a box+point prompt whose point is missing gets the box centre (strategy S6).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np


class PromptError(ValueError):
    """A prompt that cannot be used. code: short stable diagnostic key (the node counts rejections under
    it, so it never depends on the wording); the message says why (the logged reason)."""

    def __init__(self, message: str, code: str = "prompt_rejected") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Prompt:
    """One object to segment.

    box: (4,) float (x0, y0, x1, y1) pixels, or None.
    points: (N, 2) float (x, y) pixels; point_labels: (N,) int, 1 positive / 0 negative.
    id: the detector's id (``Detection2D.id``); score: the detector's score.
    """

    box: Optional[np.ndarray] = None
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    point_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    id: str = ""
    score: float = 0.0

    def __post_init__(self) -> None:
        if self.box is not None:
            self.box = np.asarray(self.box, np.float32).reshape(4)
        self.points = np.asarray(self.points, np.float32).reshape(-1, 2)
        self.point_labels = np.asarray(self.point_labels, np.int32).reshape(-1)
        if len(self.points) != len(self.point_labels):
            raise PromptError(f"{len(self.points)} points but {len(self.point_labels)} point labels",
                              "point_label_count")

    @property
    def kind(self) -> str:
        """'box', 'box_point', 'points' or 'empty' (decides single- vs multimask output)."""
        if self.box is not None:
            return "box_point" if len(self.points) else "box"
        return "points" if len(self.points) else "empty"


def box_prompt(box, id: str = "", score: float = 0.0) -> Prompt:
    """Strategy S5: the box alone."""
    return Prompt(box=box, id=id, score=score)


def box_point_prompt(box, point=None, id: str = "", score: float = 0.0) -> Prompt:
    """Strategy S6: the box plus one positive point, by default the box centre."""
    box = np.asarray(box, np.float32).reshape(4)
    if point is None:
        point = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    return Prompt(box=box, points=[point], point_labels=[1], id=id, score=score)


def sanitize(prompt: Prompt, image_hw: tuple[int, int]) -> Prompt:
    """Applies the module's policy; returns a usable prompt or raises PromptError (its code and reason)."""
    h, w = image_hw
    box = prompt.box
    if box is not None:
        if not np.all(np.isfinite(box)):
            raise PromptError("box has a NaN or infinite coordinate", "nan_box")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise PromptError(f"box {box.tolist()} has zero or negative size", "empty_box")
        clipped = np.array([np.clip(box[0], 0, w), np.clip(box[1], 0, h),
                            np.clip(box[2], 0, w), np.clip(box[3], 0, h)], np.float32)
        if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
            raise PromptError(f"box {box.tolist()} lies outside the {w}x{h} image", "box_outside_image")
        box = clipped
    pts, lbl = prompt.points, prompt.point_labels
    if len(lbl) and not np.isin(lbl, (0, 1)).all():
        raise PromptError(f"point labels must be 1 (positive) or 0 (negative), got {lbl.tolist()}",
                          "bad_point_label")
    if len(pts):
        if not np.all(np.isfinite(pts)):
            raise PromptError("a point has a NaN or infinite coordinate", "nan_point")
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        pts, lbl = pts[inside], lbl[inside]
    if box is None and not len(pts):
        raise PromptError("prompt has no box and no point inside the image", "no_prompt")
    return replace(prompt, box=box, points=pts, point_labels=lbl)
