"""Image crops of instance masks, as CN-CLIP sees them at inference and in fine-tuning.

A crop is the mask's ROI (x, y, w, h in image pixels) grown by ``margin`` times its width on the left
and right and ``margin`` times its height above and below, clipped at the image border. Pixels outside
the mask are kept, replaced by a constant RGB colour, or replaced by a blurred copy of the crop.
``prepare_crops`` then resizes every crop to the model's square resolution and normalises it exactly
as cn_clip's ``image_transform`` does (Pillow bicubic, ToTensor, CLIP mean/std), all crops at once.
"""
from __future__ import annotations

import numbers
from typing import Sequence, Union

import cv2
import numpy as np
import torch

from ..masks import InstanceMask, Roi
from .config import DEFAULT_BACKGROUND, DEFAULT_CROP_MARGIN
from .resample import resize_crops

# cn_clip.clip.utils.image_transform's Normalize.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Colour = tuple[int, int, int]
Background = Union[None, str, Colour]  # parsed policy: None = keep, "blur", or a colour
BackgroundSpec = Union[str, Sequence[int], None]

# The constant colours become ~0 after CLIP's normalisation ("mean" exactly), so the model sees nothing
# around the object: the shape is what separates the classes, and a constant surround hides the
# neighbouring scrap a box crop of a pile would show. "blur" keeps the colours of the context only.
BACKGROUNDS: dict[str, Background] = {
    "keep": None,
    "gray": (128, 128, 128),
    "mean": tuple(int(m * 255 + 0.5) for m in CLIP_MEAN),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "blur": "blur",
}


def parse_background(value: BackgroundSpec) -> Background:
    """The background policy: None keeps the pixels outside the mask, an (r, g, b) replaces them,
    "blur" replaces them with the crop blurred (Gaussian, sigma = max(2, 5% of the crop's longer side)).

    Accepts a name of ``BACKGROUNDS``, an "r,g,b" string (ROS parameter form), an RGB sequence, or None.
    """
    if value is None:
        return None
    if isinstance(value, str):
        key = value.strip().lower()
        if key in BACKGROUNDS:
            return BACKGROUNDS[key]
        try:
            value = [int(p) for p in key.split(",")]
        except ValueError:
            raise ValueError(f"background {value!r}: expected one of {sorted(BACKGROUNDS)} or 'r,g,b'") from None
    colour = tuple(int(v) for v in value)
    if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
        raise ValueError(f"background {value!r}: an RGB colour needs three integers in 0..255")
    return colour  # type: ignore[return-value]


def check_margin(margin: float) -> float:
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not 0.0 <= margin <= 10.0:
        raise ValueError(f"crop margin must be a fraction of the mask's box size in [0, 10], not {margin!r}")
    return float(margin)


def crop_box(roi: Roi, margin: float, image_hw: tuple[int, int]) -> Roi:
    """The crop (x, y, w, h) of ``roi`` in an (H, W) image: grown by round(margin * w) px left and right,
    round(margin * h) px above and below, then clipped to the image."""
    x, y, w, h = roi
    height, width = image_hw
    pad_x, pad_y = int(margin * w + 0.5), int(margin * h + 0.5)
    x0, y0 = max(x - pad_x, 0), max(y - pad_y, 0)
    x1, y1 = min(x + w + pad_x, width), min(y + h + pad_y, height)
    return (x0, y0, x1 - x0, y1 - y0)


def blur_sigma(crop_hw: tuple[int, int]) -> float:
    return max(2.0, 0.05 * max(crop_hw))


def _check(rgb: np.ndarray, masks: Sequence[InstanceMask]) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"image: expected an RGB uint8 (H, W, 3) array, got {got}")
    height, width = rgb.shape[:2]
    for i, m in enumerate(masks):
        x, y, w, h = m.roi
        if w <= 0 or h <= 0:
            raise ValueError(f"mask {i}: empty mask (roi {m.roi}) has nothing to crop")
        if x < 0 or y < 0 or x + w > width or y + h > height:
            raise ValueError(f"mask {i}: roi {m.roi} lies outside the {width}x{height} image")
        if m.mask.shape != (h, w):
            raise ValueError(f"mask {i}: mask shape {m.mask.shape} does not match roi {m.roi} (h, w = {h}, {w})")


def crop_images(rgb: np.ndarray, masks: Sequence[InstanceMask], margin: float = DEFAULT_CROP_MARGIN,
                background: BackgroundSpec = DEFAULT_BACKGROUND) -> list[np.ndarray]:
    """One RGB uint8 (h_i, w_i, 3) crop per mask of the (H, W, 3) uint8 image (see ``crop_box``).

    Raises ValueError for a wrong image, a bad margin, an empty mask or a mask outside the image.
    """
    _check(rgb, masks)
    margin = check_margin(margin)
    policy = parse_background(background)
    out = []
    for m in masks:
        cx, cy, cw, ch = crop_box(m.roi, margin, rgb.shape[:2])
        source = rgb[cy:cy + ch, cx:cx + cw]
        if policy is None:
            out.append(source.copy())
            continue
        if policy == "blur":
            crop = cv2.GaussianBlur(source, (0, 0), blur_sigma((ch, cw)))
        else:
            # A whole row of the colour per assignment: broadcasting the (3,) colour is ~50x slower.
            crop = np.empty((ch, cw, 3), np.uint8)
            crop.reshape(ch, cw * 3)[:] = np.tile(np.asarray(policy, np.uint8), cw)
        x, y, w, h = m.roi
        # The mask's pixels from the image; cv2.copyTo is ~70x faster than boolean indexing.
        cv2.copyTo(rgb[y:y + h, x:x + w], np.ascontiguousarray(m.mask, bool).view(np.uint8),
                   crop[y - cy:y - cy + h, x - cx:x - cx + w])
        out.append(crop)
    return out


def normalize(images: torch.Tensor) -> torch.Tensor:
    """(N, R, R, 3) uint8 -> (N, 3, R, R) float32, as ToTensor + Normalize(CLIP_MEAN, CLIP_STD)."""
    x = images.permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255)  # permuting uint8 is cheaper
    mean = torch.as_tensor(CLIP_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(CLIP_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def prepare_crops(rgb: np.ndarray, masks: Sequence[InstanceMask], resolution: int,
                  margin: float = DEFAULT_CROP_MARGIN,
                  background: BackgroundSpec = DEFAULT_BACKGROUND,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """The CN-CLIP input for every mask: (N, 3, resolution, resolution) float32 on ``device``.

    Equal to cn_clip's ``image_transform(resolution)`` applied to ``PIL.Image.fromarray(crop)`` for each
    crop of ``crop_images``, bit for bit; resized and normalised as one batch.
    """
    return normalize(resize_crops(crop_images(rgb, masks, margin, background), resolution, device))
