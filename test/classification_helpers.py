"""Shared pieces of the classification tests: small random CN-CLIP models, scenes with known shapes,
and the reference computations written directly with cn_clip's own API."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from cn_clip.clip import image_transform, tokenize
from cn_clip.clip.model import CLIP
from PIL import Image

from scrap_perception.classification import small_clip_config
from scrap_perception.labels import Label
from scrap_perception.masks import InstanceMask, from_full


def small_clip(seed: int = 0, **overrides) -> CLIP:
    """The small test config with random weights from ``seed``; ``overrides`` change config fields."""
    torch.manual_seed(seed)
    return CLIP(**{**small_clip_config(), **overrides}).eval()


def config_file(directory: Path, **overrides) -> str:
    path = directory / "small_clip.json"
    path.write_text(json.dumps({**small_clip_config(), **overrides}))
    return str(path)


def shapes_scene(h: int = 240, w: int = 320, seed: int = 0) -> tuple[np.ndarray, list[InstanceMask]]:
    """A textured RGB image with a rectangle, a disc, a thin bar and an L-shape (one touching the
    top-left corner, one the bottom-right), and their exact masks."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    shapes = [
        (yy >= 30) & (yy < 90) & (xx >= 40) & (xx < 140),
        (yy - 150) ** 2 + (xx - 220) ** 2 < 40 ** 2,
        (yy < 12) & (xx < 100),
        ((yy >= h - 50) & (xx >= w - 12)) | ((yy >= h - 12) & (xx >= w - 60)),
    ]
    for k, m in enumerate(shapes):
        rgb[m] = (60 * k + 30, 200 - 40 * k, 90 + 30 * k)
    return rgb, [from_full(m, 1.0) for m in shapes]


def reference_text_features(model: CLIP, labels: Sequence[Label]) -> torch.Tensor:
    """cn_clip's zero-shot classifier (cn_clip.eval.zeroshot_evaluation), label by label."""
    from cn_clip.eval.data import _preprocess_text

    out = []
    with torch.no_grad():
        for label in labels:
            f = model.encode_text(tokenize([_preprocess_text(p) for p in label.prompts()])).float()
            f /= f.norm(dim=-1, keepdim=True)
            f = f.mean(dim=0)
            out.append(f / f.norm())
    return torch.stack(out)


def reference_inputs(crops: Sequence[np.ndarray], resolution: int) -> torch.Tensor:
    """cn_clip's image_transform of each crop as a PIL image: (N, 3, R, R)."""
    transform = image_transform(resolution)
    return torch.stack([transform(Image.fromarray(c)) for c in crops])


def reference_embeddings(model: CLIP, inputs: torch.Tensor) -> torch.Tensor:
    """encode_image of each input on its own, L2-normalised: (N, D)."""
    with torch.no_grad():
        f = torch.cat([model.encode_image(x[None]).float() for x in inputs])
    return f / f.norm(dim=-1, keepdim=True)
