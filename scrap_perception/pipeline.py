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
        """Several frames (e.g. one per camera): encoded together (``encoder_batch`` images per call),
        decoded frame by frame, and the masks of all frames classified in shared CN-CLIP batches.
        Timings are per frame: a shared stage's time split evenly."""
        if not frames:
            return []
        share = 1.0 / len(frames)
        t0 = time.perf_counter()
        encoded = self.segmenter.encode([rgb for rgb, _ in frames])
        t1 = time.perf_counter()
        decoded = [self._decode(rgb, detections, enc) for (rgb, detections), enc in zip(frames, encoded)]
        t2 = time.perf_counter()
        todo = [f for f, (_, good) in enumerate(decoded) if good]
        classes = dict(zip(todo, self.classifier.classify_frames(
            [(frames[f][0], [m for _, _, m in decoded[f][1]]) for f in todo])))
        t3 = time.perf_counter()
        out = []
        for f, (result, good) in enumerate(decoded):
            result.instances = [Instance(p.id or self._new_id(), p, m, c)
                                for (_, p, m), c in zip(good, classes.get(f, []))]
            result.timings.update(encode=(t1 - t0) * share, classify=(t3 - t2) * share)
            out.append(result)
        return out

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

    def _decode(self, rgb: np.ndarray, detections: Sequence[Prompt], encoded: EncodedImage
                ) -> tuple[FrameResult, list[tuple[int, Prompt, InstanceMask]]]:
        """The frame's result without instances yet, and its masks that pass the thresholds."""
        kept, rejected = self.prepare(detections, rgb.shape[:2])
        t0 = time.perf_counter()
        masks = self.segmenter.segment([p for _, p in kept], encoded=encoded) if kept else []
        good = []
        for (i, p), m in zip(kept, masks):
            if m.area == 0 or m.area < self.min_area:
                rejected.append((i, f"mask area {m.area} under min_area {self.min_area}"))
            elif m.iou < self.min_mask_score:
                rejected.append((i, f"mask score {m.iou:.3f} under min_mask_score {self.min_mask_score}"))
            else:
                good.append((i, p, m))
        rejected.sort()
        return FrameResult([], rejected, {"decode": time.perf_counter() - t0}), good

    def _new_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"
