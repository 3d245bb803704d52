"""Builds a SAM-family model and fills it from a full checkpoint and/or a decoder-only checkpoint.

Files are read only through ``scrap_perception.checkpoints`` (``weights_only=True``, strict keys); errors
name the parameter, the file and what the file's keys look like.
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import Mapping, Optional

import torch

from ..checkpoints import CheckpointError, load_checkpoint, load_into, load_state_dict
from .registry import ModelSpec, build_sam_model, describe_state, resolve_model_type

log = logging.getLogger(__name__)

# TinyViT keeps an ImageNet classifier head that SAM never runs; a file may leave it out.
UNUSED_PREFIXES = ("image_encoder.head.", "image_encoder.norm_head.")


def load_model(spec: ModelSpec, checkpoint: Optional[str | os.PathLike] = None,
               decoder_checkpoint: Optional[str | os.PathLike] = None, arch: Optional[Mapping] = None,
               device: torch.device = torch.device("cpu")) -> torch.nn.Module:
    """The model of ``spec`` on ``device`` in eval mode; random weights (with a warning) without checkpoint."""
    sam = build_sam_model(spec.name, arch).to(device)
    if checkpoint is None:
        msg = (f"segmenter {spec.name}: no checkpoint given, using RANDOM weights (masks are meaningless; "
               f"for tests and timing only). Official weights: {spec.official_file or 'see the model docs'}")
        warnings.warn(msg, UserWarning, stacklevel=3)
        log.warning(msg)
    else:
        path = os.fspath(checkpoint)
        expected = f"a full {spec.name} checkpoint (e.g. {spec.official_file})"
        state = load_state_dict(path, param="checkpoint", expected=expected, map_location=device)
        own = sam.state_dict()
        state = dict(state)
        for k in own:
            if k.startswith(UNUSED_PREFIXES) and k not in state:
                state[k] = own[k]
        load_into(sam, state, param="checkpoint", path=path, expected=expected, describe=describe_state)
    if decoder_checkpoint is not None:
        load_decoder(sam, spec, decoder_checkpoint, device)
    return sam.eval()


def load_decoder(sam: torch.nn.Module, spec: ModelSpec, path: str | os.PathLike,
                 device: torch.device = torch.device("cpu")) -> None:
    """Replaces ``sam.mask_decoder``'s weights by a decoder-only checkpoint (keys without 'mask_decoder.')."""
    path = os.fspath(path)
    expected = f"a {spec.name} mask-decoder checkpoint (mask_decoder.state_dict(), keys without prefix)"
    state, meta = load_checkpoint(path, param="decoder_checkpoint", expected=expected, map_location=device)
    load_into(sam.mask_decoder, state, param="decoder_checkpoint", path=path, expected=expected,
              describe=describe_state)
    # Decoders of the SAM ViT sizes share shapes: only the file's own model_type tells them apart.
    written_for = meta.get("model_type")
    if isinstance(written_for, str):
        try:
            other = resolve_model_type(written_for).name
        except ValueError:
            other = written_for
        if other != spec.name:
            raise CheckpointError(f"decoder_checkpoint={path!r}: a mask decoder fine-tuned for {other}, "
                                  f"not for the segmenter's {spec.name}; expected {expected}")
    log.info("segmenter %s: mask decoder loaded from %s", spec.name, path)
