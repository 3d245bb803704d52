"""Bench part ``precision``: the same frames through the same models at fp32 and at a reduced precision.

Both pipelines share the modules (the weights are the bench's seeded random ones) and differ only in the
autocast dtype, so every difference is the precision's. Per instance (matched by the prompt's id) the
mask IoU of the full-resolution masks, whether the class agrees and the cosine of the two embeddings;
per frame the seconds of ``Pipeline.process``, the two precisions interleaved frame by frame.
"""
from __future__ import annotations

import statistics
from typing import Any, Sequence

import numpy as np

from ...classification.cn_clip_backend import CnClipClassifier
from ...devices import dtype_of
from ...pipeline import Instance, Pipeline
from ...segmentation.sam_backend import SamSegmenter
from .frames import Frame
from .timing import Clock

#: Frames the comparison runs on at least (the bench's frames, more of them when it made fewer).
FRAMES = 4


def at_precision(pipeline: Pipeline, precision: str) -> Pipeline:
    """A copy of ``pipeline`` (SAM segmenter + CN-CLIP classifier) running its models at ``precision``
    ('fp32' | 'bf16' | 'fp16'); the modules are shared, not copied."""
    seg, cls = pipeline.segmenter, pipeline.classifier
    if not isinstance(seg, SamSegmenter) or not isinstance(cls, CnClipClassifier):
        raise TypeError("the precision comparison needs a SAM-family segmenter and a CN-CLIP classifier")
    seg2 = SamSegmenter(seg.model, seg.spec, seg.device, dtype_of(precision), seg.chunk_size,
                        hq_token_only=seg.hq_token_only, multimask=seg.multimask, encoder_batch=seg.encoder_batch)
    cls2 = CnClipClassifier(cls.model, cls.labels, device=cls.device, precision=precision,
                            crop_margin=cls.crop_margin, background=cls.background, batch_size=cls.batch_size,
                            min_score=cls.min_score, name=cls.name)
    return Pipeline(seg2, cls2, pipeline.prompt_mode, pipeline.min_mask_score, pipeline.min_area,
                    pipeline.max_detections)


def agreement(reference: Sequence[Sequence[Instance]], other: Sequence[Sequence[Instance]],
              shapes: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """Per-frame instance lists of two runs on the same frames (``shapes``: each frame's (H, W)) -> mask IoU
    (median, min), class agreement and embedding cosine (median, min) over the instances both kept
    (matched by id: the prompt's), and how many only one of them kept."""
    ious: list[float] = []
    cos: list[float] = []
    same, unmatched = 0, 0
    for ref, low, hw in zip(reference, other, shapes):
        by_id = {inst.id: inst for inst in low}
        for inst in ref:
            twin = by_id.pop(inst.id, None)
            if twin is None:
                unmatched += 1
                continue
            a, b = inst.mask.full(hw), twin.mask.full(hw)
            union = np.count_nonzero(a | b)
            ious.append(1.0 if union == 0 else np.count_nonzero(a & b) / union)
            same += int(inst.classification.class_id == twin.classification.class_id)
            ea, eb = inst.classification.embedding, twin.classification.embedding
            cos.append(float(np.dot(ea, eb) / (np.linalg.norm(ea) * np.linalg.norm(eb))))
        unmatched += len(by_id)
    nan = float("nan")
    return {"instances": len(ious), "unmatched": unmatched,
            "mask_iou_median": statistics.median(ious) if ious else nan, "mask_iou_min": min(ious, default=nan),
            "class_agreement": same / len(ious) if ious else nan,
            "embedding_cos_median": statistics.median(cos) if cos else nan, "embedding_cos_min": min(cos, default=nan)}


def compare_precisions(pipeline: Pipeline, frames: Sequence[Frame], n: int, clock: Clock, low: str = "bf16",
                       warmup: int = 1) -> dict[str, Any]:
    """``frames`` with ``n`` boxes each through ``pipeline``'s models at fp32 and at ``low``: the
    ``agreement`` of the two and the median seconds per frame of each (warm-up calls on the first frame)."""
    runs = {"fp32": at_precision(pipeline, "fp32"), low: at_precision(pipeline, low)}
    results: dict[str, list[list[Instance]]] = {k: [] for k in runs}
    seconds: dict[str, list[float]] = {k: [] for k in runs}
    for name, pipe in runs.items():
        for _ in range(warmup):
            pipe.process(frames[0].rgb, frames[0].prompts(n))
    for frame in frames:  # interleaved frame by frame: drifting machine load hits both alike
        for name, pipe in runs.items():
            start = clock.now()
            results[name].append(pipe.process(frame.rgb, frame.prompts(n)))
            seconds[name].append(clock.now() - start)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    return {"reference": "fp32", "low": low, "frames": len(frames), "boxes": n,
            **agreement(results["fp32"], results[low], [f.rgb.shape[:2] for f in frames]),
            "seconds_per_frame": med, "samples_s": seconds, "speedup": med["fp32"] / med[low]}


def markdown(r: dict[str, Any]) -> list[str]:
    """bench.md lines of ``compare_precisions``' result."""
    low = r["low"]
    return ["", f"## Precision: {low} against fp32 ({r['frames']} frame(s), N = {r['boxes']}, same random weights)",
            "", f"| instances | unmatched | mask IoU median | mask IoU min | class agreement | embedding cos median "
            f"| embedding cos min | fp32 s | {low} s | speed-up |", "|" + "---|" * 10,
            f"| {r['instances']} | {r['unmatched']} | {r['mask_iou_median']:.4f} | {r['mask_iou_min']:.4f} "
            f"| {r['class_agreement']:.3f} | {r['embedding_cos_median']:.5f} | {r['embedding_cos_min']:.5f} "
            f"| {r['seconds_per_frame']['fp32']:.3f} | {r['seconds_per_frame'][low]:.3f} | {r['speedup']:.2f}x |"]
