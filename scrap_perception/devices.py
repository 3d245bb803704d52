"""Device and precision choices shared by both engines and the tools.

Weights stay float32; reduced precision runs under ``torch.autocast``, which keeps numerically fragile
ops (layer norms, softmax) in float32 and works the same on CPU (bf16) and CUDA (bf16/fp16).
torch is imported inside the functions: the parameter checks import this module without loading torch.
"""
from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: Precision names accepted by both engines, the node and the tools.
PRECISIONS = ("fp32", "bf16", "fp16")
#: What a device option may say: 'auto' picks CUDA when available.
DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def dtype_of(precision: str) -> "torch.dtype":
    """'fp32' | 'bf16' | 'fp16' -> the torch dtype; ValueError for anything else."""
    import torch

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"precision={precision!r} must be one of {sorted(PRECISIONS)}")
    return dtypes[precision]


def resolve_device(device: "str | torch.device" = "auto") -> "torch.device":
    """'auto' picks CUDA when available, else the CPU; an unavailable CUDA request is an error."""
    import torch

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


def autocast(device: "torch.device", dtype: "torch.dtype") -> contextlib.AbstractContextManager:
    """Mixed precision for ``dtype`` on ``device``; a no-op for float32."""
    import torch

    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
