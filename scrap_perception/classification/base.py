"""The classifier interface and its per-mask result."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..labels import UNKNOWN_ID, Label
from ..masks import InstanceMask


@dataclass
class Classification:
    """class_id: a label id or UNKNOWN_ID; probabilities: (K,) float32 in label order (empty when
    unclassified); embedding: (D,) float32 L2-normalised image embedding (empty when none)."""

    class_id: int
    class_name: str
    score: float
    probabilities: np.ndarray
    embedding: np.ndarray


def unclassified() -> Classification:
    return Classification(UNKNOWN_ID, "Unknown", 0.0, np.zeros(0, np.float32), np.zeros(0, np.float32))


class Classifier(ABC):
    name: str = "classifier"
    labels: tuple[Label, ...] = ()
    #: the precision the model runs at, 'auto' resolved ('fp32' | 'bf16' | 'fp16'; 'none' without a model)
    precision: str = "fp32"

    @abstractmethod
    def classify(self, rgb: np.ndarray, masks: Sequence[InstanceMask]) -> list[Classification]:
        """One Classification per mask of the RGB uint8 (H, W, 3) image, in order."""

    def classify_frames(self, frames: Sequence[tuple[np.ndarray, Sequence[InstanceMask]]]
                        ) -> list[list[Classification]]:
        """``classify`` of several (image, masks) pairs (e.g. one per camera); backends that batch
        across images override it."""
        return [self.classify(rgb, masks) for rgb, masks in frames]


class NullClassifier(Classifier):
    """No classifier configured: every instance is UNKNOWN with empty scores."""

    name = "none"
    precision = "none"

    def classify(self, rgb: np.ndarray, masks: Sequence[InstanceMask]) -> list[Classification]:
        return [unclassified() for _ in masks]
