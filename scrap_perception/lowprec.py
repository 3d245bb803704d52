"""Weights cast to the autocast dtype once, when a model is built, instead of by autocast at every call.

Under ``torch.autocast`` the Linear, convolution and attention-projection ops cast their float32 weights
to bf16 / fp16 on every call (CN-CLIP ViT-B-16: 86 M parameters per crop batch). Casting exactly the
tensors those ops consume, and nothing else, leaves every op's inputs as autocast would make them: the
outputs are bitwise equal (tested), norms, embeddings and buffers stay float32, and the model still runs
under autocast (which casts the activations). Only for inference: trained parameters must stay float32.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

#: Modules whose ``weight`` and ``bias`` only feed ops autocast runs in low precision.
MATMUL_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                  nn.ConvTranspose3d)
_MHA_PARAMS = ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def low_precision_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``module`` itself for float32, else a copy with ``cast_matmul_weights``: the original stays float32
    for whoever shares it (an fp32 pipeline on the same modules, fine-tuning)."""
    if dtype == torch.float32:
        return module
    out = copy.deepcopy(module)
    cast_matmul_weights(out, dtype)
    return out


def cast_matmul_weights(module: nn.Module, dtype: torch.dtype) -> int:
    """Casts, in place, the parameters of ``module``'s Linear / conv modules and the input projections of
    its nn.MultiheadAttention modules to ``dtype``; returns how many tensors changed (0 for float32)."""
    if dtype == torch.float32:
        return 0
    count = 0
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, MATMUL_MODULES):
                names: tuple[str, ...] = ("weight", "bias")
            elif isinstance(m, nn.MultiheadAttention):  # its out_proj is an nn.Linear
                names = _MHA_PARAMS
            else:
                continue
            for name in names:
                p = getattr(m, name, None)
                if isinstance(p, nn.Parameter) and p.is_floating_point() and p.dtype != dtype:
                    p.data = p.data.to(dtype)
                    count += 1
    return count
