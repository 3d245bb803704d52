"""What a classifier is built from: one configuration object instead of a long keyword list.

No torch or cn_clip here: the node's parameter checks and the tools' option parsers read it cheaply.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

from ..labels import DEFAULT_LABELS, Label

#: ``model`` values meaning "no classifier": every instance is UNKNOWN.
NO_CLASSIFIER = ("", "none")
#: Context kept around a mask's box when cropping, as a fraction of the box size.
DEFAULT_CROP_MARGIN = 0.1
#: What replaces the pixels outside the mask in a crop (see crops.parse_background).
DEFAULT_BACKGROUND = "gray"


@dataclass(frozen=True)
class ClassifierConfig:
    """model: a CN-CLIP model name (classification.clip_models.MODELS), a path to a JSON file with a
    merged cn_clip config, or '' / 'none' for no classifier. checkpoint: a CN-CLIP checkpoint (pretrained
    or fine-tuned); None builds random weights (tests and timing only) and warns. crop_margin (a
    fraction of the mask's box size) / background: the crop policy of crops.py. precision: 'auto' (bf16 where
    the device runs it natively, else fp32: scrap_perception.devices) | 'fp32' | 'bf16' | 'fp16' (CUDA).
    batch_size: crops per
    encoder forward. min_score: under it the class is UNKNOWN."""

    model: str = "ViT-B-16"
    checkpoint: Optional[str | os.PathLike] = None
    labels: Sequence[Label] = DEFAULT_LABELS
    device: str = "auto"
    precision: str = "auto"
    crop_margin: float = DEFAULT_CROP_MARGIN
    background: str | Sequence[int] | None = DEFAULT_BACKGROUND
    batch_size: int = 32
    min_score: float = 0.0
    #: bf16 / fp16: matmul weights cast once instead of per call (bitwise equal outputs; CnClipClassifier).
    cast_weights: bool = True

    @property
    def disabled(self) -> bool:
        """True when no classifier is wanted (model '' or 'none')."""
        return self.model.strip().lower() in NO_CLASSIFIER
