"""The naive baseline: the pipeline as a user would write it from the paper with the reference APIs.

Per frame: ``SamPredictor.set_image``; per box ``SamPredictor.predict`` (box + centre point, single mask)
giving a full-resolution mask; the class text features encoded again; per mask a crop (the mask's box
grown by the margin, pixels outside the mask replaced by the background colour), cn_clip's
``image_transform`` on a PIL image and ``encode_image`` of that one crop. Same models, same crop policy
and same mask choice as the pipeline, so its results must equal the pipeline's: only the code around
the models differs. Used by the benchmark (naive / core) and by the tests (equal outputs).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
from cn_clip.clip import image_transform, tokenize
from PIL import Image

from ...classification.crops import (DEFAULT_BACKGROUND, DEFAULT_CROP_MARGIN, BackgroundSpec, blur_sigma, crop_box,
                                     parse_background)
from ...labels import DEFAULT_LABELS, Label
from ...segmentation.devices import autocast


@dataclass
class NaiveInstance:
    """mask: (H, W) bool at full resolution; iou: predicted IoU; probabilities: (K,) over the labels;
    embedding: (D,) L2-normalised image embedding; index: the prompt's position in the input."""

    index: int
    mask: np.ndarray
    iou: float
    class_id: int
    probabilities: np.ndarray
    embedding: np.ndarray


class NaivePipeline:
    """sam: a SAM-family ``Sam``; package: the package it comes from (its ``SamPredictor`` is used);
    clip: a cn_clip ``CLIP``; crop_margin / background: the crop policy of ``classification.crops``;
    min_mask_score / min_area: the pipeline's thresholds (masks under either are left out)."""

    def __init__(self, sam: torch.nn.Module, package: str, clip: torch.nn.Module,
                 labels: Sequence[Label] = DEFAULT_LABELS, crop_margin: float = DEFAULT_CROP_MARGIN,
                 background: BackgroundSpec = DEFAULT_BACKGROUND,
                 device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32,
                 min_mask_score: float = 0.0, min_area: int = 0) -> None:
        self.predictor = importlib.import_module(package).SamPredictor(sam)
        self.clip = clip
        self.labels = tuple(labels)
        self.preprocess = image_transform(int(clip.visual.input_resolution))
        self.crop_margin = float(crop_margin)
        self.background = parse_background(background)
        self.device, self.dtype = torch.device(device), dtype
        self.min_mask_score, self.min_area = float(min_mask_score), int(min_area)

    def text_features(self) -> torch.Tensor:
        """(K, D): each label's prompts encoded, normalised, averaged, normalised (recomputed every call)."""
        out = []
        for label in self.labels:
            tokens = tokenize(label.prompts()).to(self.device)
            f = self.clip.encode_text(tokens).float()
            f = (f / f.norm(dim=-1, keepdim=True)).mean(0)
            out.append(f / f.norm())
        return torch.stack(out)

    def predict(self, box: np.ndarray, image_hw: tuple[int, int]) -> tuple[np.ndarray, float]:
        """``SamPredictor.predict`` of one box + its centre point, single-mask output: ((1, H, W) bool, IoU).
        Through ``predict_torch`` as ``predict`` does, keeping the IoU in float32 (numpy has no bf16)."""
        t = self.predictor.transform
        centre = np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]], np.float32)
        coords = torch.as_tensor(t.apply_coords(centre, image_hw), dtype=torch.float32, device=self.device)
        boxes = torch.as_tensor(t.apply_boxes(box[None], image_hw), dtype=torch.float32, device=self.device)
        labels = torch.ones((1, 1), dtype=torch.int32, device=self.device)
        masks, ious, _ = self.predictor.predict_torch(coords[None], labels, boxes, multimask_output=False)
        return masks[0].cpu().numpy(), float(ious[0, 0])

    def crop(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The crop of a full-resolution (H, W) mask: its tight box grown by the margin, clipped to the image."""
        ys, xs = np.nonzero(mask)
        roi = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1)
        x0, y0, w, h = crop_box(roi, self.crop_margin, mask.shape)
        crop = rgb[y0:y0 + h, x0:x0 + w].copy()
        outside = ~mask[y0:y0 + h, x0:x0 + w]
        if isinstance(self.background, str):  # "blur"
            crop[outside] = cv2.GaussianBlur(crop, (0, 0), blur_sigma((h, w)))[outside]
        elif self.background is not None:
            crop[outside] = self.background
        return crop

    def process(self, rgb: np.ndarray, boxes: Sequence[Sequence[float]]) -> list[NaiveInstance]:
        """Instances of an RGB uint8 (H, W, 3) frame for pixel boxes (x0, y0, x1, y1); boxes whose mask is
        empty or under the thresholds are left out (as the pipeline rejects them)."""
        with torch.inference_mode(), autocast(self.device, self.dtype):
            self.predictor.set_image(rgb)
            text = self.text_features()
            scale = self.clip.logit_scale.float().exp()
            out = []
            for i, box in enumerate(boxes):
                masks, iou = self.predict(np.asarray(box, np.float32), rgb.shape[:2])
                mask = masks[0]
                area = int(np.count_nonzero(mask))
                if area == 0 or area < self.min_area or iou < self.min_mask_score:
                    continue
                x = self.preprocess(Image.fromarray(self.crop(rgb, mask))).unsqueeze(0).to(self.device)
                emb = self.clip.encode_image(x).float()[0]
                emb = emb / emb.norm()
                with torch.autocast(self.device.type, enabled=False):  # the similarity in float32, as the pipeline
                    probs = torch.softmax(scale * emb @ text.T, dim=-1).cpu().numpy()
                out.append(NaiveInstance(i, mask, iou, self.labels[int(probs.argmax())].id, probs,
                                         emb.cpu().numpy()))
        return out
