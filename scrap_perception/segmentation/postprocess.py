"""Low-resolution mask logits -> full-resolution masks, computed only inside each mask's ROI.

``Sam.postprocess_masks`` upsamples every (L, L) low-res logit map (L = 256 for a 1024 input) bilinearly to
the padded input (S, S), crops the valid (h, w) part and upsamples bilinearly again to the original
(H, W) image: a full frame per mask, although a detected object covers a small part of it.

Both steps are linear and separable: along each axis, an output sample is a fixed non-negative
combination of at most a few adjacent low-res samples (its "taps"), with weights taken from PyTorch's
own interpolation kernels. So an output pixel can exceed a threshold only if a low-res pixel among its
taps does: each mask's ROI follows exactly from its low-res logits above the threshold (no heuristic
margin), and only that window is computed, by gathering taps. Same values as the full upsampling up
to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..masks import InstanceMask

# Elements of padded windows computed in one batch (bounds memory: 16M floats = 64 MB).
WINDOW_BUDGET = 1 << 24
# Windows above this fraction of the frame take PyTorch's full-frame interpolation kernels instead:
# gathering taps costs a few times more per pixel, worth it only for windows well under the frame.
DENSE_FRACTION = 0.25


def any_along(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x.any(dim)`` of a bool tensor, as the max of its bytes: torch's bool reduction runs ~50x slower on
    the CPU (114 ms against 2 ms for 20 frame-sized masks)."""
    if x.shape[dim] == 0:  # amax refuses an empty reduction; any() says False
        return x.any(dim)
    return x.view(torch.uint8).amax(dim).bool()


def axis_matrix(low_res: int, image_size: int, input_len: int, original_len: int) -> torch.Tensor:
    """(original_len, low_res) weights of one axis of Sam.postprocess_masks: upsample to image_size,
    keep the first input_len samples, upsample to original_len. Built by running that chain with
    PyTorch's own kernels on the unit vectors, so the weights are exactly the reference's."""
    eye = torch.eye(low_res, dtype=torch.float32)[None]  # (1, L, L): L channels, one unit vector each
    up = F.interpolate(eye, size=image_size, mode="linear", align_corners=False)[..., :input_len]
    return F.interpolate(up, size=original_len, mode="linear", align_corners=False)[0].T.contiguous()


@dataclass
class Windows:
    """Full-resolution logits of N masks inside their ROIs, padded to a common size.

    values: (N, Hw, Ww) float32; the valid part of mask i is values[i, :h[i], :w[i]], whose top-left pixel
    is (y0[i], x0[i]) in the original image. All (N,) int64 tensors; h = w = 0 for an empty window.
    """

    values: torch.Tensor
    y0: torch.Tensor
    x0: torch.Tensor
    h: torch.Tensor
    w: torch.Tensor

    def valid(self) -> torch.Tensor:
        """(N, Hw, Ww) bool: inside each mask's window."""
        hh = torch.arange(self.values.shape[1], device=self.values.device)
        ww = torch.arange(self.values.shape[2], device=self.values.device)
        return (hh[None, :, None] < self.h[:, None, None]) & (ww[None, None, :] < self.w[:, None, None])


def taps(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sparse form of an (n_out, L) axis matrix: tap indices and weights (2 n_out, K), padded with n_out
    zero-weight rows (windows may run past the image end), and each sample's support [lo, hi] (n_out,)."""
    nz = m > 0
    k = int(nz.sum(1).max())
    weights, idx = torch.topk(torch.where(nz, m, 0.0), k, dim=1)  # zero-weight extras point at valid indices
    pad = torch.zeros_like(idx)
    ar = torch.arange(m.shape[1], device=m.device)
    lo = torch.where(nz, ar, m.shape[1]).amin(1)
    hi = torch.where(nz, ar, -1).amax(1)
    return torch.cat([idx, pad]), torch.cat([weights, torch.zeros_like(weights)]), lo, hi


class RoiUpsampler:
    """Upsamples (N, L, L) low-res logits of one image geometry to the original image inside their ROIs.

    low_res: L; image_size: the model's square input S; input_hw: the resized image (h, w) before
    padding; original_hw: the source image (H, W). Tables live on ``device``.
    """

    def __init__(self, low_res: int, image_size: int, input_hw: tuple[int, int], original_hw: tuple[int, int],
                 device: torch.device) -> None:
        self.low_res = low_res
        self.image_size = image_size
        self.input_hw = input_hw
        self.original_hw = original_hw
        self.y_idx, self.y_w, self.y_lo, self.y_hi = taps(
            axis_matrix(low_res, image_size, input_hw[0], original_hw[0]).to(device))
        self.x_idx, self.x_w, self.x_lo, self.x_hi = taps(
            axis_matrix(low_res, image_size, input_hw[1], original_hw[1]).to(device))

    def full(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, H, W) logits at full resolution, computed as Sam.postprocess_masks does.

        The first step (x4) skips the padding: upsampling the first ``a`` low-res rows to 4a rows gives
        the same source coordinates (scale a / 4a = L / S), so rows below 4a - 2 are bit-identical."""
        (ih, iw), factor = self.input_hw, self.image_size // self.low_res
        a, b = min(self.low_res, -(-(ih + 2) // factor)), min(self.low_res, -(-(iw + 2) // factor))
        up = F.interpolate(logits.float()[:, None, :a, :b], (factor * a, factor * b), mode="bilinear",
                           align_corners=False)[..., :ih, :iw]
        return F.interpolate(up, self.original_hw, mode="bilinear", align_corners=False)[:, 0]

    def windows(self, logits: torch.Tensor, threshold: float) -> list[Windows]:
        """Windows covering every pixel of each map whose upsampled value exceeds ``threshold``.

        logits: (N, L, L). Returns the masks in order, in batches whose padded windows fit WINDOW_BUDGET.
        """
        logits = logits.float()
        if logits.shape[0] == 0:
            return []
        ys = self._axis_ranges(logits, threshold, dim=2, lo=self.y_lo, hi=self.y_hi)
        xs = self._axis_ranges(logits, threshold, dim=1, lo=self.x_lo, hi=self.x_hi)
        heights, widths = (ys[1] - ys[0]).tolist(), (xs[1] - xs[0]).tolist()
        frame = self.original_hw[0] * self.original_hw[1]
        dense = [h * w > DENSE_FRACTION * frame for h, w in zip(heights, widths)]
        out, start = [], 0
        while start < len(heights):
            # Consecutive masks of one kind, as many as the budget allows.
            stop, mh, mw = start + 1, heights[start], widths[start]
            if dense[start]:
                mh, mw = self.original_hw
            while stop < len(heights) and dense[stop] == dense[start] and (
                    max(mh, heights[stop]) * max(mw, widths[stop]) * (stop - start + 1) <= WINDOW_BUDGET):
                mh, mw = max(mh, heights[stop]), max(mw, widths[stop])
                stop += 1
            sl = slice(start, stop)
            if dense[start]:
                n = stop - start
                zeros = torch.zeros(n, dtype=torch.long, device=logits.device)
                out.append(Windows(self.full(logits[sl]), zeros, zeros, zeros + self.original_hw[0],
                                   zeros + self.original_hw[1]))
            else:
                out.append(self._compute(logits[sl], [t[sl] for t in ys], [t[sl] for t in xs]))
            start = stop
        return out

    def _axis_ranges(self, logits: torch.Tensor, threshold: float, dim: int, lo: torch.Tensor, hi: torch.Tensor):
        """Output range [o0, o1) and low-res range [l0, l1) along one axis (dim=2: rows, dim=1: columns)."""
        n_valid = int(hi.max()) + 1  # low-res samples beyond it lie in the padding and never contribute
        active = any_along(logits > threshold, dim)[:, :n_valid]  # (N, n_valid)
        idx = torch.arange(n_valid, device=logits.device)
        a0 = torch.where(active, idx, n_valid).amin(1)
        a1 = torch.where(active, idx, -1).amax(1)
        # Output samples whose support meets [a0, a1]: hi[o] >= a0 and lo[o] <= a1 (both monotone in o).
        o0 = torch.searchsorted(hi, a0, right=False)
        o1 = torch.maximum(torch.searchsorted(lo, a1, right=True), o0)
        l0 = lo[o0.clamp(max=len(lo) - 1)]
        l1 = torch.where(o1 > o0, hi[(o1 - 1).clamp(min=0)] + 1, l0)
        return o0, o1, l0, l1

    def _compute(self, logits: torch.Tensor, ys, xs) -> Windows:
        y0, y1, _, _ = ys
        x0, x1, lx0, lx1 = xs
        n, dev = len(logits), logits.device
        h, w = y1 - y0, x1 - x0
        hw, ww = max(int(h.max()), 1), max(int(w.max()), 1)
        lw = max(int((lx1 - lx0).max()), 1)
        # Low-res columns the window needs; a window that would pass the end starts earlier instead.
        lx_start = lx0.clamp(max=self.low_res - lw)
        lr = torch.gather(logits, 2, (lx_start[:, None] + torch.arange(lw, device=dev))[:, None, :]
                          .expand(n, logits.shape[1], lw))  # (N, L, lw)
        # Rows: every output row of the window mixes its taps' low-res rows.
        rows = y0[:, None] + torch.arange(hw, device=dev)  # may run into the zero-weight padding rows
        tmp = torch.zeros((n, hw, lw), device=dev)
        for k in range(self.y_idx.shape[1]):
            src = self.y_idx[rows, k]
            tmp += self.y_w[rows, k][..., None] * torch.gather(lr, 1, src[..., None].expand(n, hw, lw))
        # Columns, likewise, on the row-interpolated window.
        cols = x0[:, None] + torch.arange(ww, device=dev)
        values = torch.zeros((n, hw, ww), device=dev)
        for k in range(self.x_idx.shape[1]):
            src = (self.x_idx[cols, k] - lx_start[:, None]).clamp(0, lw - 1)  # out-of-window taps have 0 weight
            values += self.x_w[cols, k][:, None, :] * torch.gather(tmp, 2, src[:, None, :].expand(n, hw, ww))
        return Windows(values, y0, x0, h, w)


def masks_from_windows(windows: Windows, threshold: float) -> tuple[torch.Tensor, np.ndarray]:
    """(N, 4) int64 tight boxes (x, y, w, h) in the image, and the (N, Hw, Ww) bool window masks on the CPU."""
    binary = windows.values > threshold
    hh, ww = binary.shape[1:]
    if not bool(((windows.h == hh) & (windows.w == ww)).all()):
        binary &= windows.valid()
    rows_any, cols_any = any_along(binary, 2), any_along(binary, 1)
    top = rows_any.float().argmax(1)
    bottom = hh - 1 - rows_any.flip(1).float().argmax(1)
    left = cols_any.float().argmax(1)
    right = ww - 1 - cols_any.flip(1).float().argmax(1)
    empty = ~rows_any.any(1)
    boxes = torch.stack([windows.x0 + left, windows.y0 + top, right - left + 1, bottom - top + 1], 1)
    boxes = torch.where(empty[:, None], torch.zeros_like(boxes), boxes)
    return boxes, binary.cpu().numpy()


def instance_masks(windows: Windows, threshold: float, ious: torch.Tensor,
                   low_res: torch.Tensor | None = None) -> list[InstanceMask]:
    """InstanceMasks (tight ROI + cropped bool mask) from windows; ious: (N,); low_res: (N, L, L) or None."""
    boxes, binary = masks_from_windows(windows, threshold)
    boxes_np = boxes.cpu().numpy()
    offsets = torch.stack([windows.x0, windows.y0], 1).cpu().numpy()
    ious_np = ious.float().cpu().numpy()
    lr_np = low_res.float().cpu().numpy() if low_res is not None else None
    out = []
    for i, (x, y, w, h) in enumerate(boxes_np.tolist()):
        if w == 0:
            roi, crop = (0, 0, 0, 0), np.zeros((0, 0), bool)
        else:
            ox, oy = offsets[i]
            crop = np.ascontiguousarray(binary[i, y - oy:y - oy + h, x - ox:x - ox + w])
            roi = (x, y, w, h)
        out.append(InstanceMask(roi, crop, float(ious_np[i]), None if lr_np is None else lr_np[i]))
    return out
