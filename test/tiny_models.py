"""The tiny model configurations every test layer shares (as transformers' shared model testers).

Random weights only: no pretrained file exists on the test machines. The architectures are the real
ones (the reference packages' own classes), narrowed so a CPU runs them in a fraction of a second.
"""
from __future__ import annotations

import json
from pathlib import Path

from scrap_perception.segmentation.config import SMALL_VIT_ARCH

# SAM ViT-B narrowed to 2 blocks at a 256-pixel input (the package's own small config, also what
# `scrap-tools bench --quick` runs).
SMALL_SAM_ARCH = SMALL_VIT_ARCH
# Narrower still, for fine-tuning tests that train a decoder for hundreds of steps.
FINETUNE_SAM_ARCH = {"embed_dim": 64, "depth": 2, "num_heads": 2, "global_attn_indexes": [1], "image_size": 256}
# A full-resolution (1024) input with a light encoder: a node slower than the cameras (~1 s a frame
# here), for burst and back-pressure tests; windowed attention only, so a batch's activations stay small.
SLOW_SAM_ARCH = {"embed_dim": 128, "depth": 4, "num_heads": 4, "global_attn_indexes": [], "image_size": 1024}


def small_clip_config() -> dict:
    """The small CN-CLIP config (cn_clip's CLIP class, 2 layers per tower)."""
    from scrap_perception.classification.clip_models import small_clip_config as config

    return config()


def small_clip_json(directory: Path, **overrides) -> str:
    """Writes the small CN-CLIP config as the JSON file ``classifier.model`` accepts; returns its path."""
    path = Path(directory) / "small_clip.json"
    path.write_text(json.dumps({**small_clip_config(), **overrides}))
    return str(path)
