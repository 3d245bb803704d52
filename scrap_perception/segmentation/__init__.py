"""Segmentation engine: SAM-family backends and a weight-free GrabCut fallback behind one interface.

    seg = build_segmenter("vit_t", checkpoint="mobile_sam.pt")
    seg.set_image(rgb)                                   # encode once per frame
    masks = seg.segment([box_point_prompt(box)])         # all prompts of the frame
    everything = seg.generate(rgb, points_per_side=32)   # strategy S1 (SAM backends)
"""
from __future__ import annotations

import os
from typing import Mapping, Optional

from .base import EncodedImage, Segmenter
from .devices import resolve_device, resolve_precision
from .registry import MODEL_TYPES, ModelSpec, build_sam_model, describe_state, register_model_type, resolve_model_type

__all__ = ["build_segmenter", "build_sam_model", "describe_state", "register_model_type", "resolve_model_type",
           "EncodedImage", "Segmenter", "ModelSpec", "MODEL_TYPES"]


def build_segmenter(model_type: str, checkpoint: Optional[str | os.PathLike] = None, device: str = "auto",
                    precision: str = "fp32", decoder_checkpoint: Optional[str | os.PathLike] = None,
                    chunk_size: Optional[int] = None, arch: Optional[Mapping] = None,
                    hq_token_only: bool = False, multimask: str = "auto",
                    encoder_batch: Optional[int] = None) -> Segmenter:
    """A segmenter for ``model_type``: 'vit_b' | 'vit_l' | 'vit_h' (SAM), 'vit_t' | 'mobile_sam:vit_t'
    (MobileSAM), 'hq:vit_b' | 'hq:vit_l' | 'hq:vit_h' | 'hq:vit_tiny' (SAM-HQ), or 'grabcut' (no weights).

    checkpoint: a full model checkpoint (None: random weights, with a warning); decoder_checkpoint: a
    fine-tuned mask decoder replacing the stock one; device: 'auto' | 'cpu' | 'cuda[:n]'; precision:
    'fp32' | 'bf16' | 'fp16'; chunk_size: prompts per decoder call (None: per-device default);
    encoder_batch: images per image-encoder call when several are encoded (None: per-device default);
    arch: encoder size overrides for small models (registry.VIT_ARCH / TINY_VIT_ARCH keys);
    hq_token_only: SAM-HQ returns its HQ-token mask alone instead of adding it to SAM's mask.
    multimask: 'auto' (single mask for boxes and point sets, best of three for one point), 'single' or 'best'.
    """
    if model_type.strip().lower() == "grabcut":
        if checkpoint is not None or decoder_checkpoint is not None:
            raise ValueError("segmenter 'grabcut' takes no checkpoint")
        from .grabcut import GrabCutSegmenter
        return GrabCutSegmenter()
    from .loading import load_model
    from .sam_backend import SamSegmenter
    spec = resolve_model_type(model_type)
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev, spec.name)
    model = load_model(spec, checkpoint, decoder_checkpoint, arch, dev)
    return SamSegmenter(model, spec, dev, dtype, chunk_size, hq_token_only=hq_token_only, multimask=multimask,
                        encoder_batch=encoder_batch)
