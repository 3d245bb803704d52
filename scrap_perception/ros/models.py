"""Builds the node's Pipeline from its validated parameters (see params.PERCEPTION_PARAMS)."""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

from ..labels import labels_from_strings
from ..pipeline import Pipeline
from .params import ParamError


def check_file(param: str, path: str, what: str) -> None:
    """A configured file that does not exist stops the node with a message naming the parameter."""
    if path and not os.path.isfile(path):
        raise ParamError(f"{param}: {what} file {path!r} does not exist "
                         f"(expected a file there; set {param} to '' for random weights)")


def build_pipeline(p: Mapping[str, Any]) -> Pipeline:
    """The segmenter, the classifier and the thresholds of parameter values ``p``."""
    from ..segmentation import build_segmenter

    check_file("segmenter.checkpoint", p["segmenter.checkpoint"], "segmenter checkpoint")
    check_file("segmenter.decoder_checkpoint", p["segmenter.decoder_checkpoint"], "mask decoder checkpoint")
    check_file("classifier.checkpoint", p["classifier.checkpoint"], "CN-CLIP checkpoint")
    model = p["classifier.model"]
    if model.endswith(".json"):
        check_file("classifier.model", model, "CN-CLIP model config (JSON)")
    if p["random_seed"] >= 0:
        import torch

        torch.manual_seed(p["random_seed"])

    try:
        segmenter = build_segmenter(
            p["segmenter.model_type"], checkpoint=p["segmenter.checkpoint"] or None, device=p["segmenter.device"],
            precision=p["segmenter.precision"], decoder_checkpoint=p["segmenter.decoder_checkpoint"] or None,
            chunk_size=p["segmenter.chunk_size"] or None,
            arch=json.loads(p["segmenter.arch"]) if p["segmenter.arch"].strip() else None)
    except ValueError as e:  # the builder's message says which value; say which parameters
        raise ParamError(f"segmenter.*: {e}") from None
    classifier = None
    if model.lower() != "none":
        from ..classification import build_classifier
        try:
            classifier = build_classifier(
                model, checkpoint=p["classifier.checkpoint"] or None,
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
