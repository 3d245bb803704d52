"""The overlay image: each instance's mask in its class colour, outline, class name and scores (OpenCV)."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..labels import UNKNOWN_ID
from ..pipeline import Instance

# One RGB colour per class id 0..6 (ScrapInstance constants), grey for UNKNOWN.
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
    (245, 130, 48), (145, 30, 180), (70, 240, 240),
)
UNKNOWN_COLOUR = (160, 160, 160)


def colour_of(class_id: int) -> tuple[int, int, int]:
    if class_id == UNKNOWN_ID:
        return UNKNOWN_COLOUR
    return CLASS_COLOURS[class_id % len(CLASS_COLOURS)]


def render_overlay(rgb: np.ndarray, instances: Sequence[Instance], alpha: float = 0.5) -> np.ndarray:
    """A copy of the RGB uint8 (H, W, 3) image with the instances drawn; masks use their roi frames."""
    out = np.array(rgb, np.uint8, copy=True)
    h_img, w_img = out.shape[:2]
    for inst in instances:
        x, y, w, h = inst.mask.roi
        if not w or not h:
            continue
        colour = np.array(colour_of(inst.classification.class_id), np.float32)
        m = np.asarray(inst.mask.mask, bool)
        region = out[y:y + h, x:x + w]
        blended = region[m].astype(np.float32) * (1 - alpha) + colour * alpha
        region[m] = np.round(blended).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(v) for v in colour), 2, offset=(int(x), int(y)))
        c = inst.classification
        if len(c.probabilities):
            text = f"{c.class_name} {c.score:.2f} | mask {inst.mask.iou:.2f}"
        else:  # no classifier
            text = f"{inst.id} | mask {inst.mask.iou:.2f}"
        _label(out, text, (int(x), int(y)), tuple(int(v) for v in colour), (w_img, h_img))
    return out


def _label(img: np.ndarray, text: str, at: tuple[int, int], colour: tuple[int, int, int],
           size: tuple[int, int]) -> None:
    """Text on a filled box above ``at`` (below it when at the top edge), kept inside the image."""
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    x = min(max(at[0], 0), max(size[0] - tw - 4, 0))
    y = at[1] - 4 if at[1] - th - base - 4 >= 0 else at[1] + th + 4
    cv2.rectangle(img, (x, y - th - 2), (x + tw + 4, y + base), colour, cv2.FILLED)
    dark = sum(colour) > 382
    cv2.putText(img, text, (x + 2, y), font, scale, (0, 0, 0) if dark else (255, 255, 255), thick, cv2.LINE_AA)
