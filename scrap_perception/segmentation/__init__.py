"""Segmentation engine: SAM-family backends and a weight-free GrabCut fallback behind one interface.

    seg = build_segmenter(SegmenterConfig("vit_t", checkpoint="mobile_sam.pt"))
    seg.set_image(rgb)                                   # encode once per frame
    masks = seg.segment([box_point_prompt(box)])         # all prompts of the frame
    everything = AutomaticMaskGenerator(seg).generate(rgb)   # strategy S1 (SAM backends)

torch and the model packages load when a model is built, not when this package is imported.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import replace
from typing import Any, Optional

from .base import EncodedImage, Segmenter
from .config import MULTIMASK_CHOICES, SegmenterConfig

# Names served lazily (module __getattr__): importing them loads torch.
_LAZY = {"build_sam_model": "registry", "describe_state": "registry", "register_model_type": "registry",
         "resolve_model_type": "registry", "ModelSpec": "registry", "MODEL_TYPES": "registry",
         "AutomaticMaskGenerator": "automatic"}

__all__ = ["build_segmenter", "EncodedImage", "Segmenter", "SegmenterConfig", "MULTIMASK_CHOICES", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_segmenter(config: SegmenterConfig | str, checkpoint: Optional[str | os.PathLike] = None,
                    **overrides: Any) -> Segmenter:
    """The segmenter of ``config``: a SegmenterConfig, or a model type with the checkpoint and other
    SegmenterConfig fields as keywords (``build_segmenter("vit_t", "mobile_sam.pt", device="cpu")``)."""
    if checkpoint is not None:
        overrides["checkpoint"] = checkpoint
    cfg = replace(config, **overrides) if isinstance(config, SegmenterConfig) else SegmenterConfig(config, **overrides)
    if cfg.weight_free:
        if cfg.checkpoint is not None or cfg.decoder_checkpoint is not None:
            raise ValueError("segmenter 'grabcut' takes no checkpoint")
        from .grabcut import GrabCutSegmenter
        return GrabCutSegmenter()
    from .devices import resolve_device, resolve_precision
    from .loading import load_model
    from .registry import resolve_model_type
    from .sam_backend import SamSegmenter
    spec = resolve_model_type(cfg.model_type)
    dev = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, dev, spec.name)
    model = load_model(spec, cfg.checkpoint, cfg.decoder_checkpoint, cfg.arch, dev)
    return SamSegmenter(model, spec, dev, dtype, cfg.chunk_size, hq_token_only=cfg.hq_token_only,
                        multimask=cfg.multimask, encoder_batch=cfg.encoder_batch, cast_weights=cfg.cast_weights,
                        channels_last=cfg.channels_last)
