"""The model options that ``eval-system`` and ``prelabel`` share: one segmenter and one classifier built
as the node builds them (``build_segmenter`` / ``build_classifier``) into the node's ``Pipeline``."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ..devices import PRECISION_CHOICES
from . import ToolError, parse_json_arg, seed_models


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--model-type, --checkpoint, --decoder-checkpoint, --arch, --classifier, --clip-checkpoint, --labels,
    --device, --precision."""
    p.add_argument("--model-type", default="vit_b", help="segmenter model type (vit_b, vit_t, hq:vit_b, grabcut, ...)")
    p.add_argument("--checkpoint", default=None, help="segmenter checkpoint ('none': random weights)")
    p.add_argument("--decoder-checkpoint", default=None, help="fine-tuned mask decoder")
    p.add_argument("--arch", type=parse_json_arg, default=None, help="encoder size override (small test models)")
    p.add_argument("--classifier", default="ViT-B-16", help="CN-CLIP model name, JSON config or 'none'")
    p.add_argument("--clip-checkpoint", default=None, help="CN-CLIP checkpoint ('none': random weights)")
    p.add_argument("--labels", nargs="+", default=None, metavar="ID:NAME:TEXT", help="label set (default: seven)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                   help="both models' precision (default auto: bf16 where the device runs it natively)")


def parse_labels(specs: Optional[Sequence[str]]) -> tuple:
    """--labels ('ID:NAME:TEXT' strings) or the seven shapes; ToolError when malformed."""
    from ..labels import DEFAULT_LABELS, LabelError, labels_from_strings

    try:
        return labels_from_strings(specs) if specs else DEFAULT_LABELS
    except LabelError as e:
        raise ToolError(str(e)) from None


def check_models(args: argparse.Namespace) -> None:
    """ToolError when --model-type / --classifier lack their checkpoint option (before any work)."""
    if args.model_type.strip().lower() != "grabcut" and args.checkpoint is None:
        raise ToolError(f"--model-type {args.model_type} needs --checkpoint (a file, or 'none' for random weights)")
    if args.classifier.strip().lower() not in ("", "none") and args.clip_checkpoint is None:
        raise ToolError("--classifier needs --clip-checkpoint (a file, or 'none' for random weights); "
                        "or --classifier none")


def build_pipeline(args: argparse.Namespace, labels: Sequence, prompt_mode: str, max_detections: int):
    """The Pipeline of the model options (--model-type, --checkpoint, --classifier, ...; models drawn after
    ``seed_models(--seed)``) with the node's thresholds --min-mask-score / --min-area."""
    from ..classification import build_classifier
    from ..pipeline import Pipeline
    from ..segmentation import build_segmenter

    def path(value: Optional[str]) -> Optional[str]:
        return None if value is None or value.lower() == "none" else value

    seed_models(args.seed)
    try:
        seg = build_segmenter(args.model_type, checkpoint=path(args.checkpoint), device=args.device,
                              precision=args.precision, decoder_checkpoint=args.decoder_checkpoint, arch=args.arch)
    except (ValueError, KeyError) as e:
        raise ToolError(f"segmenter {args.model_type!r}: {e}") from None
    seed_models(args.seed)
    try:
        cls = build_classifier(args.classifier, checkpoint=path(args.clip_checkpoint), labels=labels,
                               device=args.device, precision=args.precision, min_score=0.0)
    except (ValueError, KeyError) as e:
        raise ToolError(f"classifier {args.classifier!r}: {e}") from None
    return Pipeline(seg, cls, prompt_mode=prompt_mode, min_mask_score=args.min_mask_score,
                    min_area=args.min_area, max_detections=max_detections)
