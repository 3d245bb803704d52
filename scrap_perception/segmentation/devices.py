"""Segmenter-specific device and precision choices (the shared ones are in scrap_perception.devices)."""
from __future__ import annotations

import logging

import torch

from ..devices import PRECISIONS, autocast, dtype_of, precision_of, resolve_device, resolve_precision_name
from ..notices import notify

__all__ = ["PRECISIONS", "autocast", "precision_of", "resolve_device", "resolve_precision", "default_chunk_size",
           "default_encoder_batch"]

log = logging.getLogger(__name__)

# Prompts decoded per mask-decoder call: on CPUs small calls are faster, two prompts per call fastest
# with MobileSAM at fp32 and bf16 (README, Performance); GPUs amortise kernel launches over large batches.
DEFAULT_CHUNK_SIZE = {"cpu": 2, "cuda": 64}
# Images per image-encoder call: on CPUs a batch is slower per image than one at a time (README,
# Benchmark); GPUs run a batch of cameras faster than its images apart.
DEFAULT_ENCODER_BATCH = {"cpu": 1, "cuda": 8}


def resolve_precision(precision: str, device: torch.device, model_type: str = "") -> torch.dtype:
    """Maps 'auto' (resolved for ``device``, see scrap_perception.devices) / 'fp32' / 'bf16' / 'fp16' to a
    dtype; warns for fp16 on ViT-H (known to produce garbage masks)."""
    precision = resolve_precision_name(precision, device, "segmenter precision")
    dtype = dtype_of(precision)
    if precision == "fp16" and model_type.endswith("vit_h"):
        msg = (f"precision='fp16' with {model_type}: SAM ViT-H overflows in float16 and is known to produce "
               "garbage masks; use 'bf16' or 'fp32'")
        notify(log, msg, RuntimeWarning, stacklevel=4)
    return dtype


def default_chunk_size(device: torch.device) -> int:
    return DEFAULT_CHUNK_SIZE.get(device.type, 1)


def default_encoder_batch(device: torch.device) -> int:
    return DEFAULT_ENCODER_BATCH.get(device.type, 1)
