"""What the models compute per frame against what the device can compute: FLOPs of the real forwards
(``torch.utils.flop_counter``), the device's measured GEMM peak at the run's precision and thread count,
and the fraction of that peak each model reaches in the floor's time.

FLOPs are counted once per unit on the floor's own callables (one image through the image encoder, one
prompt through prompt encoder + mask decoder, one crop through CN-CLIP's image encoder) and scaled by
the frame set's images, prompts and crops: every part's cost is linear in its batch (tested). A
multiply-add counts 2 FLOPs, as the counter does; elementwise ops count nothing.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .timing import Clock

# The CPU's fused attention kernel is missing from torch's flop registry: without it CN-CLIP's attention
# (nn.MultiheadAttention -> scaled_dot_product_attention) would count as 0.
_CUSTOM = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
           lambda q, k, v, *args, **kwargs: sdpa_flop_count(q, k, v)}
# GEMM side of the peak microbenchmark: large enough to reach the peak, one call well under a second.
PEAK_SIZE = {"cpu": 2048, "cuda": 8192}
PARTS = ("encoder", "decoder", "clip_image")


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (matmuls, convolutions, attention)."""
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=_CUSTOM) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_flops(device: torch.device, dtype: torch.dtype, clock: Clock, size: int | None = None,
               repeats: int = 7) -> dict[str, Any]:
    """The device's GEMM throughput (FLOP/s, the fastest of ``repeats`` after two warm-ups: a peak, and
    the least disturbed by other processes) for square ``size`` matrices of ``dtype``, at torch's current
    thread count."""
    size = size or PEAK_SIZE.get(device.type, 2048)
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(device=device, dtype=dtype) for _ in range(2))
    times = []
    with torch.inference_mode():
        for i in range(repeats + 2):
            t0 = clock.now()
            torch.mm(a, b)
            if i >= 2:
                times.append(clock.now() - t0)
    seconds = min(times)
    return {"flop_per_s": 2 * size**3 / seconds, "size": size, "dtype": str(dtype).replace("torch.", ""),
            "threads": torch.get_num_threads(), "device": str(device)}


def unit_flops(floor: Any, image_hw: tuple[int, int]) -> dict[str, int]:
    """FLOPs of one image (encoder), one box+point prompt (decoder) and one crop (CN-CLIP) on the floor's
    modules (tools.bench.floor.Floor); the prompt is one of a frame of ``image_hw``.

    Counted on the float32 modules the engines' low-precision copies come from: autocast changes dtypes,
    not shapes, and torch's counter fails on einsum under autocast (SAM ViT's relative positions)."""
    fp32 = copy.copy(floor)  # the same inputs
    fp32.dtype = fp32.clip_dtype = torch.float32
    fp32.image_encoder, fp32.visual = floor.sam.image_encoder, floor.clip.visual
    h, w = image_hw
    box = np.array([[0.25 * w, 0.25 * h, 0.5 * w, 0.5 * h]])
    return {"encoder": count_flops(fp32.encoder(1)),
            "decoder": count_flops(fp32.decoder(fp32.prompt_tensors(box, image_hw), 1)),
            "clip_image": count_flops(fp32.crops(lambda: 1, 1))}


def frame_flops(unit: Mapping[str, int], images: int, prompts: int, crops: int) -> dict[str, int]:
    """FLOPs of each part of a frame set: ``images`` encoded, ``prompts`` decoded, ``crops`` classified."""
    return {"encoder": unit["encoder"] * images, "decoder": unit["decoder"] * prompts,
            "clip_image": unit["clip_image"] * crops}


def peak_fractions(flops: Mapping[str, float], seconds: Mapping[str, float], peak: float) -> dict[str, float]:
    """Per part (and ``total``): FLOPs / seconds / peak FLOP/s, the share of the GEMM peak reached."""
    out = {k: flops[k] / seconds[k] / peak for k in flops if seconds.get(k, 0) > 0}
    total_s = sum(seconds[k] for k in flops if k in seconds)
    if total_s > 0:
        out["total"] = sum(flops.values()) / total_s / peak
    return out
