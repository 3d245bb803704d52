"""The segmenter interface every backend implements.

Images are RGB uint8 ``(H, W, 3)`` arrays in pixel coordinates; prompts and masks use the same frame
(see ``scrap_perception.prompts`` and ``scrap_perception.masks``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from ..masks import InstanceMask
from ..prompts import Prompt


@dataclass
class EncodedImage:
    """What ``encode`` returns for one image: the backend's features plus the image geometry.

    original_hw: (H, W) of the source image; input_hw: size after the model's resize (before padding).
    features: backend-specific (image embedding tensor, SAM-HQ's intermediate features, or the image).
    """

    original_hw: tuple[int, int]
    input_hw: tuple[int, int]
    features: Any
    extra: dict = field(default_factory=dict)


class Segmenter(ABC):
    """Encodes an image once, then decodes any number of prompts against it."""

    #: e.g. "sam:vit_b", "mobile_sam:vit_t", "sam_hq:vit_tiny", "grabcut"
    name: str = "segmenter"
    #: the precision the model runs at, 'auto' resolved ('fp32' | 'bf16' | 'fp16'; GrabCut: numpy, 'fp32')
    precision: str = "fp32"

    def __init__(self) -> None:
        self._encoded: Optional[EncodedImage] = None

    @abstractmethod
    def encode(self, images: Sequence[np.ndarray]) -> list[EncodedImage]:
        """Encodes several RGB uint8 (H, W, 3) images in one batch (frames of several cameras)."""

    @abstractmethod
    def segment(self, prompts: Sequence[Prompt], encoded: Optional[EncodedImage] = None,
                return_logits: bool = False) -> list[InstanceMask]:
        """Decodes every prompt against ``encoded`` (default: the image of the last ``set_image``).

        Prompts must be sanitized (``prompts.sanitize``). Returns one InstanceMask per prompt, in order,
        in pixel coordinates of the original image; ``return_logits`` keeps each mask's low-res logits.
        """

    def segment_candidates(self, prompts: Sequence[Prompt], encoded: Optional[EncodedImage] = None,
                           return_logits: bool = False) -> list[list[InstanceMask]]:
        """Every candidate mask per prompt, in prompt order (SAM: its three multimask outputs). This
        default is for backends with one mask per prompt: ``segment``'s mask alone."""
        return [[m] for m in self.segment(prompts, encoded, return_logits)]

    def set_image(self, rgb: np.ndarray) -> None:
        """Encodes one image and keeps it for calls without ``encoded``."""
        self._encoded = self.encode([rgb])[0]

    @property
    def encoded(self) -> EncodedImage:
        if self._encoded is None:
            raise RuntimeError("set_image() must be called before segment()")
        return self._encoded
