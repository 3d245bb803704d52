"""``scrap-tools eval-cls``: shape classification of ground-truth instance masks, several checkpoints side by side.

Each ground-truth mask of the COCO dataset (at least --min-area pixels) is classified by CN-CLIP through
the node's classifier (``build_classifier``: same crops, text features and probabilities as at run
time), once per --checkpoint entry, e.g. ``zero-shot=clip_cn_vit-b-16.pt fine-tuned=<finetune-clip run>/
best.pt`` (``none`` as the path: random weights, for smoke tests).

Outputs in the results folder: table3.{md,csv} (accuracy, macro precision / recall / F1, speed per
entry: the paper's Table 3), per_class.{md,csv}, predictions.csv, confusion.png and tsne.png (one panel
per entry, t-SNE of the L2-normalised image embeddings coloured by true class), summary.json, config.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from . import ToolError, add_run_options, parse_mapping, run_folder, save_config, write_table

TOOL = "eval-cls"


@dataclass
class Predictions:
    """Everything one checkpoint produced: per crop the true id, predicted id, score, embedding."""

    label: str
    y_true: list[int] = field(default_factory=list)
    y_pred: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    refs: list[tuple[int, int]] = field(default_factory=list)
    seconds: float = 0.0


def classify_dataset(classifier, label: str, dataset, images: Sequence[int], min_area: int,
                     progress: bool = True) -> Predictions:
    """Classifies every ground-truth mask of ``images`` with at least ``min_area`` pixels."""
    from tqdm import tqdm

    from ..masks import from_full

    out = Predictions(label)
    for i in tqdm(images, desc=f"{TOOL} {label}", unit="img", disable=not progress):
        sample = dataset[i]
        keep = [inst for inst in sample.instances if inst.area >= min_area]
        if not keep:
            continue
        rgb = dataset.load_image(i)
        masks = [from_full(inst.mask, 1.0) for inst in keep]
        t0 = time.perf_counter()
        results = classifier.classify(rgb, masks)
        out.seconds += time.perf_counter() - t0
        for inst, res in zip(keep, results):
            out.y_true.append(inst.class_id)
            out.y_pred.append(int(res.class_id))
            out.scores.append(float(res.score))
            out.embeddings.append(np.asarray(res.embedding, np.float32))
            out.refs.append((sample.image_id, inst.ann_id))
    return out


def report(out: Path, runs: Sequence[Predictions], labels: Sequence, seed: int) -> dict:
    """Writes the tables, predictions and plots; returns the summary (also summary.json)."""
    from ..metrics import classification_report
    from .plots import confusion_plot, tsne_plot

    ids, names = [lb.id for lb in labels], [lb.name for lb in labels]
    t3, per_class, summary = [], [], {}
    reports = []
    for r in runs:
        rep = classification_report(r.y_true, r.y_pred, ids, names)
        reports.append(rep)
        ms = 1000 * r.seconds / max(len(r.y_true), 1)
        t3.append([r.label, len(r.y_true), rep.accuracy, rep.macro_precision, rep.macro_recall, rep.macro_f1, ms])
        per_class += [[r.label, n, float(p), float(rc), float(f), int(s)]
                      for n, p, rc, f, s in zip(names, rep.precision, rep.recall, rep.f1, rep.support)]
        summary[r.label] = {**rep.as_dict(), "crops": len(r.y_true), "ms_per_crop": ms}
    write_table(out / "table3", ["Checkpoint", "Crops", "Accuracy", "Macro precision", "Macro recall", "Macro F1",
                                 "Classification (ms/crop)"], t3, "Table 3: shape classification")
    write_table(out / "per_class", ["Checkpoint", "Class", "Precision", "Recall", "F1", "Support"], per_class,
                "Per-class report")
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["checkpoint", "image_id", "ann_id", "true_id", "pred_id", "score"])
        for r in runs:
            w.writerows([r.label, im, ann, t, p, s] for (im, ann), t, p, s in zip(r.refs, r.y_true, r.y_pred, r.scores))
    confusion_plot(out / "confusion.png", [(f"{r.label} (acc {rep.accuracy:.3f})", rep.confusion)
                                           for r, rep in zip(runs, reports)], names)
    tsne_plot(out / "tsne.png", [(r.label, np.stack(r.embeddings) if r.embeddings else np.zeros((0, 1)),
                                  np.asarray(r.y_true)) for r in runs], ids, names, seed=seed)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


# -------------------------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(TOOL, help="CN-CLIP shape classification: accuracy, P/R/F1, confusion, t-SNE",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="COCO instance-segmentation json")
    p.add_argument("--image-root", type=Path, default=None, help="folder of the images (default: the json's)")
    p.add_argument("--model", default="ViT-B-16",
                   help="cn_clip model name (ViT-B-16, ViT-L-14, ViT-L-14-336, ViT-H-14, RN50) or a JSON config")
    p.add_argument("--checkpoint", action="append", metavar="LABEL=PATH",
                   help="a checkpoint to evaluate under LABEL (repeatable; PATH 'none' = random weights). "
                        "Default: random=none")
    p.add_argument("--labels", nargs="+", default=None, metavar="ID:NAME:TEXT",
                   help="label set (default: the seven shapes with their Chinese names)")
    p.add_argument("--min-area", type=int, default=0, help="instances with fewer mask pixels are left out")
    p.add_argument("--max-images", type=int, default=None, help="evaluate the first N images only")
    p.add_argument("--crop-margin", type=int, default=None, help="crop margin in pixels (default: the classifier's)")
    p.add_argument("--background", default=None, help="crop background policy (default: the classifier's)")
    p.add_argument("--batch-size", type=int, default=None, help="crops per encoder call (default: the classifier's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    add_run_options(p, TOOL)
    p.set_defaults(func=run)
    return p


def _classifier_options(args: argparse.Namespace) -> dict[str, Any]:
    """Crop / batch options the user set (the rest keep the classifier's defaults)."""
    given = {"crop_margin": args.crop_margin, "background": args.background, "batch_size": args.batch_size}
    return {k: v for k, v in given.items() if v is not None}


def evaluate(args: argparse.Namespace) -> tuple[Path, dict]:
    from ..classification import build_classifier
    from ..data import CocoDataset
    from ..labels import DEFAULT_LABELS, LabelError, labels_from_strings

    try:
        labels = labels_from_strings(args.labels) if args.labels else DEFAULT_LABELS
    except LabelError as e:
        raise ToolError(str(e)) from None
    entries = parse_mapping(args.checkpoint or ["random=none"], "--checkpoint")
    dataset = CocoDataset(args.data, args.image_root, labels=labels)
    images = list(range(len(dataset)))[:args.max_images]
    if not images:
        raise ToolError(f"--data {args.data}: no images to evaluate")
    out = run_folder(args.out, TOOL)
    save_config(out, args)
    runs = []
    for label, path in entries.items():
        checkpoint: Optional[str] = None if path.lower() == "none" else path
        try:
            classifier = build_classifier(args.model, checkpoint=checkpoint, labels=labels, device=args.device,
                                          precision=args.precision, min_score=0.0, **_classifier_options(args))
        except (ValueError, KeyError) as e:
            raise ToolError(f"checkpoint {label!r}: {e}") from None
        runs.append(classify_dataset(classifier, label, dataset, images, args.min_area))
    if not any(r.y_true for r in runs):
        raise ToolError(f"--data {args.data}: no instance with at least --min-area {args.min_area} pixels")
    return out, report(out, runs, labels, args.seed)


def run(args: argparse.Namespace) -> int:
    """0 on success; 2 on bad input (one-line message, no traceback)."""
    from ..checkpoints import CheckpointError
    from ..data import DatasetError

    try:
        out, summary = evaluate(args)
    except (ToolError, DatasetError, CheckpointError) as e:
        print(f"{TOOL}: error: {e}", file=sys.stderr)
        return 2
    for label, s in summary.items():
        print(f"{TOOL}: {label}: accuracy {s['accuracy']:.4f}, macro F1 {s['macro_f1']:.4f} ({s['crops']} crops)")
    print(f"{TOOL}: results in {out} (table3.md, per_class.md, confusion.png, tsne.png)")
    return 0
