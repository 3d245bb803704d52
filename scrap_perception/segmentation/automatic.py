"""Everything mode (strategy S1): masks for a grid of single-point prompts, filtered like the reference.

The algorithm and knobs are ``SamAutomaticMaskGenerator``'s (point grid, optional crop layers, predicted-
IoU and stability-score filters, box NMS within and across crops, small-region clean-up); the masks are
computed with the segmenter's ROI upsampling instead of full-frame logits. The stability score needs the
logits above ``mask_threshold - stability_score_offset``, so the ROIs are taken at that threshold.

As in segment_anything the generator is a user of the segmenter, never the reverse:
``AutomaticMaskGenerator(segmenter, **knobs).generate(rgb, encoded)`` with any ``GridSegmenter``
(``sam_backend.SamSegmenter`` is one).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torchvision.ops import batched_nms

from ..masks import InstanceMask, crop_to_roi
from .base import EncodedImage
from .postprocess import RoiUpsampler, masks_from_windows
from .registry import ModelSpec


@runtime_checkable
class GridSegmenter(Protocol):
    """What the generator needs of a segmenter: its model's package (``spec.package``, for ``utils.amg``),
    encoding, raw decoding of prompts in the model's input frame, and the ROI upsampler."""

    spec: ModelSpec
    hq: bool
    device: torch.device
    mask_threshold: float

    def encode(self, images: Sequence[np.ndarray]) -> list[EncodedImage]:
        """RGB uint8 (H, W, 3) images -> one EncodedImage each."""

    def predict_logits(self, enc: EncodedImage, coords: Optional[torch.Tensor], labels: Optional[torch.Tensor],
                       boxes: Optional[torch.Tensor], mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits (B, C, L, L) and predicted IoUs (B, C) of B prompts (coords (B, N, 2) input pixels)."""

    def upsampler(self, enc: EncodedImage) -> RoiUpsampler:
        """The ROI upsampler of the image's geometry (low-res logits -> original-image windows)."""


@dataclass
class GeneratedMask:
    """One automatic mask. mask: ROI + crop in image pixels (iou = predicted IoU);
    box: (x0, y0, x1, y1) with inclusive x1, y1 as the reference's ``batched_mask_to_box``;
    point: the grid point (x, y) that produced it; crop_box: (x0, y0, x1, y1) of the image crop used."""

    mask: InstanceMask
    stability_score: float
    point: tuple[float, float]
    crop_box: tuple[int, int, int, int]

    @property
    def predicted_iou(self) -> float:
        return self.mask.iou

    @property
    def box(self) -> tuple[int, int, int, int]:
        x, y, w, h = self.mask.roi
        return (x, y, x + w - 1, y + h - 1) if w else (0, 0, 0, 0)

    @property
    def bbox(self) -> list[float]:
        """The reference's XYWH 'bbox' (w = x1 - x0 of the inclusive box)."""
        x0, y0, x1, y1 = self.box
        return [x0, y0, x1 - x0, y1 - y0]


class AutomaticMaskGenerator:
    """Knobs and defaults as ``segment_anything.SamAutomaticMaskGenerator`` (see its docstring);
    multimask_output as SAM-HQ's ``generate``: True = the multimask outputs (SAM: all three, SAM-HQ:
    the best one plus the HQ mask)."""

    def __init__(self, segmenter: GridSegmenter, points_per_side: Optional[int] = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7, crop_n_layers: int = 0,
                 crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1, point_grids: Optional[list[np.ndarray]] = None,
                 min_mask_region_area: int = 0, multimask_output: bool = True) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        self.seg = segmenter
        self.amg = importlib.import_module(f"{segmenter.spec.package}.utils.amg")
        self.point_grids = (point_grids if point_grids is not None else self.amg.build_all_layer_point_grids(
            points_per_side, crop_n_layers, crop_n_points_downscale_factor))
        if len(self.point_grids) < crop_n_layers + 1:
            raise ValueError(f"point_grids has {len(self.point_grids)} grids for {crop_n_layers + 1} crop layers")
        if points_per_batch < 1:
            raise ValueError("points_per_batch must be >= 1")
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.mode = ("all" if not segmenter.hq else "best") if multimask_output else "single"

    def generate(self, rgb: np.ndarray, encoded: Optional[EncodedImage] = None) -> list[GeneratedMask]:
        """Masks of an RGB uint8 (H, W, 3) image; ``encoded``: its encoding, reused for the full-image crop."""
        h, w = rgb.shape[:2]
        crop_boxes, layers = self.amg.generate_crop_boxes((h, w), self.crop_n_layers, self.crop_overlap_ratio)
        out: list[GeneratedMask] = []
        for crop_box, layer in zip(crop_boxes, layers):
            full = list(crop_box) == [0, 0, w, h]
            out += self._process_crop(rgb, crop_box, layer, encoded if full else None)
        if len(crop_boxes) > 1 and out:
            boxes = torch.tensor([m.box for m in out], dtype=torch.float32)
            area = torch.tensor([(c[2] - c[0]) * (c[3] - c[1]) for c in (m.crop_box for m in out)],
                                dtype=torch.float32)
            keep = batched_nms(boxes, 1 / area, torch.zeros(len(out)), self.crop_nms_thresh)
            out = [out[i] for i in keep.tolist()]
        if self.min_mask_region_area > 0 and out:
            out = self._remove_small_regions(out, (h, w))
        return out

    def _process_crop(self, rgb: np.ndarray, crop_box: list[int], layer: int,
                      encoded: Optional[EncodedImage]) -> list[GeneratedMask]:
        x0, y0, x1, y1 = crop_box
        enc = encoded if encoded is not None else self.seg.encode([np.ascontiguousarray(rgb[y0:y1, x0:x1])])[0]
        ch, cw = enc.original_hw
        points = self.point_grids[layer] * np.array([[cw, ch]])
        (oh, ow), (ih, iw) = enc.original_hw, enc.input_hw
        thr, off = self.seg.mask_threshold, self.stability_score_offset
        kept: list[GeneratedMask] = []
        for start in range(0, len(points), self.points_per_batch):
            pts = points[start:start + self.points_per_batch]
            coords = torch.as_tensor(pts * np.array([[iw / ow, ih / oh]]), dtype=torch.float32,
                                     device=self.seg.device)[:, None, :]
            labels = torch.ones(coords.shape[:2], dtype=torch.int32, device=self.seg.device)
            logits, ious = self.seg.predict_logits(enc, coords, labels, None, self.mode)
            n_out = logits.shape[1]
            logits, ious = logits.flatten(0, 1), ious.flatten()
            point_of = np.repeat(np.arange(len(pts)), n_out)
            keep = torch.ones(len(ious), dtype=torch.bool, device=ious.device)
            if self.pred_iou_thresh > 0.0:
                keep &= ious > self.pred_iou_thresh
            sel = keep.nonzero()[:, 0]
            if not len(sel):
                continue
            kept += self._filter(enc, logits[sel], ious[sel], pts[point_of[sel.cpu().numpy()]],
                                 crop_box, (rgb.shape[0], rgb.shape[1]), thr, off)
        if not kept:
            return []
        keep = batched_nms(torch.tensor([m.box for m in kept], dtype=torch.float32),
                           torch.tensor([m.predicted_iou for m in kept], dtype=torch.float32),
                           torch.zeros(len(kept)), self.box_nms_thresh)
        return [kept[i] for i in keep.tolist()]

    def _filter(self, enc: EncodedImage, logits: torch.Tensor, ious: torch.Tensor, pts: np.ndarray,
                crop_box: list[int], image_hw: tuple[int, int], thr: float, off: float) -> list[GeneratedMask]:
        """Stability filter, crop-edge filter, and masks moved from crop to image coordinates."""
        x0, y0 = crop_box[0], crop_box[1]
        out = []
        start = 0
        for win in self.seg.upsampler(enc).windows(logits, thr - off):
            n = len(win.h)
            valid = win.valid()
            inter = ((win.values > thr + off) & valid).flatten(1).sum(1)
            union = ((win.values > thr - off) & valid).flatten(1).sum(1)
            stability = (inter / union).cpu().numpy()  # NaN for an empty union, rejected like the reference
            boxes, binary = masks_from_windows(win, thr)
            boxes = boxes.cpu().numpy()
            xyxy = torch.as_tensor([[x, y, x + w - 1, y + h - 1] if w else [0, 0, 0, 0]
                                    for x, y, w, h in boxes.tolist()], dtype=torch.float32)
            near = self.amg.is_box_near_crop_edge(xyxy, list(crop_box), [0, 0, image_hw[1], image_hw[0]])
            offsets = torch.stack([win.x0, win.y0], 1).cpu().numpy()
            for j in range(n):
                if self.stability_score_thresh > 0.0 and not stability[j] >= self.stability_score_thresh:
                    continue
                if bool(near[j]):
                    continue
                x, y, w, h = boxes[j].tolist()
                if w:
                    ox, oy = offsets[j]
                    crop = np.ascontiguousarray(binary[j, y - oy:y - oy + h, x - ox:x - ox + w])
                    roi = (x + x0, y + y0, w, h)
                else:
                    roi, crop = (0, 0, 0, 0), np.zeros((0, 0), bool)
                px, py = pts[start + j]
                mask = InstanceMask(roi, crop, float(ious[start + j]))
                out.append(GeneratedMask(mask, float(stability[j]), (float(px + x0), float(py + y0)),
                                         tuple(int(c) for c in crop_box)))
            start += n
        return out

    def _remove_small_regions(self, masks: list[GeneratedMask], image_hw: tuple[int, int]) -> list[GeneratedMask]:
        """The reference's clean-up: fill small holes, drop small islands, re-run NMS preferring unchanged
        masks. Works on full-frame masks (an offline option, not on the node's path)."""
        cleaned, scores = [], []
        for m in masks:
            full = m.mask.full(image_hw)
            full, changed_holes = self.amg.remove_small_regions(full, self.min_mask_region_area, mode="holes")
            full, changed_islands = self.amg.remove_small_regions(full, self.min_mask_region_area, mode="islands")
            cleaned.append(full)
            scores.append(float(not (changed_holes or changed_islands)))
        boxes = self.amg.batched_mask_to_box(torch.as_tensor(np.stack(cleaned)))
        keep = batched_nms(boxes.float(), torch.as_tensor(scores), torch.zeros(len(boxes)),
                           max(self.box_nms_thresh, self.crop_nms_thresh))
        out = []
        for i in keep.tolist():
            m = masks[i]
            if scores[i] == 0.0:
                roi, crop = crop_to_roi(cleaned[i])
                m = GeneratedMask(InstanceMask(roi, crop, m.mask.iou), m.stability_score, m.point, m.crop_box)
            out.append(m)
        return out
