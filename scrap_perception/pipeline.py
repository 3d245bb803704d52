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

#: box: strategy S5; box_point: S6 with the box centre; box_point_refined: S6 with the deepest interior
#: point of the box's own mask (decoded twice; see prompt_strategies.refine_prompts).
PROMPT_MODES = ("box", "box_point", "box_point_refined")


@dataclass
class Instance:
    """One object of one frame: the (sanitized) prompt, its mask and its class."""

    id: str
    prompt: Prompt
    mask: InstanceMask
    classification: Classification


@dataclass(frozen=True)
class Rejection:
    """A detection not turned into an instance. index: its position in the frame's detections; code: short
    stable diagnostic key (``PromptError.code``, or mask_below_min_area / mask_below_min_score); reason:
    the human-readable why."""

    index: int
    code: str
    reason: str


@dataclass
class FrameResult:
    """instances: in detection order; rejected: one Rejection per detection not turned into an instance,
    by index; timings: seconds per stage ('encode', 'mask_decode', 'classify')."""

    instances: list[Instance]
    rejected: list[Rejection] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class Pipeline:
    """Segments every detection of a frame with one image encoding, then classifies all masks at once.

    prompt_mode: 'box' (strategy S5), 'box_point' (S6: box plus one positive point, the box centre when
    the detection carries none) or 'box_point_refined' (S6 whose point is the deepest interior point of
    the box's own mask: every box-only prompt of the frame is decoded once in one call, then all prompts
    again in a second call; about twice the decoder time, the image is still encoded once). A detection
    that carries its own points keeps them in every mode but 'box'. min_mask_score / min_area: masks
    under either are rejected.
    max_detections: per frame at most this many detections, the highest-scoring, are segmented (0: all).
    """

    def __init__(self, segmenter: Segmenter, classifier: Optional[Classifier] = None,
                 prompt_mode: str = "box_point", min_mask_score: float = 0.0, min_area: int = 0,
                 max_detections: int = 0) -> None:
        if prompt_mode not in PROMPT_MODES:
            raise ValueError(f"prompt_mode must be one of {PROMPT_MODES}, not {prompt_mode!r}")
        if int(max_detections) < 0:
            raise ValueError(f"max_detections must be >= 0 (0: no limit), not {max_detections}")
        self.segmenter = segmenter
        self.classifier = classifier or NullClassifier()
        self.prompt_mode = prompt_mode
        self.min_mask_score = float(min_mask_score)
        self.min_area = int(min_area)
        self.max_detections = int(max_detections)
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
                ) -> tuple[list[tuple[int, Prompt]], list[Rejection]]:
        """Applies max_detections, the prompt mode and the sanitizing policy: (index, prompt) kept in
        detection order, a Rejection for the rest (by index). In 'box_point_refined' mode box-only prompts
        stay box-only here: their point needs the decoder (``_decode``)."""
        todo, rejected = self._limit(detections)
        kept = []
        for i in todo:
            try:
                p = sanitize(detections[i], image_hw)
                if self.prompt_mode == "box" and p.box is not None:
                    p = replace(p, points=p.points[:0], point_labels=p.point_labels[:0])
                elif self.prompt_mode == "box_point" and p.box is not None and not len(p.points):
                    p = box_point_prompt(p.box, id=p.id, score=p.score)
                kept.append((i, p))
            except PromptError as e:
                rejected.append(Rejection(i, e.code, str(e)))
        rejected.sort(key=lambda r: r.index)
        return kept, rejected

    def _limit(self, detections: Sequence[Prompt]) -> tuple[Sequence[int], list[Rejection]]:
        """Indices of the max_detections highest-scoring detections in detection order (ties: the earlier
        one; a NaN score ranks last), and a too_many Rejection for each other one. Runs before sanitizing,
        so a flood of boxes costs one sort."""
        n, limit = len(detections), self.max_detections
        if not limit or n <= limit:
            return range(n), []
        scores = np.array([float(d.score) for d in detections], np.float64)
        order = np.argsort(-scores, kind="stable")  # stable: equal scores keep detection order
        floor = scores[order[limit - 1]]
        rejected = [Rejection(int(i), "too_many", f"score {scores[i]:.3f} is not among the {limit} highest of "
                                                  f"{n} detections (max_detections; lowest kept {floor:.3f})")
                    for i in np.sort(order[limit:])]
        return np.sort(order[:limit]).tolist(), rejected

    def _decode(self, rgb: np.ndarray, detections: Sequence[Prompt], encoded: EncodedImage
                ) -> tuple[FrameResult, list[tuple[int, Prompt, InstanceMask]]]:
        """The frame's result without instances yet, and its masks that pass the thresholds."""
        kept, rejected = self.prepare(detections, rgb.shape[:2])
        t0 = time.perf_counter()
        if self.prompt_mode == "box_point_refined":
            kept = self._refine(kept, encoded)
        masks = self.segmenter.segment([p for _, p in kept], encoded=encoded) if kept else []
        good = []
        for (i, p), m in zip(kept, masks):
            if m.area == 0 or m.area < self.min_area:
                rejected.append(Rejection(i, "mask_below_min_area",
                                          f"mask area {m.area} under min_area {self.min_area}"))
            elif m.iou < self.min_mask_score:
                rejected.append(Rejection(i, "mask_below_min_score",
                                          f"mask score {m.iou:.3f} under min_mask_score {self.min_mask_score}"))
            else:
                good.append((i, p, m))
        rejected.sort(key=lambda r: r.index)
        return FrameResult([], rejected, {"mask_decode": time.perf_counter() - t0}), good

    def _refine(self, kept: list[tuple[int, Prompt]], encoded: EncodedImage) -> list[tuple[int, Prompt]]:
        """The box-only prompts of ``kept`` given the deepest point of their first mask (one decoder call)."""
        from .prompt_strategies import refine_prompts

        todo = [k for k, (_, p) in enumerate(kept) if p.box is not None and not len(p.points)]
        refined, _ = refine_prompts(self.segmenter, [kept[k][1] for k in todo], encoded)
        out = list(kept)
        for k, p in zip(todo, refined):
            out[k] = (kept[k][0], p)
        return out

    def _new_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"
