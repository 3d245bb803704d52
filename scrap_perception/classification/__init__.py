"""Shape classification of mask crops with CN-CLIP.

``build_classifier`` is the entry point; ``prepare_crops`` / ``crop_images`` are what fine-tuning uses,
so training and inference see identical crops. torch and cn_clip load when a model is built (or a
name below that needs them is first used), not when this package is imported.
"""
from __future__ import annotations

import importlib
import logging
import os
from dataclasses import replace
from typing import Any, Optional

from ..notices import notify
from .base import Classification, Classifier, NullClassifier
from .config import DEFAULT_BACKGROUND, DEFAULT_CROP_MARGIN, NO_CLASSIFIER, ClassifierConfig

# Names served lazily (module __getattr__): importing them loads torch, and cn_clip for the models.
_LAZY = {
    "CnClipClassifier": "cn_clip_backend", "check_options": "cn_clip_backend",
    "BACKGROUNDS": "crops", "CLIP_MEAN": "crops", "CLIP_STD": "crops", "crop_box": "crops", "crop_images": "crops",
    "parse_background": "crops", "prepare_crops": "crops",
    "MODELS": "clip_models", "OFFICIAL_FILES": "clip_models", "build_clip_model": "clip_models",
    "load_clip_checkpoint": "clip_models", "model_config": "clip_models", "small_clip_config": "clip_models",
    "encode_labels": "text_features",
}

__all__ = ["Classification", "Classifier", "ClassifierConfig", "NullClassifier", "build_classifier",
           "DEFAULT_BACKGROUND", "DEFAULT_CROP_MARGIN", "NO_CLASSIFIER", *_LAZY]

log = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_classifier(config: ClassifierConfig | str = "ViT-B-16",
                     checkpoint: Optional[str | os.PathLike] = None, **overrides: Any) -> Classifier:
    """A CN-CLIP classifier of ``config``: a ClassifierConfig, or a model name with the checkpoint and other
    ClassifierConfig fields as keywords (``build_classifier("ViT-B-16", path, device="cpu")``); the
    NullClassifier when the model is '' or 'none'."""
    if checkpoint is not None:
        overrides["checkpoint"] = checkpoint
    cfg = (replace(config, **overrides) if isinstance(config, ClassifierConfig)
           else ClassifierConfig(config, **overrides))
    if cfg.disabled:
        log.info("no classifier configured: every instance is published as UNKNOWN with empty scores")
        return NullClassifier()
    from ..devices import resolve_device
    from ..labels import validate_labels
    from .clip_models import MODELS, load_clip_model
    from .cn_clip_backend import CnClipClassifier, check_options
    labels = validate_labels(tuple(cfg.labels))
    dev = resolve_device(cfg.device)
    check_options(dev, cfg.precision, cfg.crop_margin, cfg.background, cfg.batch_size, cfg.min_score)  # before building
    model = load_clip_model(cfg.model, cfg.checkpoint)  # the file is checked before any weight is allocated
    if cfg.checkpoint is None:
        notify(log, f"CN-CLIP {cfg.model}: no checkpoint given, using RANDOM weights (classes are meaningless)",
               RuntimeWarning)
    short = os.path.splitext(os.path.basename(cfg.model))[0] if cfg.model not in MODELS else cfg.model
    return CnClipClassifier(model, labels, device=dev, precision=cfg.precision, crop_margin=cfg.crop_margin,
                            background=cfg.background, batch_size=cfg.batch_size, min_score=cfg.min_score,
                            name=f"cn_clip:{short}", cast_weights=cfg.cast_weights)
