"""Instance masks stored as a tight ROI plus the mask cropped to it.

An ROI is ``(x, y, w, h)`` in integer pixels of the source image (``sensor_msgs/RegionOfInterest``
order: x_offset, y_offset, width, height). An empty mask has ROI ``(0, 0, 0, 0)`` and a ``(0, 0)`` crop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

Roi = tuple[int, int, int, int]


@dataclass
class InstanceMask:
    """One segmented object.

    roi: tight box of the mask (x, y, w, h); mask: (h, w) bool, the mask cropped to roi;
    iou: the model's predicted IoU; low_res_logits: (256, 256) float32 when requested, else None.
    """

    roi: Roi
    mask: np.ndarray
    iou: float
    low_res_logits: Optional[np.ndarray] = None

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    def full(self, image_hw: tuple[int, int]) -> np.ndarray:
        """The (H, W) bool mask at full resolution."""
        return paste(self.mask, self.roi, image_hw)


def tight_roi(mask: np.ndarray) -> Roi:
    """Tight (x, y, w, h) of a (H, W) bool mask; (0, 0, 0, 0) when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return (0, 0, 0, 0)
    cols = np.flatnonzero(mask.any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


def crop_to_roi(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> tuple[Roi, np.ndarray]:
    """Crops a bool mask to its tight ROI. ``offset`` (x, y) is where ``mask`` sits in the image,
    so a mask computed on a window of the image gets an ROI in image coordinates."""
    x, y, w, h = tight_roi(mask)
    if w == 0:
        return (0, 0, 0, 0), np.zeros((0, 0), bool)
    return (x + offset[0], y + offset[1], w, h), np.ascontiguousarray(mask[y:y + h, x:x + w])


def from_full(mask: np.ndarray, iou: float, low_res_logits: Optional[np.ndarray] = None) -> InstanceMask:
    roi, crop = crop_to_roi(np.asarray(mask, bool))
    return InstanceMask(roi, crop, float(iou), low_res_logits)


def paste(crop: np.ndarray, roi: Roi, image_hw: tuple[int, int]) -> np.ndarray:
    """Places a cropped mask at its ROI in an all-False (H, W) image."""
    full = np.zeros(image_hw, bool)
    x, y, w, h = roi
    if w and h:
        full[y:y + h, x:x + w] = crop
    return full
