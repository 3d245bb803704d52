"""The CN-CLIP classifier: every mask crop of a frame encoded in one batch and compared with the cached
class text features."""
from __future__ import annotations

import contextlib
import logging
from collections import Counter
from typing import Sequence

import numpy as np
import torch
from cn_clip.clip.model import CLIP

from ..labels import DEFAULT_LABELS, UNKNOWN_ID, UNKNOWN_NAME, Label, validate_labels
from ..devices import PRECISION_CHOICES, autocast, dtype_of, resolve_precision_name
from ..lowprec import low_precision_copy
from ..masks import InstanceMask
from .base import Classification, Classifier, unclassified
from .crops import (DEFAULT_BACKGROUND, DEFAULT_CROP_MARGIN, BackgroundSpec, check_margin, crop_images, normalize,
                    parse_background)
from .resample import resize_crops
from .text_features import TextFeatureCache

log = logging.getLogger(__name__)


def check_options(device: torch.device, precision: str, crop_margin: float, background: BackgroundSpec,
                  batch_size: int, min_score: float) -> None:
    """Raises ValueError for an option the classifier cannot use."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"classifier precision must be one of {list(PRECISION_CHOICES)}, not {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    if not 0.0 <= min_score <= 1.0:
        raise ValueError(f"min_score must be in [0, 1], not {min_score!r}")
    check_margin(crop_margin)
    parse_background(background)


class CnClipClassifier(Classifier):
    """Classifies mask crops by cosine similarity to the labels' text features.

    probabilities = softmax(logit_scale.exp() * cos(image, text_k)) over the labels; the class is the
    argmax, or UNKNOWN when its probability is under ``min_score``. crop_margin / background: the crop
    policy of crops.py. Weights stay fp32; precision 'bf16' or 'fp16' runs the encoders under autocast
    (fp16 only on CUDA), 'auto' resolves per device (scrap_perception.devices; ``precision`` then says
    what it resolved to). counters: 'empty_mask' (masks without a pixel, returned unclassified) and
    'below_min_score'. cast_weights: at bf16 / fp16 the crops run through ``visual``, a copy of the image
    encoder with its matmul weights cast once (lowprec.py: outputs bitwise equal to autocast casting them
    per call, faster; ``model`` stays fp32).
    """

    def __init__(self, model: CLIP, labels: Sequence[Label] = DEFAULT_LABELS, *, device: torch.device | str = "cpu",
                 precision: str = "fp32", crop_margin: float = DEFAULT_CROP_MARGIN,
                 background: BackgroundSpec = DEFAULT_BACKGROUND, batch_size: int = 32, min_score: float = 0.0,
                 name: str = "cn_clip", cast_weights: bool = True) -> None:
        self.device = torch.device(device)
        check_options(self.device, precision, crop_margin, background, batch_size, min_score)
        self.model = model.to(self.device).eval()
        self.precision = resolve_precision_name(precision, self.device, "classifier precision")
        self.dtype = dtype_of(self.precision)
        self.visual = low_precision_copy(self.model.visual, self.dtype) if cast_weights else self.model.visual
        self.crop_margin = check_margin(crop_margin)
        self.background = parse_background(background)
        self.batch_size = int(batch_size)
        self.min_score = float(min_score)
        self.name = name
        self.resolution = int(model.visual.input_resolution)
        self.counters: Counter[str] = Counter()
        self._text = TextFeatureCache(model, self.device)
        self._labels = validate_labels(tuple(labels))

    @property
    def labels(self) -> tuple[Label, ...]:  # type: ignore[override]
        return self._labels

    @labels.setter
    def labels(self, labels: Sequence[Label]) -> None:
        """Replaces the label set; its text features are computed on next use."""
        self._labels = validate_labels(tuple(labels))

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.dtype)

    def text_features(self) -> torch.Tensor:
        """(K, D) float32 normalised features of the current labels (cached)."""
        with self._autocast():
            return self._text.get(self._labels)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, R, R) normalised crops -> (N, D) float32 L2-normalised embeddings, ``batch_size`` at a time."""
        out = []
        # The low-precision copy = model.encode_image: autocast casts the crops as encode_image's .type would.
        run = self.model.encode_image if self.visual is self.model.visual else self.visual
        with torch.inference_mode(), self._autocast():
            for start in range(0, images.shape[0], self.batch_size):
                out.append(run(images[start:start + self.batch_size]).float())
        feats = torch.cat(out) if out else images.new_zeros((0, self.model.text_projection.shape[1]))
        return feats / feats.norm(dim=-1, keepdim=True)

    def classify(self, rgb: np.ndarray, masks: Sequence[InstanceMask]) -> list[Classification]:
        """One Classification per mask of the RGB uint8 (H, W, 3) image, in order.

        Masks without pixels come back unclassified (and are counted); a wrong image or a mask outside
        it raises ValueError.
        """
        return self.classify_frames([(rgb, masks)])[0]

    def classify_frames(self, frames: Sequence[tuple[np.ndarray, Sequence[InstanceMask]]]
                        ) -> list[list[Classification]]:
        """``classify`` of several (image, masks) pairs, the crops of all images encoded in shared batches."""
        results = [[unclassified() for _ in masks] for _, masks in frames]
        crops, owners = [], []  # owners[k] = (frame, mask index) of crops[k]
        for f, (rgb, masks) in enumerate(frames):
            keep = [i for i, m in enumerate(masks) if m.roi[2] > 0 and m.roi[3] > 0 and m.mask.any()]
            if len(keep) < len(masks):
                self.counters["empty_mask"] += len(masks) - len(keep)
                log.warning("%s: %d empty mask(s) left unclassified", self.name, len(masks) - len(keep))
            crops += crop_images(rgb, [masks[i] for i in keep], self.crop_margin, self.background)
            owners += [(f, i) for i in keep]
        if not crops:
            return results
        text = self.text_features()
        for start in range(0, len(crops), self.batch_size):
            # Prepared chunk by chunk so the resize buffers stay bounded for any number of masks.
            chunk = normalize(resize_crops(crops[start:start + self.batch_size], self.resolution, self.device))
            emb = self.encode(chunk)
            probs = torch.softmax(self.model.logit_scale.detach().float().exp() * emb @ text.T, dim=-1)
            for (f, i), e, p in zip(owners[start:start + self.batch_size], emb.cpu().numpy(), probs.cpu().numpy()):
                results[f][i] = self._result(p, e)
        return results

    def _result(self, probs: np.ndarray, embedding: np.ndarray) -> Classification:
        best = int(np.argmax(probs))
        score = float(probs[best])
        if score < self.min_score:
            self.counters["below_min_score"] += 1
            return Classification(UNKNOWN_ID, UNKNOWN_NAME, score, probs, embedding)
        label = self._labels[best]
        return Classification(label.id, label.name, score, probs, embedding)
