"""Builds a SAM-family model and fills it from a full checkpoint and/or a decoder-only checkpoint.

Files are read only through ``scrap_perception.checkpoints`` (``weights_only=True``, strict keys), and
both are read and checked before any weight is allocated: a missing, damaged or wrong file fails in a
moment even for vit_h. Model types with ``meta_init`` are then built on the meta device and take the
checkpoint's tensors as their own (no random initialisation, no second copy); the others (TinyViT)
are built normally and the checkpoint copied in. Errors name the parameter, the file and what the
file's keys look like.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Mapping, Optional

import torch

from ..checkpoints import CheckpointError, assign_into, check_state, load_checkpoint, one_line
from ..notices import notify
from .registry import ModelSpec, describe_state, resolve_model_type

log = logging.getLogger(__name__)

# TinyViT keeps an ImageNet classifier head that SAM never runs; a file may leave it out.
UNUSED_PREFIXES = ("image_encoder.head.", "image_encoder.norm_head.")


def load_model(spec: ModelSpec, checkpoint: Optional[str | os.PathLike] = None,
               decoder_checkpoint: Optional[str | os.PathLike] = None, arch: Optional[Mapping] = None,
               device: torch.device = torch.device("cpu")) -> torch.nn.Module:
    """The model of ``spec`` on ``device`` in eval mode; random weights (with a warning) without checkpoint."""
    target = f"the segmenter's model type is {spec.name}" + (f" with arch {dict(arch)}" if arch else "")
    expected = f"a full {spec.name} checkpoint (e.g. {spec.official_file or 'see the model docs'})"
    full = decoder = None
    if checkpoint is not None:
        full = load_checkpoint(checkpoint, param="checkpoint", expected=expected, map_location=device)[0]
    if decoder_checkpoint is not None:
        decoder = load_checkpoint(decoder_checkpoint, param="decoder_checkpoint", expected=decoder_expected(spec),
                                  map_location=device)
    meta = spec.meta_init  # the shapes to check cost nothing: real tensors come from the file or a real build
    with torch.device("meta") if meta else contextlib.nullcontext():
        sam = spec.builder(spec, arch)
    if full is not None:
        own = sam.state_dict()
        full = {**{k: v for k, v in own.items() if k.startswith(UNUSED_PREFIXES)}, **full}
        check_state(own, full, param="checkpoint", path=os.fspath(checkpoint), expected=expected, target=target,
                    describe=describe_state)
    if decoder is not None:
        check_decoder(spec, sam.mask_decoder, *decoder, os.fspath(decoder_checkpoint), target)
    # Everything is checked: only now are weights made, or the files' tensors put into the model.
    if full is None:
        msg = (f"segmenter {spec.name}: no checkpoint given, using RANDOM weights (masks are meaningless; "
               f"for tests and timing only). Official weights: {spec.official_file or 'see the model docs'}")
        notify(log, msg, stacklevel=4)
        if meta:
            sam = spec.builder(spec, arch)
    elif meta:
        assign_into(sam, full)  # the file's tensors, already on the device, become the model's own
    else:
        sam.load_state_dict(full, strict=True)
    sam.to(device)
    if decoder is not None:
        sam.mask_decoder.load_state_dict(decoder[0], strict=True)
        log.info("segmenter %s: mask decoder loaded from %s", spec.name, decoder_checkpoint)
    return sam.eval()  # eval() also refreshes what modules derive from their weights (TinyViT's attention biases)


def decoder_expected(spec: ModelSpec) -> str:
    return f"a {spec.name} mask-decoder checkpoint (mask_decoder.state_dict(), keys without prefix)"


def check_decoder(spec: ModelSpec, decoder: torch.nn.Module, state: Mapping[str, torch.Tensor],
                  meta: Mapping[str, object], path: str, target: str) -> None:
    """CheckpointError unless a decoder-only checkpoint (keys without 'mask_decoder.') fits ``decoder``."""
    expected = decoder_expected(spec)
    check_state(decoder.state_dict(), state, param="decoder_checkpoint", path=path, expected=expected,
                target=target, describe=describe_state)
    # Decoders of the SAM ViT sizes share shapes: only the file's own model_type tells them apart.
    written_for = meta.get("model_type")
    if isinstance(written_for, str):
        try:
            other = resolve_model_type(written_for).name
        except ValueError:
            other = one_line(written_for, 40)
        if other != spec.name:
            raise CheckpointError(f"decoder_checkpoint={path!r}: a mask decoder fine-tuned for {other}, "
                                  f"not for the segmenter's {spec.name}; expected {expected}")
