"""Device and precision choices shared by both engines and the tools.

Weights stay float32; reduced precision runs under ``torch.autocast``, which keeps numerically fragile
ops (layer norms, softmax) in float32 and works the same on CPU (bf16) and CUDA (bf16/fp16).
Precision 'auto' (the engines' default) resolves here, once per engine: bf16 where the device runs it
natively (``bf16_is_fast``), fp32 elsewhere.
torch is imported inside the functions: the parameter checks import this module without loading torch.
"""
from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Iterable, Optional

if TYPE_CHECKING:
    import torch

#: Precisions a model runs at.
PRECISIONS = ("fp32", "bf16", "fp16")
#: What both engines, the node and the tools accept: 'auto' resolves to one of PRECISIONS per device.
PRECISION_CHOICES = ("auto", *PRECISIONS)
#: x86 /proc/cpuinfo flags of native bf16 arithmetic (AVX512-BF16: Zen 4+, Cooper Lake; AMX: Sapphire Rapids+).
#: Without them oneDNN emulates bf16 in float32 code paths, slower than plain fp32.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: CUDA compute capability from which bf16 runs on tensor cores (Ampere); older GPUs emulate it.
BF16_CUDA_CAPABILITY = (8, 0)
#: What a device option may say: 'auto' picks CUDA when available.
DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def dtype_of(precision: str) -> "torch.dtype":
    """'fp32' | 'bf16' | 'fp16' -> the torch dtype; ValueError for anything else."""
    import torch

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"precision={precision!r} must be one of {sorted(PRECISIONS)}")
    return dtypes[precision]


def cpu_flags(cpuinfo: Optional[str] = None) -> frozenset[str]:
    """The CPU feature flags of ``cpuinfo`` (text of /proc/cpuinfo; None reads it): empty where there is none
    (not Linux, or a kernel that hides it), so 'auto' then stays fp32."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return frozenset()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return frozenset(flags)


def bf16_is_fast(device_type: str, flags: Iterable[str] = (),
                 cuda_capability: Optional[tuple[int, int]] = None) -> bool:
    """Whether bf16 runs natively: a CPU with one of BF16_CPU_FLAGS among ``flags``, or a CUDA device of
    ``cuda_capability`` >= BF16_CUDA_CAPABILITY. Pure: the facts are passed in (``device_facts`` reads them)."""
    if device_type == "cpu":
        return any(f in BF16_CPU_FLAGS for f in flags)
    if device_type == "cuda":
        return cuda_capability is not None and tuple(cuda_capability) >= BF16_CUDA_CAPABILITY
    return False


def device_facts(device: "torch.device") -> dict:
    """``bf16_is_fast``'s keywords for this machine's ``device``: CPU flags or the CUDA compute capability."""
    import torch

    if device.type == "cuda":
        return {"cuda_capability": tuple(torch.cuda.get_device_capability(device))}
    return {"flags": cpu_flags()} if device.type == "cpu" else {}


def resolve_precision_name(precision: str, device: "torch.device", name: str = "precision") -> str:
    """'auto' -> 'bf16' where ``bf16_is_fast`` on ``device``, else 'fp32'; 'fp32' | 'bf16' | 'fp16' as given.
    ValueError naming the parameter ``name`` for anything else."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"{name}={precision!r} must be one of {list(PRECISION_CHOICES)}")
    if precision != "auto":
        return precision
    return "bf16" if bf16_is_fast(device.type, **device_facts(device)) else "fp32"


def precision_of(dtype: "torch.dtype") -> str:
    """The precision name of a dtype from ``dtype_of``: torch.bfloat16 -> 'bf16'."""
    import torch

    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


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
