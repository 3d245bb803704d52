"""A weight-free segmenter: OpenCV GrabCut seeded by the prompt's box and points.

It is NOT SAM: masks follow colour statistics only. It exists so the demo and the node run on a
machine without checkpoints; building it logs a loud warning. Per prompt, GrabCut runs on a window
around the box (downscaled to at most ``max_side`` pixels for speed): outside the box is background,
inside probably foreground, positive points (a small disc) foreground, negative points background.
A prompt without a box uses a window around its points, ``point_window`` times the image's short side.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import cv2
import numpy as np

from ..masks import InstanceMask, crop_to_roi
from ..notices import notify
from ..prompts import Prompt
from .base import EncodedImage, Segmenter
from .checks import check_image, check_prompts

log = logging.getLogger(__name__)

NOT_SAM = ("segmenter 'grabcut' is OpenCV GrabCut, NOT SAM: masks follow colour statistics only and are far "
           "less accurate. Configure a SAM checkpoint for real use.")


class GrabCutSegmenter(Segmenter):
    """iterations: GrabCut iterations; margin: context around the box, as a fraction of its size;
    point_radius: radius (pixels, at window scale) of the disc a point marks."""

    name = "grabcut"

    def __init__(self, iterations: int = 4, margin: float = 0.15, max_side: int = 320, point_radius: int = 3,
                 point_window: float = 0.25) -> None:
        super().__init__()
        self.iterations = iterations
        self.margin = margin
        self.max_side = max_side
        self.point_radius = point_radius
        self.point_window = point_window
        notify(log, NOT_SAM)

    def encode(self, images: Sequence[np.ndarray]) -> list[EncodedImage]:
        """Nothing to encode: keeps a reference to each image (no copy)."""
        out = []
        for i, rgb in enumerate(images):
            check_image(rgb, i)
            hw = (int(rgb.shape[0]), int(rgb.shape[1]))
            out.append(EncodedImage(hw, hw, rgb))
        return out

    def segment(self, prompts: Sequence[Prompt], encoded: Optional[EncodedImage] = None,
                return_logits: bool = False) -> list[InstanceMask]:
        """One mask per prompt (also its only candidate). iou is 1.0: GrabCut has no quality estimate;
        low_res_logits stays None."""
        enc = encoded if encoded is not None else self.encoded
        return [self._one(enc.features, p) for p in check_prompts(prompts, enc.original_hw)]

    def _window(self, p: Prompt, hw: tuple[int, int]) -> tuple[int, int, int, int]:
        h, w = hw
        if p.box is not None:
            x0, y0, x1, y1 = p.box
        else:
            half = self.point_window * min(h, w) / 2
            (x0, y0), (x1, y1) = p.points.min(0) - half, p.points.max(0) + half
        mx, my = self.margin * (x1 - x0) + 2, self.margin * (y1 - y0) + 2
        return (max(int(np.floor(x0 - mx)), 0), max(int(np.floor(y0 - my)), 0),
                min(int(np.ceil(x1 + mx)), w), min(int(np.ceil(y1 + my)), h))

    def _one(self, rgb: np.ndarray, p: Prompt) -> InstanceMask:
        wx0, wy0, wx1, wy1 = self._window(p, rgb.shape[:2])
        scale = min(1.0, self.max_side / max(wx1 - wx0, wy1 - wy0))
        win = rgb[wy0:wy1, wx0:wx1]
        small = cv2.resize(win, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else win
        sh, sw = small.shape[:2]
        # Detector boxes may cut the object: around the box is only probably background, the window's
        # rim surely is.
        seed = np.full((sh, sw), cv2.GC_PR_BGD, np.uint8)
        seed[[0, -1], :] = seed[:, [0, -1]] = cv2.GC_BGD
        if p.box is not None:
            bx0, by0, bx1, by1 = ((p.box - [wx0, wy0, wx0, wy0]) * scale).round().astype(int)
            seed[max(by0, 0):max(by1, by0 + 1), max(bx0, 0):max(bx1, bx0 + 1)] = cv2.GC_PR_FGD
        for (x, y), label in zip(p.points, p.point_labels):
            centre = (int((x - wx0) * scale), int((y - wy0) * scale))
            cv2.circle(seed, centre, self.point_radius, int(cv2.GC_FGD if label == 1 else cv2.GC_BGD), -1)
        if not (seed == cv2.GC_FGD).any() and not (seed == cv2.GC_PR_FGD).any():
            return InstanceMask((0, 0, 0, 0), np.zeros((0, 0), bool), 1.0)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(np.ascontiguousarray(small[..., ::-1]), seed, None, bgd, fgd, self.iterations,
                        cv2.GC_INIT_WITH_MASK)
        except cv2.error as e:  # e.g. a window holding a single colour: fall back to the seed itself
            log.debug("grabcut failed on a %dx%d window (%s); using the seed", sw, sh, e)
        fg = (seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD)
        if scale < 1:
            fg = cv2.resize(fg.astype(np.uint8), (wx1 - wx0, wy1 - wy0), interpolation=cv2.INTER_NEAREST) > 0
        roi, crop = crop_to_roi(fg, offset=(wx0, wy0))
        return InstanceMask(roi, crop, 1.0)
