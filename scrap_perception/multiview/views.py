"""The ROS-free input of cross-view association: one ``Detection`` per instance per camera.

Pixel coordinates as everywhere in the package: x right, y down, origin at the top-left corner of the
top-left pixel, so pixel (row r, column c) has its centre at (c + 0.5, r + 0.5). Masks are the raw
(distorted) image's pixels; the geometry undistorts what it samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from ..masks import Roi, crop_to_roi

#: camera name -> that camera's detections, in the order the node published them.
ViewSet = Mapping[str, Sequence["Detection"]]
#: (camera name, index into that camera's detections).
DetectionRef = tuple[str, int]


@dataclass(frozen=True, eq=False)
class Detection:
    """One instance seen by one camera.

    camera: the rig's camera name; instance_id: ``ScrapInstance.id``; roi: (x, y, w, h) tight box of the
    mask in that camera's image pixels; mask: (h, w) bool, the mask cropped to roi; class_probs: (K,)
    probabilities in class-id order, or None (unclassified); embedding: (D,) L2-normalised image
    embedding, or None.
    """

    camera: str
    instance_id: str
    roi: Roi
    mask: np.ndarray
    class_probs: Optional[np.ndarray] = None
    embedding: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        x, y, w, h = self.roi
        if self.mask.shape != (h, w) or self.mask.dtype != bool:
            raise ValueError(f"detection {self.camera}/{self.instance_id}: mask must be a ({h}, {w}) bool crop "
                             f"of roi {self.roi}, got {self.mask.dtype} {self.mask.shape}")
        if not self.mask.any():
            raise ValueError(f"detection {self.camera}/{self.instance_id}: empty mask")

    @property
    def area(self) -> int:
        """Mask pixels."""
        return int(np.count_nonzero(self.mask))

    def pixels(self, max_points: Optional[int] = None) -> tuple[np.ndarray, int]:
        """((N, 2) pixel centres (x, y) of the mask in image pixels, stride): all pixels, or with
        ``max_points`` those on a regular grid of ``stride`` px, the smallest stride giving at most
        ``max_points`` (deterministic; every pixel is within stride / sqrt(2) px of a sampled one)."""
        stride = 1
        if max_points is not None:
            stride = max(1, int(np.ceil(np.sqrt(self.area / max_points))))
        sub = self.mask[::stride, ::stride]
        rows, cols = np.nonzero(sub)
        if rows.size == 0:  # a mask thinner than the stride: fall back to all pixels
            rows, cols = np.nonzero(self.mask)
            stride = 1
        else:
            rows, cols = rows * stride, cols * stride
        x, y = self.roi[0], self.roi[1]
        return np.stack([cols + x + 0.5, rows + y + 0.5], axis=1).astype(float), stride

    def centroid(self) -> np.ndarray:
        """(2,) mean of the mask's pixel centres, image pixels."""
        return self.pixels()[0].mean(axis=0)

    def full(self, image_hw: tuple[int, int]) -> np.ndarray:
        """The (H, W) bool mask at full resolution."""
        full = np.zeros(image_hw, bool)
        x, y, w, h = self.roi
        full[y:y + h, x:x + w] = self.mask
        return full


def _vector(values: Optional[Iterable[float]]) -> Optional[np.ndarray]:
    v = None if values is None else np.asarray(list(values), float)
    return None if v is None or v.size == 0 else v


def detection_from_full(camera: str, instance_id: str, mask: np.ndarray, class_probs=None,
                        embedding=None) -> Detection:
    """A Detection from an (H, W) full-resolution mask (bool or 0/255); empty probabilities or
    embeddings (as in a message) become None."""
    roi, crop = crop_to_roi(np.asarray(mask) > 0)
    return Detection(camera, instance_id, roi, crop, _vector(class_probs), _vector(embedding))


def detection_from_crop(camera: str, instance_id: str, roi: Roi, mask: np.ndarray, class_probs=None,
                        embedding=None) -> Detection:
    """A Detection from a ScrapInstance's fields: roi (x_offset, y_offset, width, height), mask the
    (height, width) mono8 0/255 crop (or bool), class_scores and embedding (empty -> None)."""
    roi = tuple(int(v) for v in roi)
    return Detection(camera, instance_id, roi, np.asarray(mask) > 0, _vector(class_probs), _vector(embedding))
