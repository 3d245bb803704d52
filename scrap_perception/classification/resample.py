"""Bicubic resize of many differently sized crops to one square size in batched operations,
bit-identical to Pillow's ``Image.resize((s, s), BICUBIC)``, which cn_clip's ``image_transform`` runs.

Pillow resizes separably: per output pixel a weighted sum over the taps of a bicubic (a = -0.5)
filter stretched by the scale factor, with weights in fixed point (22 fractional bits), rounded back
to uint8 between the two passes. We reproduce that arithmetic exactly. Each pass is one sparse x dense
matrix product over a batch of crops (the diagonal blocks of the sparse matrix; crops of similar size
are batched together, see ``_groups``). On CPU it
runs in int32 like Pillow's own loops (every partial sum stays below 2**31); where integer sparse
products are not available (CUDA) in float64, where every product and partial sum is an integer far
below 2**53, so the result is exact in any summation order.
"""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np
import PIL
import torch

_BITS = 22  # Pillow's PRECISION_BITS for 8-bit images: 32 - 8 (result) - 2 (headroom)
_ONE = float(1 << _BITS)
# Pillow >= 13 runs the vertical pass first when the height shrinks much more than the width (Pillow
# PR 9549); the condition in ``vertical_first`` was measured on Pillow 13.0 and is checked by the tests.
_VERTICAL_FIRST_RULE = int(PIL.__version__.split(".")[0]) >= 13
# Bound on the elements of one pass's dense input; larger batches are split.
_MAX_ELEMENTS = 8_000_000


def _bicubic(x: np.ndarray) -> np.ndarray:
    """Pillow's bicubic kernel with a = -0.5, with its exact sequence of double operations."""
    x = np.abs(x)
    near = ((-0.5 + 2.0) * x - (-0.5 + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * -0.5
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def bicubic_weights(in_sizes: np.ndarray, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's fixed-point resampling weights for resizing lengths ``in_sizes`` (N,) to ``out_size``.

    Returns first (N, out_size) int64: first source index of each output's taps, and weights
    (N, out_size, K) int64: the tap weights (zero past the taps a row uses), summing to ~2**22.
    """
    in_sizes = np.asarray(in_sizes, np.float64)
    scale = in_sizes / out_size
    filterscale = np.maximum(scale, 1.0)
    support = 2.0 * filterscale
    ksize = int(math.ceil(support.max())) * 2 + 1
    center = (np.arange(out_size) + 0.5)[None, :] * scale[:, None]
    first = np.maximum(np.trunc(center - support[:, None] + 0.5), 0)
    count = np.minimum(np.trunc(center + support[:, None] + 0.5), in_sizes[:, None]) - first
    taps = np.arange(ksize, dtype=np.float64)
    w = _bicubic((taps + first[..., None] - center[..., None] + 0.5) * (1.0 / filterscale)[:, None, None])
    w = np.where(taps < count[..., None], w, 0.0)
    total = np.zeros_like(center)
    for t in range(ksize):  # Pillow sums the taps in order; numpy's pairwise sum would round differently
        total = total + w[..., t]
    w = w / np.where(total != 0.0, total, 1.0)[..., None]
    fixed = np.trunc(np.where(w < 0, w * _ONE - 0.5, w * _ONE + 0.5))
    return first.astype(np.int64), fixed.astype(np.int64)


def vertical_first(h: int, w: int, size: int) -> bool:
    """Whether the installed Pillow resizes an (h, w) image to (size, size) vertical pass first."""
    return _VERTICAL_FIRST_RULE and h > size and h - size > 2 * (w - size)


def exact_dtype(device: torch.device) -> torch.dtype:
    """The dtype the passes compute in: int32 where torch has integer sparse products (CPU), else
    float64 (exact too: see the module docstring)."""
    return torch.int32 if device.type == "cpu" else torch.float64


def _pass(x: torch.Tensor, lengths: Sequence[int], stride: int, size: int) -> torch.Tensor:
    """One separable pass: resamples the leading axis of every crop to ``size``.

    x: (rows, F) int32 or float64 holding uint8 values. Crop i owns ``lengths[i]`` rows: packed one
    after another when ``stride`` is 0, else starting at row i * stride. Returns (N * size, F) uint8,
    row i * size + j = output j of crop i.
    """
    n = len(lengths)
    first, weights = bicubic_weights(np.asarray(lengths), size)
    starts = np.arange(n) * stride if stride else np.concatenate([[0], np.cumsum(lengths)[:-1]])
    k = weights.shape[-1]
    rows = np.broadcast_to(np.arange(n * size).reshape(n, size, 1), weights.shape)
    cols = starts[:, None, None] + first[..., None] + np.arange(k)
    keep = weights != 0
    index = torch.from_numpy(np.stack([rows[keep], cols[keep]]))
    values = torch.from_numpy(weights[keep]).to(x.dtype)
    # Row-major (crop, output, tap) order is sorted and unique: already coalesced.
    matrix = torch.sparse_coo_tensor(index, values, (n * size, x.shape[0]), is_coalesced=True,
                                     check_invariants=False).to(x.device)
    y = torch.sparse.mm(matrix, x).add_(1 << (_BITS - 1))
    # Pillow's clip8: (sum + 2**21) >> 22, clamped to 0..255 (multiplying by 2**-22 is exact).
    y = y.bitwise_right_shift_(_BITS) if x.dtype == torch.int32 else y.mul_(1.0 / _ONE).floor_()
    return y.clamp_(0, 255).to(torch.uint8)


def _resize_group(crops: Sequence[np.ndarray], size: int, device: torch.device) -> torch.Tensor:
    # Orient each crop so its first pass runs along axis 0; pack those axes one after another and pad
    # the other axis to the longest one.
    vfirst = [vertical_first(c.shape[0], c.shape[1], size) for c in crops]
    oriented = [c if v else cv2.transpose(c) for c, v in zip(crops, vfirst)]  # cv2: ~10x numpy's strided copy
    lengths = [c.shape[0] for c in oriented]
    others = [c.shape[1] for c in oriented]
    m = max(others)
    packed = np.zeros((sum(lengths), m, 3), np.uint8)
    row = 0
    for c in oriented:
        packed[row:row + c.shape[0], :c.shape[1]] = c
        row += c.shape[0]
    dtype = exact_dtype(device)
    x = torch.from_numpy(packed).to(device).to(dtype).view(row, m * 3)
    y = _pass(x, lengths, 0, size)  # (N * size, m * 3): (crop, first-axis out, other axis, channel)
    n = len(crops)
    y = y.view(n, size, m, 3).transpose(1, 2).reshape(n * m, size * 3).to(dtype)
    z = _pass(y, others, m, size).view(n, size, size, 3)  # (crop, other-axis out, first-axis out, channel)
    # Horizontal-first crops came in transposed, so z holds them as (y, x); vertical-first as (x, y).
    flip = [i for i, v in enumerate(vfirst) if v]
    if flip:
        z[flip] = z[flip].transpose(1, 2)
    return z


def resize_crops(crops: Sequence[np.ndarray], size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Resizes RGB uint8 crops (h_i, w_i, 3) of any sizes to a (N, size, size, 3) uint8 tensor on
    ``device``, exactly as ``PIL.Image.fromarray(crop).resize((size, size), Image.BICUBIC)`` does."""
    device = torch.device(device)
    if not crops:
        return torch.zeros((0, size, size, 3), dtype=torch.uint8, device=device)
    for i, c in enumerate(crops):
        if c.dtype != np.uint8 or c.ndim != 3 or c.shape[2] != 3 or c.shape[0] < 1 or c.shape[1] < 1:
            raise ValueError(f"crop {i}: expected a non-empty (h, w, 3) uint8 array, got {c.dtype} {c.shape}")
    out = torch.empty((len(crops), size, size, 3), dtype=torch.uint8, device=device)
    for group in _groups(crops, size):
        out[group] = _resize_group([crops[i] for i in group], size, device)
    return out


def _groups(crops: Sequence[np.ndarray], size: int) -> list[list[int]]:
    """Crop indices batched together: of similar length along the axis the first pass keeps (padded to
    the group's longest, and padding costs as much as pixels), and bounded in memory."""
    def kept(i: int) -> int:
        h, w = crops[i].shape[:2]
        return w if vertical_first(h, w, size) else h

    groups: list[list[int]] = []
    rows = 0
    for i in sorted(range(len(crops)), key=kept):
        length = crops[i].shape[0] + crops[i].shape[1]
        if not groups or kept(i) > 1.5 * kept(groups[-1][0]) or (rows + length) * kept(i) * 3 > _MAX_ELEMENTS:
            groups.append([])
            rows = 0
        groups[-1].append(i)
        rows += length
    return groups
