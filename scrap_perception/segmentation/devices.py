"""Device and precision choices shared by the backends.

Weights stay float32; reduced precision runs under ``torch.autocast``, which keeps numerically fragile
ops (layer norms, softmax) in float32 and works the same on CPU (bf16) and CUDA (bf16/fp16).
"""
from __future__ import annotations

import contextlib
import logging
import warnings

import torch

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Prompts decoded per mask-decoder call. On this 2-core CPU one prompt per call is ~2x faster than
# large batches (measured); GPUs amortise kernel launches over large batches.
DEFAULT_CHUNK_SIZE = {"cpu": 1, "cuda": 64}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when available, else the CPU; an unavailable CUDA request is an error."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as e:
            raise ValueError(f"device={device!r} is not a device ('auto', 'cpu', 'cuda', 'cuda:1'): {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available on this machine")
    return dev


def resolve_precision(precision: str, device: torch.device, model_type: str = "") -> torch.dtype:
    """Maps 'fp32'/'bf16'/'fp16' to a dtype; warns for fp16 on ViT-H (known to produce garbage masks)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} must be one of {sorted(PRECISIONS)}")
    if precision == "fp16" and model_type.endswith("vit_h"):
        msg = (f"precision='fp16' with {model_type}: SAM ViT-H overflows in float16 and is known to produce "
               "garbage masks; use 'bf16' or 'fp32'")
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        log.warning(msg)
    return PRECISIONS[precision]


def default_chunk_size(device: torch.device) -> int:
    return DEFAULT_CHUNK_SIZE.get(device.type, 1)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for ``dtype`` on ``device``; a no-op for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
