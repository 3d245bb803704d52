"""Shape classification of mask crops with CN-CLIP.

``build_classifier`` is the entry point; ``prepare_crops`` / ``crop_images`` are what fine-tuning uses,
so training and inference see identical crops.
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import Sequence

import torch

from ..devices import resolve_device
from ..labels import DEFAULT_LABELS, Label, validate_labels
from .base import Classification, Classifier, NullClassifier
from .cn_clip_backend import PRECISIONS, CnClipClassifier, check_options
from .crops import (BACKGROUNDS, CLIP_MEAN, CLIP_STD, DEFAULT_BACKGROUND, DEFAULT_CROP_MARGIN, crop_box,
                    crop_images, parse_background, prepare_crops)
from .models import MODELS, build_clip_model, load_clip_checkpoint, model_config, small_clip_config
from .text_features import encode_labels

__all__ = [
    "BACKGROUNDS", "CLIP_MEAN", "CLIP_STD", "DEFAULT_BACKGROUND", "DEFAULT_CROP_MARGIN", "MODELS", "PRECISIONS",
    "Classification", "Classifier", "CnClipClassifier", "NullClassifier", "build_classifier", "build_clip_model",
    "crop_box", "crop_images", "encode_labels", "load_clip_checkpoint", "model_config", "parse_background",
    "prepare_crops", "resolve_device", "small_clip_config",
]

log = logging.getLogger(__name__)

NO_CLASSIFIER = ("", "none")


def build_classifier(model_name: str = "ViT-B-16", checkpoint: str | os.PathLike | None = None,
                     labels: Sequence[Label] = DEFAULT_LABELS, device: str | torch.device = "auto",
                     precision: str = "fp32", crop_margin: float = DEFAULT_CROP_MARGIN,
                     background: str | Sequence[int] | None = DEFAULT_BACKGROUND, batch_size: int = 32,
                     min_score: float = 0.0) -> Classifier:
    """A CN-CLIP classifier, or the NullClassifier when ``model_name`` is '' or 'none'.

    model_name: one of MODELS or a path to a JSON file with a merged cn_clip config. checkpoint: a
    CN-CLIP checkpoint (pretrained or fine-tuned); None builds random weights (tests and timing only)
    and warns. crop_margin (a fraction of the mask's box size) / background: the crop policy of
    crops.py. min_score: under it the class is UNKNOWN. batch_size: crops per encoder forward.
    """
    if model_name.strip().lower() in NO_CLASSIFIER:
        log.info("no classifier configured: every instance is published as UNKNOWN with empty scores")
        return NullClassifier()
    labels = validate_labels(tuple(labels))
    dev = resolve_device(device)
    check_options(dev, precision, crop_margin, background, batch_size, min_score)  # before building a model
    model = build_clip_model(model_name)
    if checkpoint is None:
        warnings.warn(f"CN-CLIP {model_name}: no checkpoint given, using RANDOM weights (classes are meaningless)",
                      RuntimeWarning, stacklevel=2)
    else:
        load_clip_checkpoint(model, checkpoint, model_name)
    short = os.path.splitext(os.path.basename(model_name))[0] if model_name not in MODELS else model_name
    return CnClipClassifier(model, labels, device=dev, precision=precision, crop_margin=crop_margin,
                            background=background, batch_size=batch_size, min_score=min_score,
                            name=f"cn_clip:{short}")
