"""``scrap-tools eval-system``: the whole system measured end to end: detector-like boxes -> masks -> classes.

On a COCO set with ground truth, per image a simulated detector (``simulate_detections``, seeded by
(--seed, image id)) gives the prompts: each ground-truth instance is missed with probability
--miss-rate, else its tight box comes with every corner coordinate moved uniformly by up to --jitter px;
Poisson(--spurious-rate x instances) spurious boxes, each the size of a random ground-truth box of the
image, lie uniformly in the image. A box's score is its best IoU with a ground-truth box (as the replay
node scores jittered boxes). The prompts go through ``Pipeline.process_frames`` exactly as in the node
(prompt mode, thresholds, max_detections, segmenter, CN-CLIP classifier), once per --prompt-mode.

Published masks are matched one-to-one to ground-truth instances by mask IoU, greedily in descending IoU
(pairs under --match-iou never match). Reported per prompt mode:
- instance DICE: per ground-truth instance the DICE of its matched mask, 0 when unmatched (missed by the
  detector included), with std and a bootstrap 95 % interval; the mean over matched instances beside it;
- instance recall / precision / F1 at --match-iou;
- class accuracy and macro F1 of the matched instances (--macro all|present, as eval-cls), intervals by
  bootstrap over them, a per-class table and a confusion matrix;
- the accounting of detections to instances (accounting.md): missed, spurious, rejected prompts and
  masks by code, and where each published mask went.
Random-weight models are drawn after seeding with --seed and OpenCV's generator (GrabCut) is seeded per
image and mode; the dataset is validated and the models built before anything runs or is written.

Outputs: system.{md,csv}, accounting.{md,csv}, per_class.{md,csv}, confusion.png, instances.csv (one row
per ground-truth instance and mode), detections.csv (one row per detection and mode), summary.json (its
"outputs" lists what was written), config.json.
"""
from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..metrics import MACRO_MODES
from ..pipeline import PROMPT_MODES
from . import ToolError, add_run_options, fail, input_errors, run_folder, save_config, seed_call, write_table
from .model_options import add_model_options, build_pipeline, check_models, parse_labels

TOOL = "eval-system"


# ------------------------------------------------------------------------------------------ detector
@dataclass
class SimDetection:
    """One simulated detection: box (x0, y0, x1, y1) px, score, the annotation it came from (None:
    spurious) and its id ('gt<ann_id>' or 'fp<k>', the prompt id the pipeline keeps)."""

    box: np.ndarray
    score: float
    ann_id: Optional[int]
    id: str


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of (N, 4) and (M, 4) (x0, y0, x1, y1) boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    union = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None] + ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None] \
        - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def simulate_detections(sample, rng: np.random.Generator, jitter: float, miss_rate: float,
                        spurious_rate: float) -> list[SimDetection]:
    """The detections of one ``data.Sample`` (module doc): true ones in annotation order, then spurious."""
    gt_boxes = np.array([g.box for g in sample.instances], np.float64).reshape(-1, 4)
    boxes, origins = [], []
    for g in sample.instances:
        if rng.random() < miss_rate:
            continue
        box = g.box + rng.uniform(-jitter, jitter, 4) if jitter > 0 else g.box.astype(np.float64)
        box[2], box[3] = max(box[2], box[0] + 1), max(box[3], box[1] + 1)
        boxes.append(box)
        origins.append(g.ann_id)
    h, w = sample.height, sample.width
    for _ in range(rng.poisson(spurious_rate * len(sample.instances))):
        size = (gt_boxes[rng.integers(len(gt_boxes))] if len(gt_boxes) else np.array([0, 0, w / 10, h / 10]))
        bw, bh = min(size[2] - size[0], w), min(size[3] - size[1], h)
        x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        boxes.append(np.array([x0, y0, x0 + bw, y0 + bh]))
        origins.append(None)
    scores = box_iou(np.array(boxes), gt_boxes).max(axis=1) if boxes and len(gt_boxes) else np.zeros(len(boxes))
    first_fp = len(boxes) - origins.count(None)
    return [SimDetection(np.asarray(b, np.float32), float(s), o, f"gt{o}" if o is not None else f"fp{k - first_fp}")
            for k, (b, s, o) in enumerate(zip(boxes, scores, origins))]


# ------------------------------------------------------------------------------------------ matching
def mask_overlaps(masks: Sequence, gts: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(N, M) intersections and IoUs of N InstanceMasks with M ground-truth instances (full masks)."""
    inter = np.zeros((len(masks), len(gts)), np.int64)
    for i, m in enumerate(masks):
        x, y, w, h = m.roi
        if w and h:
            for j, g in enumerate(gts):
                inter[i, j] = np.count_nonzero(m.mask & g.mask[y:y + h, x:x + w])
    areas_p = np.array([m.area for m in masks], np.int64)[:, None]
    areas_g = np.array([g.area for g in gts], np.int64)[None, :]
    union = areas_p + areas_g - inter
    return inter, np.divide(inter, union, out=np.zeros(inter.shape, np.float64), where=union > 0)


def match(iou: np.ndarray, threshold: float) -> dict[int, int]:
    """{prediction index: ground-truth index}: one-to-one, greedily in descending IoU (ties: lower
    prediction, then lower ground-truth index), pairs with IoU >= threshold only."""
    pairs = np.argwhere(iou >= threshold)
    order = sorted(range(len(pairs)), key=lambda k: (-iou[tuple(pairs[k])], pairs[k][0], pairs[k][1]))
    out, used = {}, set()
    for k in order:
        p, g = (int(v) for v in pairs[k])
        if p not in out and g not in used:
            out[p] = g
            used.add(g)
    return out


# ------------------------------------------------------------------------------------------ running
class Tally:
    """Per prompt mode: instance rows, detection rows and the accounting counters."""

    def __init__(self) -> None:
        self.instances: list[dict[str, Any]] = []
        self.detections: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()


def evaluate_image(pipe, mode: str, rgb: np.ndarray, sample, dets: Sequence[SimDetection], threshold: float,
                   tally: Tally) -> None:
    """One image through the pipeline in ``mode``; matches, scores and accounts its results into ``tally``."""
    from ..prompts import Prompt

    pipe.prompt_mode = mode
    result, = pipe.process_frames([(rgb, [Prompt(box=d.box, id=d.id, score=d.score) for d in dets])])
    inst = result.instances
    inter, iou = mask_overlaps([i.mask for i in inst], sample.instances)
    matched = match(iou, threshold)
    by_gt = {g: p for p, g in matched.items()}
    origin = {d.id: d.ann_id for d in dets}
    c = tally.counts
    c["ground truth"] += len(sample.instances)
    c["detections"] += len(dets)
    c["spurious detections"] += sum(d.ann_id is None for d in dets)
    c["published masks"] += len(inst)
    for r in result.rejected:
        c[f"rejected: {r.code}"] += 1
    for p, i in enumerate(inst):
        g = matched.get(p)
        src = origin.get(i.id)
        kind = ("own instance" if src == sample.instances[g].ann_id else
                "spurious detection" if src is None else "another instance's detection") if g is not None else None
        c[f"matched, from {kind}" if g is not None else
          ("unmatched, from spurious detection" if src is None else "unmatched, from true detection")] += 1
    detected = {d.ann_id for d in dets if d.ann_id is not None}
    for j, gt in enumerate(sample.instances):
        p = by_gt.get(j)
        if p is None:
            c["ground truth missed by the detector" if gt.ann_id not in detected else
              "ground truth detected but not matched"] += 1
        dice = 2.0 * inter[p, j] / (inst[p].mask.area + gt.area) if p is not None else 0.0
        cls = inst[p].classification if p is not None else None
        tally.instances.append({"mode": mode, "image_id": sample.image_id, "ann_id": gt.ann_id, "class": gt.class_name,
                                "true_id": gt.class_id, "detected": gt.ann_id in detected, "matched": p is not None,
                                "iou": float(iou[p, j]) if p is not None else 0.0, "dice": dice,
                                "pred_id": int(cls.class_id) if cls else "",
                                "pred_score": float(cls.score) if cls else ""})
    index = {i.id: p for p, i in enumerate(inst)}
    codes = {r.index: r.code for r in result.rejected}
    for k, d in enumerate(dets):
        p = index.get(d.id)
        g = matched.get(p) if p is not None else None
        tally.detections.append({"mode": mode, "image_id": sample.image_id, "id": d.id,
                                 "ann_id": d.ann_id if d.ann_id is not None else "", "score": d.score,
                                 "x0": float(d.box[0]), "y0": float(d.box[1]), "x1": float(d.box[2]),
                                 "y1": float(d.box[3]), "rejected": codes.get(k, ""),
                                 "matched_ann_id": sample.instances[g].ann_id if g is not None else ""})


# ------------------------------------------------------------------------------------------ reports
SYSTEM_HEADER = ["Prompt mode", "Instances", "Detections", "Published masks", "Matched", "Recall", "Precision",
                 "F1", "Instance DICE", "DICE std", "DICE 95% lo", "DICE 95% hi", "DICE of matched",
                 "Class accuracy (matched)", "Accuracy 95% lo", "Accuracy 95% hi", "Macro F1 (matched)",
                 "Macro F1 95% lo", "Macro F1 95% hi"]


def report(out: Path, tallies: dict[str, Tally], labels: Sequence, classified: bool, macro: str, seed: int,
           resamples: int) -> dict:
    """Writes the tables, CSVs and the confusion matrix; returns the summary (also summary.json)."""
    from ..metrics import spread
    from .eval_cls import PER_CLASS_HEADER, classification_rows
    from .plots import confusion_plot

    rows, per_class, panels, summary = [], [], [], {}
    nan = float("nan")
    for mode, t in tallies.items():
        c = t.counts
        n_gt, n_pub = c["ground truth"], c["published masks"]
        n_match = sum(r["matched"] for r in t.instances)
        recall, precision = n_match / max(n_gt, 1), n_match / n_pub if n_pub else 0.0
        f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
        dice = spread([r["dice"] for r in t.instances], seed, resamples)
        matched_dice = float(np.mean([r["dice"] for r in t.instances if r["matched"]])) if n_match else nan
        cls_part = [nan] * 6
        entry: dict[str, Any] = {}
        if classified and n_match:
            m = [r for r in t.instances if r["matched"]]
            row, pc, rep = classification_rows(mode, [r["true_id"] for r in m], [r["pred_id"] for r in m], labels,
                                               macro, seed, resamples)
            cls_part = [row[2], row[4], row[5], row[8], row[9], row[10]]
            per_class += pc
            panels.append((f"{mode} (acc {rep.accuracy:.3f}, {len(m)} matched)", rep.confusion))
            entry = rep.as_dict()
        rows.append([mode, n_gt, c["detections"], n_pub, n_match, recall, precision, f1, dice.mean, dice.std,
                     dice.lo, dice.hi, matched_dice, *cls_part])
        summary[mode] = {**dict(zip(SYSTEM_HEADER[1:], rows[-1][1:])), "accounting": dict(c), "classes": entry}
    write_table(out / "system", SYSTEM_HEADER, rows, "The whole system: detector-like boxes -> masks -> classes")
    keys = sorted({k for t in tallies.values() for k in t.counts}, key=_accounting_order)
    write_table(out / "accounting", ["Count"] + list(tallies),
                [[k] + [tallies[m].counts.get(k, 0) for m in tallies] for k in keys],
                "Detections to instances")
    outputs = ["system.md", "system.csv", "accounting.md", "accounting.csv"]
    if per_class:
        write_table(out / "per_class", ["Prompt mode"] + PER_CLASS_HEADER[1:], per_class,
                    "Per-class report of the matched instances")
        confusion_plot(out / "confusion.png", panels, [lb.name for lb in labels])
        outputs += ["per_class.md", "per_class.csv", "confusion.png"]
    for name, key in (("instances.csv", "instances"), ("detections.csv", "detections")):
        with open(out / name, "w", newline="", encoding="utf-8") as f:
            rows_out = [r for t in tallies.values() for r in getattr(t, key)]
            if rows_out:
                w = csv.DictWriter(f, fieldnames=list(rows_out[0]))
                w.writeheader()
                w.writerows(rows_out)
        outputs.append(name)
    outputs += ["summary.json", "config.json"]
    doc = {"modes": summary, "macro": macro, "bootstrap_resamples": resamples, "outputs": outputs}
    (out / "summary.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=float) + "\n",
                                      encoding="utf-8")
    return doc


def _accounting_order(key: str) -> tuple[int, str]:
    first = ["ground truth", "ground truth missed by the detector", "ground truth detected but not matched",
             "detections", "spurious detections", "published masks"]
    return (first.index(key), key) if key in first else (len(first) + (not key.startswith("rejected")), key)


# -------------------------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(TOOL, help="the whole pipeline end to end with detector-like prompts",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="COCO instance-segmentation json with ground truth")
    p.add_argument("--image-root", type=Path, default=None, help="folder of the images (default: the json's)")
    add_model_options(p)
    p.add_argument("--prompt-mode", nargs="+", default=["box_point"], choices=PROMPT_MODES,
                   help="prompt modes to compare (default box_point, the node's default)")
    p.add_argument("--jitter", type=float, default=8.0, help="box corner noise, px (default 8)")
    p.add_argument("--miss-rate", type=float, default=0.1, help="probability an instance is not detected (0.1)")
    p.add_argument("--spurious-rate", type=float, default=0.1,
                   help="spurious boxes per ground-truth instance, Poisson per image (default 0.1)")
    p.add_argument("--match-iou", type=float, default=0.5, help="mask IoU for a match (default 0.5)")
    p.add_argument("--min-mask-score", type=float, default=0.0, help="as the node's min_mask_score")
    p.add_argument("--min-area", type=int, default=0, help="as the node's min_area")
    p.add_argument("--max-detections", type=int, default=100, help="as the node's max_detections (0: no limit)")
    p.add_argument("--macro", default="all", choices=MACRO_MODES, help="macro F1 over all classes or those present")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--max-images", type=int, default=None, help="evaluate the first N images only")
    add_run_options(p, TOOL)
    p.set_defaults(func=run)
    return p


def evaluate(args: argparse.Namespace) -> tuple[Path, dict]:
    from tqdm import tqdm

    from ..data import CocoDataset

    if args.jitter < 0 or not 0 <= args.miss_rate <= 1 or args.spurious_rate < 0 or not 0 < args.match_iou <= 1:
        raise ToolError("need --jitter >= 0, 0 <= --miss-rate <= 1, --spurious-rate >= 0, 0 < --match-iou <= 1")
    if args.bootstrap < 1 or args.min_area < 0 or args.max_detections < 0:
        raise ToolError("need --bootstrap >= 1, --min-area >= 0 and --max-detections >= 0")
    check_models(args)
    labels = parse_labels(args.labels)
    dataset = CocoDataset(args.data, args.image_root, labels=labels)
    images = list(range(len(dataset)))[:args.max_images]
    if not images:
        raise ToolError(f"--data {args.data}: no images to evaluate")
    dataset.validate(images, progress=True)
    modes = list(dict.fromkeys(args.prompt_mode))
    pipe = build_pipeline(args, labels, modes[0], args.max_detections)
    tallies = {m: Tally() for m in modes}
    for i in tqdm(images, desc=TOOL, unit="img"):
        rgb, sample = dataset.load_image(i), dataset[i]
        dets = simulate_detections(sample, np.random.default_rng([args.seed, sample.image_id]), args.jitter,
                                   args.miss_rate, args.spurious_rate)
        for mode in modes:
            seed_call(args.seed, sample.image_id, PROMPT_MODES.index(mode))
            evaluate_image(pipe, mode, rgb, sample, dets, args.match_iou, tallies[mode])
    out = run_folder(args.out, TOOL)
    save_config(out, args)
    classified = args.classifier.strip().lower() not in ("", "none")
    return out, report(out, tallies, labels, classified, args.macro, args.seed, args.bootstrap)


def run(args: argparse.Namespace) -> int:
    """0 on success; 2 on bad input (one-line message, no traceback)."""
    try:
        out, summary = evaluate(args)
    except input_errors() as e:
        return fail(TOOL, e)
    for mode, s in summary["modes"].items():
        print(f"{TOOL}: {mode}: instance DICE {s['Instance DICE']:.4f}, recall {s['Recall']:.3f}, "
              f"precision {s['Precision']:.3f}, class accuracy (matched) {s['Class accuracy (matched)']:.4f}")
    shown = [n for n in summary["outputs"] if n.endswith((".md", ".png"))]
    print(f"{TOOL}: results in {out} ({', '.join(shown)})")
    return 0
