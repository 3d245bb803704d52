"""Builds the node's Pipeline from its validated parameters (see params.PERCEPTION_PARAMS)."""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

from ..labels import labels_from_strings
from ..pipeline import Pipeline
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


def build_pipeline(p: Mapping[str, Any]) -> Pipeline:
    """The segmenter, the classifier and the thresholds of parameter values ``p``."""
    from ..segmentation import build_segmenter, resolve_model_type

    model_type = p["segmenter.model_type"].strip()
    sam_ckpt = decoder_ckpt = None
    if model_type.lower() != "grabcut":  # the weight-free segmenter takes no file
        try:
            expected = resolve_model_type(model_type).official_file or f"the {model_type} checkpoint"
        except ValueError as e:
            raise ParamError(f"segmenter.model_type: {e}") from None
        sam_ckpt = resolve_checkpoint("segmenter.checkpoint", p["segmenter.checkpoint"], expected)
        if p["segmenter.decoder_checkpoint"].strip():
            decoder_ckpt = check_file("segmenter.decoder_checkpoint", p["segmenter.decoder_checkpoint"],
                                      "the mask decoder checkpoint (scrap-tools finetune-decoder)")
    model = p["classifier.model"].strip()
    clip_ckpt = None
    if model.lower() != "none":
        if model.endswith(".json"):
            model = check_file("classifier.model", model, "the CN-CLIP model config (JSON)")
        from ..classification.models import OFFICIAL_FILES
        expected = OFFICIAL_FILES.get(model, f"the CN-CLIP checkpoint for {model}")
        clip_ckpt = resolve_checkpoint("classifier.checkpoint", p["classifier.checkpoint"], expected)
    if p["random_seed"] >= 0:
        import torch

        torch.manual_seed(p["random_seed"])

    try:
        segmenter = build_segmenter(
            model_type, checkpoint=sam_ckpt, device=p["segmenter.device"],
            precision=p["segmenter.precision"], decoder_checkpoint=decoder_ckpt,
            chunk_size=p["segmenter.chunk_size"] or None, encoder_batch=p["segmenter.encoder_batch"] or None,
            multimask=p["segmenter.multimask"],
            arch=json.loads(p["segmenter.arch"]) if p["segmenter.arch"].strip() else None)
    except ValueError as e:  # the builder's message says which value; say which parameters
        raise ParamError(f"segmenter.*: {e}") from None
    classifier = None
    if model.lower() != "none":
        from ..classification import build_classifier
        try:
            classifier = build_classifier(
                model, checkpoint=clip_ckpt,
                labels=labels_from_strings(p["classifier.labels"]), device=p["classifier.device"],
                precision=p["classifier.precision"], crop_margin=p["classifier.crop_margin"],
                background=p["classifier.background"], batch_size=p["classifier.batch_size"],
                min_score=p["classifier.min_score"])
        except ValueError as e:
            raise ParamError(f"classifier.*: {e}") from None
    return Pipeline(segmenter, classifier, prompt_mode=p["segmenter.prompt_mode"],
                    min_mask_score=p["min_mask_score"], min_area=p["min_area"])


def device_of(pipeline: Pipeline) -> str:
    """The device(s) the models run on, for diagnostics."""
    devs = []
    for m in (pipeline.segmenter, pipeline.classifier):
        d = getattr(m, "device", None)
        if d is not None and str(d) not in devs:
            devs.append(str(d))
    return ",".join(devs) or "cpu"
