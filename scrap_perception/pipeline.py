"""One camera frame plus detector prompts in, classified instance masks out. No ROS here."""
from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np

from .classification.base import Classification, Classifier, NullClassifier
from .masks import InstanceMask
from .prompts import Prompt, PromptError, box_point_prompt, sanitize
from .segmentation.base import EncodedImage, Segmenter

PROMPT_MODES = ("box", "box_point")


@dataclass
class Instance:
    """One object of one frame: the (sanitized) prompt, its mask and its class."""

    id: str
    prompt: Prompt
    mask: InstanceMask
    classification: Classification


@dataclass
class FrameResult:
    """instances: in detection order; rejected: (detection index, reason) for each detection not
    turned into an instance; timings: seconds per stage ('encode', 'decode', 'classify')."""

    instances: list[Instance]
    rejected: list[tuple[int, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class Pipeline:
    """Segments every detection of a frame with one image encoding, then classifies all masks at once.

    prompt_mode: 'box' (strategy S5) or 'box_point' (S6: box plus one positive point, the box centre
    when the detection carries none). min_mask_score / min_area: masks under either are rejected.
    """

    def __init__(self, segmenter: Segmenter, classifier: Optional[Classifier] = None,
                 prompt_mode: str = "box_point", min_mask_score: float = 0.0, min_area: int = 0) -> None:
        if prompt_mode not in PROMPT_MODES:
            raise ValueError(f"prompt_mode must be one of {PROMPT_MODES}, not {prompt_mode!r}")
        self.segmenter = segmenter
        self.classifier = classifier or NullClassifier()
        self.prompt_mode = prompt_mode
        self.min_mask_score = float(min_mask_score)
        self.min_area = int(min_area)
        self._ids = itertools.count()
        self._id_prefix = uuid.uuid4().hex[:8]

    def process(self, rgb: np.ndarray, detections: Sequence[Prompt]) -> list[Instance]:
        """Instances of one RGB uint8 (H, W, 3) frame, in detection order (rejected ones left out)."""
        return self.process_frames([(rgb, detections)])[0].instances

    def process_frames(self, frames: Sequence[tuple[np.ndarray, Sequence[Prompt]]]) -> list[FrameResult]:
        """Several frames (e.g. one per camera): encoded in one batch, then decoded frame by frame."""
        t0 = time.perf_counter()
        encoded = self.segmenter.encode([rgb for rgb, _ in frames]) if frames else []
        encode_s = (time.perf_counter() - t0) / max(len(frames), 1)
        results = []
        for (rgb, detections), enc in zip(frames, encoded):
            result = self._decode_and_classify(rgb, detections, enc)
            result.timings["encode"] = encode_s
            results.append(result)
        return results

    def prepare(self, detections: Sequence[Prompt], image_hw: tuple[int, int]
                ) -> tuple[list[tuple[int, Prompt]], list[tuple[int, str]]]:
        """Applies the prompt mode and the sanitizing policy: (index, prompt) kept, (index, reason) rejected."""
        kept, rejected = [], []
        for i, det in enumerate(detections):
            try:
                p = sanitize(det, image_hw)
                if self.prompt_mode == "box" and p.box is not None:
                    p = replace(p, points=p.points[:0], point_labels=p.point_labels[:0])
                elif self.prompt_mode == "box_point" and p.box is not None and not len(p.points):
                    p = box_point_prompt(p.box, id=p.id, score=p.score)
                kept.append((i, p))
            except PromptError as e:
                rejected.append((i, str(e)))
        return kept, rejected

    def _decode_and_classify(self, rgb: np.ndarray, detections: Sequence[Prompt],
                             encoded: EncodedImage) -> FrameResult:
        kept, rejected = self.prepare(detections, rgb.shape[:2])
        t0 = time.perf_counter()
        masks = self.segmenter.segment([p for _, p in kept], encoded=encoded) if kept else []
        t1 = time.perf_counter()
        good = []
        for (i, p), m in zip(kept, masks):
            if m.area == 0 or m.area < self.min_area:
                rejected.append((i, f"mask area {m.area} under min_area {self.min_area}"))
            elif m.iou < self.min_mask_score:
                rejected.append((i, f"mask score {m.iou:.3f} under min_mask_score {self.min_mask_score}"))
            else:
                good.append((i, p, m))
        classes = self.classifier.classify(rgb, [m for _, _, m in good]) if good else []
        t2 = time.perf_counter()
        instances = [Instance(p.id or self._new_id(), p, m, c) for (_, p, m), c in zip(good, classes)]
        rejected.sort()
        return FrameResult(instances, rejected, {"decode": t1 - t0, "classify": t2 - t1})

    def _new_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"
