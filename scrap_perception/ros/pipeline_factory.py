"""The node's parameters (params.PERCEPTION_PARAMS) mapped onto the engines' configuration objects, in
this one place, and the Pipeline built from them."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any, Mapping, Optional

from ..checkpoints import CheckpointError
from ..classification.config import ClassifierConfig
from ..labels import labels_from_strings
from ..pipeline import Pipeline
from ..segmentation.config import SegmenterConfig
from .params import ParamError


# The checkpoint value that asks for random weights (tests and timing): it must be said explicitly, so a
# node whose checkpoint was forgotten stops instead of publishing random masks.
RANDOM = "random"


def check_file(param: str, path: str, what: str) -> str:
    """The path (``~`` and ``$VARS`` expanded); a missing file stops the node with a message naming the parameter."""
    path = os.path.expanduser(os.path.expandvars(path))
    if not os.path.isfile(path):
        raise ParamError(f"{param}: {what} {path!r} does not exist; put the file there or point {param} at it "
                         "(README, Checkpoints)")
    return path


def resolve_checkpoint(param: str, value: str, expected: str) -> Optional[str]:
    """A required checkpoint parameter: a file path, or 'random' (None: random weights)."""
    value = value.strip()
    if value == RANDOM:
        return None
    if not value:
        raise ParamError(f"{param} is not set: download {expected} (README, Checkpoints) and set {param} to its "
                         f"path, or to '{RANDOM}' for random weights (tests and timing only)")
    return check_file(param, value, f"expected {expected}, but")


def segmenter_config(p: Mapping[str, Any]) -> SegmenterConfig:
    """The SegmenterConfig of parameter values ``p``: checkpoints resolved and checked to exist."""
    cfg = SegmenterConfig(
        p["segmenter.model_type"].strip(), device=p["segmenter.device"], precision=p["segmenter.precision"],
        chunk_size=p["segmenter.chunk_size"] or None, encoder_batch=p["segmenter.encoder_batch"] or None,
        multimask=p["segmenter.multimask"],
        arch=json.loads(p["segmenter.arch"]) if p["segmenter.arch"].strip() else None)
    if cfg.weight_free:  # the weight-free segmenter takes no file
        return cfg
    from ..segmentation.registry import resolve_model_type
    try:
        expected = resolve_model_type(cfg.model_type).official_file or f"the {cfg.model_type} checkpoint"
    except ValueError as e:
        raise ParamError(f"segmenter.model_type: {e}") from None
    decoder = None
    if p["segmenter.decoder_checkpoint"].strip():
        decoder = check_file("segmenter.decoder_checkpoint", p["segmenter.decoder_checkpoint"],
                             "the mask decoder checkpoint (scrap-tools finetune-decoder)")
    return replace(cfg, checkpoint=resolve_checkpoint("segmenter.checkpoint", p["segmenter.checkpoint"], expected),
                   decoder_checkpoint=decoder)


def classifier_config(p: Mapping[str, Any]) -> ClassifierConfig:
    """The ClassifierConfig of parameter values ``p`` (``disabled`` for classifier.model none)."""
    cfg = ClassifierConfig(
        p["classifier.model"].strip(), labels=labels_from_strings(p["classifier.labels"]),
        device=p["classifier.device"], precision=p["classifier.precision"], crop_margin=p["classifier.crop_margin"],
        background=p["classifier.background"], batch_size=p["classifier.batch_size"],
        min_score=p["classifier.min_score"])
    if cfg.disabled:
        return cfg
    model = cfg.model
    if model.endswith(".json"):
        model = check_file("classifier.model", model, "the CN-CLIP model config (JSON)")
    from ..classification.clip_models import OFFICIAL_FILES
    expected = OFFICIAL_FILES.get(model, f"the CN-CLIP checkpoint for {model}")
    return replace(cfg, model=model,
                   checkpoint=resolve_checkpoint("classifier.checkpoint", p["classifier.checkpoint"], expected))


def build_pipeline(p: Mapping[str, Any]) -> Pipeline:
    """The segmenter, the classifier and the thresholds of parameter values ``p``."""
    from ..classification import build_classifier
    from ..segmentation import build_segmenter

    seg_cfg, cls_cfg = segmenter_config(p), classifier_config(p)
    if p["random_seed"] >= 0:
        import torch

        torch.manual_seed(p["random_seed"])
    try:
        segmenter = build_segmenter(seg_cfg)
    except ValueError as e:  # the builder's message says which value; say which parameters
        raise ParamError(f"segmenter.*: {e}") from None
    except CheckpointError as e:  # "checkpoint='...': ..." -> the node's parameter name
        raise CheckpointError(f"segmenter.{e}") from None
    try:
        classifier = None if cls_cfg.disabled else build_classifier(cls_cfg)
    except ValueError as e:
        raise ParamError(f"classifier.*: {e}") from None
    except CheckpointError as e:
        raise CheckpointError(f"classifier.{e}") from None
    return Pipeline(segmenter, classifier, prompt_mode=p["segmenter.prompt_mode"],
                    min_mask_score=p["min_mask_score"], min_area=p["min_area"], max_detections=p["max_detections"])


def device_of(pipeline: Pipeline) -> str:
    """The device(s) the models run on, for diagnostics."""
    devs = []
    for m in (pipeline.segmenter, pipeline.classifier):
        d = getattr(m, "device", None)
        if d is not None and str(d) not in devs:
            devs.append(str(d))
    return ",".join(devs) or "cpu"
