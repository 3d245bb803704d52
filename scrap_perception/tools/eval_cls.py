"""``scrap-tools eval-cls``: shape classification of ground-truth instance masks, several checkpoints side by side.

Each ground-truth mask of the COCO dataset (at least --min-area pixels) is classified by CN-CLIP through
the node's classifier (``build_classifier``: same crops, text features and probabilities as at run
time), once per --checkpoint entry, e.g. ``zero-shot=clip_cn_vit-b-16.pt fine-tuned=<finetune-clip run>/
best.pt`` (``none`` as the path: random weights, for smoke tests).

Macro precision / recall / F1 average over all classes of the label set (--macro all, the paper's
table) or over the classes present in truth or predictions (--macro present); per_class lists exactly
the classes averaged, so its column means are the table's macro values. Each row carries the standard
deviation of per-crop correctness and bootstrap 95 % intervals of accuracy and macro F1 (--bootstrap
resamples of the crops). Random-weight models are drawn after seeding with --seed; the dataset is
validated and every checkpoint loaded before anything is classified or written.

Outputs in the results folder: table3.{md,csv} (accuracy, macro precision / recall / F1, speed per
entry: the paper's Table 3), per_class.{md,csv}, predictions.csv, confusion.png and tsne.png (one panel
per entry, t-SNE of the L2-normalised image embeddings coloured by true class), summary.json (its
"outputs" lists what was written), config.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..devices import PRECISION_CHOICES
from ..metrics import MACRO_MODES
from . import (ToolError, add_run_options, fail, input_errors, parse_mapping, run_folder, save_config, seed_models,
               write_table)

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


T3_HEADER = ["Checkpoint", "Crops", "Accuracy", "Accuracy std", "Accuracy 95% lo", "Accuracy 95% hi",
             "Macro precision", "Macro recall", "Macro F1", "Macro F1 95% lo", "Macro F1 95% hi"]
PER_CLASS_HEADER = ["Checkpoint", "Class", "Precision", "Recall", "F1", "Support"]


def classification_rows(label: str, y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence,
                        macro: str, seed: int, resamples: int) -> tuple[list, list[list], Any]:
    """One Table 3 row (without speed), its per-class rows (the classes the macro averages run over, so
    their column means are the row's macro values) and the ClassificationReport. std: of per-crop
    correctness; intervals: percentile bootstrap over the crops (``metrics.bootstrap_interval``)."""
    from ..metrics import bootstrap_interval, classification_report

    ids, names = [lb.id for lb in labels], [lb.name for lb in labels]
    t, p = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    rep = classification_report(t, p, ids, names, macro=macro)
    correct = (t == p).astype(np.float64)
    acc = bootstrap_interval(len(t), lambda idx: float(correct[idx].mean()), seed, resamples)
    f1 = bootstrap_interval(len(t), lambda idx: classification_report(t[idx], p[idx], ids, macro=macro).macro_f1,
                            seed, resamples)
    row = [label, len(t), rep.accuracy, float(correct.std()) if len(t) else float("nan"), *acc,
           rep.macro_precision, rep.macro_recall, rep.macro_f1, *f1]
    per_class = [[label, names[k], float(rep.precision[k]), float(rep.recall[k]), float(rep.f1[k]),
                  int(rep.support[k])] for k in rep.rows]
    return row, per_class, rep


def report(out: Path, runs: Sequence[Predictions], labels: Sequence, seed: int, macro: str = "all",
           resamples: int = 1000) -> dict:
    """Writes the tables, predictions and plots; returns the summary (also summary.json), whose
    "outputs" names every file written."""
    from .plots import confusion_plot, tsne_plot

    ids, names = [lb.id for lb in labels], [lb.name for lb in labels]
    t3, per_class, summary = [], [], {}
    reports = []
    for r in runs:
        row, rows, rep = classification_rows(r.label, r.y_true, r.y_pred, labels, macro, seed, resamples)
        reports.append(rep)
        ms = 1000 * r.seconds / max(len(r.y_true), 1)
        t3.append(row + [ms])
        per_class += rows
        summary[r.label] = {**rep.as_dict(), "crops": len(r.y_true), "ms_per_crop": ms,
                            "accuracy_ci95": row[4:6], "macro_f1_ci95": row[9:11]}
    write_table(out / "table3", T3_HEADER + ["Classification (ms/crop)"], t3,
                f"Table 3: shape classification (macro over {macro} classes)")
    write_table(out / "per_class", PER_CLASS_HEADER, per_class,
                "Per-class report" + (" (the seven classes)" if macro == "all" else " (classes present)"))
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["checkpoint", "image_id", "ann_id", "true_id", "pred_id", "score"])
        for r in runs:
            w.writerows([r.label, im, ann, t, p, s] for (im, ann), t, p, s in zip(r.refs, r.y_true, r.y_pred, r.scores))
    confusion_plot(out / "confusion.png", [(f"{r.label} (acc {rep.accuracy:.3f})", rep.confusion)
                                           for r, rep in zip(runs, reports)], names)
    tsne_plot(out / "tsne.png", [(r.label, np.stack(r.embeddings) if r.embeddings else np.zeros((0, 1)),
                                  np.asarray(r.y_true)) for r in runs], ids, names, seed=seed)
    outputs = ["table3.md", "table3.csv", "per_class.md", "per_class.csv", "predictions.csv", "confusion.png",
               "tsne.png", "summary.json", "config.json"]
    doc = {"checkpoints": summary, "macro": macro, "bootstrap_resamples": resamples, "outputs": outputs}
    (out / "summary.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return doc


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
    p.add_argument("--crop-margin", type=float, default=None,
                   help="context kept around the mask's box, a fraction of the box size (e.g. 0.1 = 10 %%; "
                        "default: the classifier's, 0.1)")
    p.add_argument("--background", default=None, help="crop background policy (default: the classifier's)")
    p.add_argument("--batch-size", type=int, default=None, help="crops per encoder call (default: the classifier's)")
    p.add_argument("--macro", default="all", choices=MACRO_MODES,
                   help="macro averages over all classes of the label set (the paper's table; default) or "
                        "over the classes present in truth or predictions")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples of the 95%% intervals (default 1000)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                   help="auto (default): bf16 where the device runs it natively, else fp32; fp16 needs CUDA")
    add_run_options(p, TOOL)
    p.set_defaults(func=run)
    return p


def _classifier_options(args: argparse.Namespace) -> dict[str, Any]:
    """Crop / batch options the user set (the rest keep the classifier's defaults)."""
    given = {"crop_margin": args.crop_margin, "background": args.background, "batch_size": args.batch_size}
    return {k: v for k, v in given.items() if v is not None}


def build_classifiers(entries: dict[str, str], labels: Sequence, args: argparse.Namespace) -> list:
    """One classifier per --checkpoint entry, each drawn after ``seed_models(--seed)`` (ToolError naming
    a bad one)."""
    from ..classification import build_classifier

    out = []
    for label, path in entries.items():
        checkpoint: Optional[str] = None if path.lower() == "none" else path
        seed_models(args.seed)
        try:
            out.append(build_classifier(args.model, checkpoint=checkpoint, labels=labels, device=args.device,
                                        precision=args.precision, min_score=0.0, **_classifier_options(args)))
        except (ValueError, KeyError) as e:
            raise ToolError(f"checkpoint {label!r}: {e}") from None
    return out


def evaluate(args: argparse.Namespace) -> tuple[Path, dict]:
    from ..data import CocoDataset
    from ..labels import DEFAULT_LABELS, LabelError, labels_from_strings

    try:
        labels = labels_from_strings(args.labels) if args.labels else DEFAULT_LABELS
    except LabelError as e:
        raise ToolError(str(e)) from None
    if args.bootstrap < 1:
        raise ToolError("--bootstrap must be >= 1")
    entries = parse_mapping(args.checkpoint or ["random=none"], "--checkpoint")
    dataset = CocoDataset(args.data, args.image_root, labels=labels)
    images = list(range(len(dataset)))[:args.max_images]
    if not images:
        raise ToolError(f"--data {args.data}: no images to evaluate")
    dataset.validate(images, progress=True)
    classifiers = build_classifiers(entries, labels, args)
    runs = [classify_dataset(c, label, dataset, images, args.min_area) for label, c in zip(entries, classifiers)]
    if not any(r.y_true for r in runs):
        raise ToolError(f"--data {args.data}: no instance with at least --min-area {args.min_area} pixels")
    out = run_folder(args.out, TOOL)
    save_config(out, args)
    return out, report(out, runs, labels, args.seed, args.macro, args.bootstrap)


def run(args: argparse.Namespace) -> int:
    """0 on success; 2 on bad input (one-line message, no traceback)."""
    try:
        out, summary = evaluate(args)
    except input_errors() as e:
        return fail(TOOL, e)
    for label, s in summary["checkpoints"].items():
        print(f"{TOOL}: {label}: accuracy {s['accuracy']:.4f}, macro F1 {s['macro_f1']:.4f} ({s['crops']} crops)")
    shown = [n for n in summary["outputs"] if n.endswith((".md", ".png"))]
    print(f"{TOOL}: results in {out} ({', '.join(shown)})")
    return 0
