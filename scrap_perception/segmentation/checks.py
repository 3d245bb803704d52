"""Input checks shared by the backends: images, and prompts under the ``prompts.sanitize`` policy."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..prompts import Prompt, PromptError, sanitize


def check_image(rgb: np.ndarray, index: int) -> None:
    """Raises ValueError unless ``rgb`` is a non-empty RGB uint8 (H, W, 3) array; index names it."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        what = f"{type(rgb).__name__} {getattr(rgb, 'dtype', '')} {getattr(rgb, 'shape', '')}"
        raise ValueError(f"image {index}: expected an RGB uint8 (H, W, 3) array, got {what}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"image {index}: empty image of shape {rgb.shape}")


def check_prompts(prompts: Sequence[Prompt], image_hw: tuple[int, int]) -> list[Prompt]:
    """Every prompt through ``sanitize`` (clip or reject); a rejection raises PromptError naming the
    prompt's index and id, with the code of the sanitize rule that refused it."""
    out = []
    for i, p in enumerate(prompts):
        try:
            out.append(sanitize(p, image_hw))
        except PromptError as e:
            raise PromptError(f"prompt {i}{f' (id {p.id!r})' if p.id else ''}: {e}", e.code) from None
    return out
