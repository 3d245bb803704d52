"""``scrap-tools eval-seg``: segmentation accuracy, robustness and speed per model and prompting strategy.

The paper's protocol on a COCO dataset with ground-truth masks:
- strategies S1-S6 (``prompt_strategies``): S2-S6 prompts are built from each ground-truth mask; S1
  runs the segmenter's everything mode (``generate``: point grid, IoU / stability filters, NMS).
- every prompt is decoded with all candidate masks (``return_all``); two matchings are reported:
  "best" = the candidate with the best DICE against the ground truth (the paper's), "top" = the
  candidate the model ranks first (highest predicted IoU). For S1, "best" searches all generated
  masks and "top" is the highest-IoU mask among those whose grid point lies on the object (none: an
  empty prediction).
- metrics DICE, Jaccard, Hausdorff (``scrap_perception.metrics``, its empty-mask policy).
- robustness (S2-S6): boxes and points shifted / expanded by each range of pixels (``perturb``),
  ``--repeats`` seeded repeats; DICE drop = clean DICE - perturbed DICE, RA = DICE - mean drop over the
  ranges. A perturbed prompt left unusable by ``prompts.sanitize`` (all points off the image) scores
  DICE 0 and is counted.
- timing: image embedding per image; prompt encoding + mask decoding per strategy (per image and per
  prompt; S1 per grid point), after one untimed warm-up image.
Random draws are seeded by (--seed, image id, annotation id[, range, repeat]), so every model sees the
same prompts and S3/S4 share their positive points, S5/S6 their box perturbations.

Outputs in the results folder: table1.{md,csv} (accuracy + timing, the paper's Table 1),
table2.{md,csv} (robustness, Table 2), instances.csv, robustness.csv, timing.csv, dice_boxplot.png,
ra_bars.png, summary.json, config.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..prompt_strategies import SHIFT_RANGES, STRATEGIES
from . import ToolError, add_run_options, parse_json_arg, parse_mapping, run_folder, save_config, write_table

TOOL = "eval-seg"
MATCHINGS = ("best", "top")


@dataclass
class ModelEntry:
    """One evaluated model: its column label, model type and checkpoints."""

    label: str
    model_type: str
    checkpoint: Optional[str] = None
    decoder_checkpoint: Optional[str] = None


def parse_models(specs: Sequence[str], checkpoints: dict[str, str], decoders: dict[str, str]) -> list[ModelEntry]:
    """``[LABEL=]TYPE`` entries with --checkpoint / --decoder-checkpoint keyed by label."""
    entries = []
    for spec in specs:
        label, sep, model_type = spec.partition("=")
        if not sep:
            label = model_type = spec
        if not label or not model_type:
            raise ToolError(f"--models {spec!r}: expected TYPE or LABEL=TYPE")
        entries.append(ModelEntry(label, model_type, checkpoints.get(label), decoders.get(label)))
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise ToolError(f"--models: duplicate labels in {labels}; name them LABEL=TYPE")
    for option, mapping in (("--checkpoint", checkpoints), ("--decoder-checkpoint", decoders)):
        unknown = sorted(set(mapping) - set(labels))
        if unknown:
            raise ToolError(f"{option}: {unknown} name no model of --models {labels}")
    return entries


def parse_range(text: str) -> tuple[float, float]:
    """argparse type for 'LO-HI' pixel ranges."""
    lo, sep, hi = text.partition("-")
    try:
        r = (float(lo), float(hi))
    except ValueError:
        r = None
    if not sep or r is None or not 0 <= r[0] <= r[1]:
        raise argparse.ArgumentTypeError(f"{text!r} is not a range LO-HI with 0 <= LO <= HI")
    return r


def _range_name(r: tuple[float, float]) -> str:
    return f"{r[0]:g}-{r[1]:g}"


# ------------------------------------------------------------------------------------------ scoring
def _dice(cand, gt_mask: np.ndarray, gt_area: int) -> float:
    """DICE of an InstanceMask candidate against a full-resolution mask, computed inside the ROI."""
    x, y, w, h = cand.roi
    inter = int(np.count_nonzero(cand.mask & gt_mask[y:y + h, x:x + w])) if w and h else 0
    return 2.0 * inter / (cand.area + gt_area)


def _full_scores(cand, gt_mask: np.ndarray) -> dict[str, float]:
    from ..metrics import segmentation_scores

    pred = cand.full(gt_mask.shape) if cand is not None else np.zeros_like(gt_mask)
    return segmentation_scores(pred, gt_mask)


def _pick(cands: Sequence, gt_mask: np.ndarray, gt_area: int, top_of: Optional[Sequence[int]] = None
          ) -> tuple[Optional[int], Optional[int], list[float]]:
    """(best-DICE index, top-IoU index, DICEs); ``top_of`` restricts the top-IoU choice (None: all)."""
    dices = [_dice(c, gt_mask, gt_area) for c in cands]
    best = int(np.argmax(dices)) if dices else None
    pool = list(range(len(cands))) if top_of is None else list(top_of)
    top = max(pool, key=lambda k: cands[k].iou) if pool else None
    return best, top, dices


class Recorder:
    """Collects per-instance, robustness and timing rows of every model."""

    def __init__(self) -> None:
        self.instances: list[dict[str, Any]] = []
        self.robustness: list[dict[str, Any]] = []
        self.timing: list[dict[str, Any]] = []
        self.rejected: dict[str, int] = defaultdict(int)
        self.notes: list[str] = []
        self.params: dict[str, int] = {}

    def instance(self, model: str, strategy: str, image_id: int, gt, cands: Sequence,
                 best: Optional[int], top: Optional[int]) -> None:
        row: dict[str, Any] = {"model": model, "strategy": strategy, "image_id": image_id, "ann_id": gt.ann_id,
                               "class": gt.class_name, "area": gt.area, "candidates": len(cands)}
        for name, k in (("best", best), ("top", top)):
            scores = _full_scores(cands[k] if k is not None else None, gt.mask)
            row.update({f"{m}_{name}": v for m, v in scores.items()})
            row[f"pred_iou_{name}"] = float(cands[k].iou) if k is not None else float("nan")
        self.instances.append(row)


def evaluate_model(seg, label: str, dataset, strategies: Sequence[str], ranges: Sequence[tuple[float, float]],
                   repeats: int, seed: int, s1_knobs: dict, images: Sequence[int], rec: Recorder,
                   progress: bool = True) -> None:
    """Runs every strategy (and its perturbations) of one segmenter over ``images`` into ``rec``."""
    from tqdm import tqdm

    from ..prompt_strategies import perturb, strategy_prompt
    from ..prompts import PromptError, sanitize

    if "S1" in strategies and not hasattr(seg, "generate"):
        rec.notes.append(f"{label}: S1 skipped: segmenter {seg.name} has no everything mode")
    if hasattr(seg, "model"):
        rec.params[label] = int(sum(p.numel() for p in seg.model.parameters()))
    warm = dataset.load_image(images[0]) if images else None
    if warm is not None:  # untimed warm-up: first-call allocations, lazy initialisation
        enc = seg.encode([warm])[0]
        seg.segment([strategy_prompt("S5", np.ones(warm.shape[:2], bool))], encoded=enc)

    bar = tqdm(images, desc=f"{TOOL} {label}", unit="img", disable=not progress)
    for i in bar:
        rgb, sample = dataset.load_image(i), dataset[i]
        hw = rgb.shape[:2]
        if not sample.instances:
            continue
        t0 = time.perf_counter()
        enc = seg.encode([rgb])[0]
        rec.timing.append({"model": label, "stage": "embedding", "strategy": "", "image_id": sample.image_id,
                           "prompts": 0, "seconds": time.perf_counter() - t0})
        for strategy in strategies:
            if strategy == "S1":
                if not hasattr(seg, "generate"):
                    continue
                t0 = time.perf_counter()
                generated = seg.generate(rgb, encoded=enc, **s1_knobs)
                rec.timing.append({"model": label, "stage": "decoding", "strategy": "S1",
                                   "image_id": sample.image_id, "prompts": s1_knobs["points_per_side"] ** 2,
                                   "seconds": time.perf_counter() - t0})
                cands = [g.mask for g in generated]
                for gt in sample.instances:
                    on_object = [k for k, g in enumerate(generated)
                                 if gt.mask[min(int(g.point[1]), hw[0] - 1), min(int(g.point[0]), hw[1] - 1)]]
                    best, top, _ = _pick(cands, gt.mask, gt.area, on_object)
                    rec.instance(label, "S1", sample.image_id, gt, cands, best, top)
                continue
            prompts = [strategy_prompt(strategy, gt.mask, np.random.default_rng([seed, sample.image_id, gt.ann_id]),
                                       id=str(gt.ann_id)) for gt in sample.instances]
            t0 = time.perf_counter()
            all_cands = seg.segment(prompts, encoded=enc, return_all=True)
            rec.timing.append({"model": label, "stage": "decoding", "strategy": strategy,
                               "image_id": sample.image_id, "prompts": len(prompts),
                               "seconds": time.perf_counter() - t0})
            for gt, cands in zip(sample.instances, all_cands):
                best, top, _ = _pick(cands, gt.mask, gt.area)
                rec.instance(label, strategy, sample.image_id, gt, cands, best, top)
            for ri, r in enumerate(ranges):
                for k in range(repeats):
                    usable, index = [], []
                    for j, (gt, p) in enumerate(zip(sample.instances, prompts)):
                        moved = perturb(p, np.random.default_rng([seed, sample.image_id, gt.ann_id, ri, k]), r)
                        try:
                            usable.append(sanitize(moved, hw))
                            index.append(j)
                        except PromptError:
                            rec.rejected[f"{label}/{strategy}/{_range_name(r)}"] += 1
                    decoded = dict(zip(index, seg.segment(usable, encoded=enc, return_all=True) if usable else []))
                    for j, gt in enumerate(sample.instances):
                        dice_best = dice_top = 0.0
                        if j in decoded:
                            best, top, dices = _pick(decoded[j], gt.mask, gt.area)
                            dice_best, dice_top = dices[best], dices[top]
                        rec.robustness.append({"model": label, "strategy": strategy, "range": _range_name(r),
                                               "repeat": k, "image_id": sample.image_id, "ann_id": gt.ann_id,
                                               "dice_best": dice_best, "dice_top": dice_top,
                                               "usable": j in decoded})
        bar.set_postfix(instances=len(rec.instances))


# ------------------------------------------------------------------------------------------ reports
def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def report(out: Path, rec: Recorder, models: Sequence[str], strategies: Sequence[str],
           ranges: Sequence[tuple[float, float]]) -> dict:
    """Writes the tables, raw CSVs and plots; returns the summary (also written as summary.json)."""
    from .plots import dice_boxplot, ra_bars

    inst = defaultdict(list)
    for row in rec.instances:
        inst[(row["model"], row["strategy"])].append(row)
    times: dict[tuple, list] = defaultdict(list)
    for row in rec.timing:
        times[(row["model"], row["stage"], row["strategy"])].append(row)
    embed_ms = {m: 1000 * _mean([r["seconds"] for r in times[(m, "embedding", "")]]) for m in models}

    t1_header = ["Model", "Strategy", "Instances", "DICE", "Jaccard", "Hausdorff (px)", "DICE (top-IoU)",
                 "Jaccard (top-IoU)", "Hausdorff (top-IoU)", "Embedding (ms/img)", "Decoding (ms/img)",
                 "Decoding (ms/prompt)", "Params (M)"]
    t1, summary_models = [], {}
    for m in models:
        summary_models[m] = {"embedding_ms": embed_ms[m], "params": rec.params.get(m), "strategies": {}}
        for s in strategies:
            rows = inst.get((m, s))
            if not rows:
                continue
            dec = times[(m, "decoding", s)]
            per_img = 1000 * _mean([r["seconds"] for r in dec])
            per_prompt = 1000 * sum(r["seconds"] for r in dec) / max(sum(r["prompts"] for r in dec), 1)
            stats = {f"{k}_{how}": _mean([r[f"{k}_{how}"] for r in rows])
                     for k in ("dice", "jaccard", "hausdorff") for how in MATCHINGS}
            stats.update(instances=len(rows), decoding_ms_per_image=per_img, decoding_ms_per_prompt=per_prompt,
                         dice_best_std=float(np.std([r["dice_best"] for r in rows])))
            summary_models[m]["strategies"][s] = stats
            params = rec.params.get(m)
            t1.append([m, s, len(rows), stats["dice_best"], stats["jaccard_best"], stats["hausdorff_best"],
                       stats["dice_top"], stats["jaccard_top"], stats["hausdorff_top"], embed_ms[m], per_img,
                       per_prompt, params / 1e6 if params else float("nan")])
    write_table(out / "table1", t1_header, t1, "Table 1: accuracy (best-DICE and top-IoU matching) and speed")

    rob = defaultdict(list)
    for row in rec.robustness:
        rob[(row["model"], row["strategy"], row["range"])].append(row)
    t2_header = (["Model", "Strategy", "Matching", "DICE"] + [f"Drop {_range_name(r)} px" for r in ranges]
                 + ["Mean drop", "RA"])
    t2, ra, clean = [], defaultdict(dict), defaultdict(dict)
    for m in models:
        for s in strategies:
            if s == "S1" or (m, s) not in inst or not ranges or not rob.get((m, s, _range_name(ranges[0]))):
                continue
            for how in MATCHINGS:
                base = _mean([r[f"dice_{how}"] for r in inst[(m, s)]])
                drops = [base - _mean([r[f"dice_{how}"] for r in rob[(m, s, _range_name(r))]]) for r in ranges]
                value = base - float(np.mean(drops))
                t2.append([m, s, how, base, *drops, float(np.mean(drops)), value])
                summary_models[m]["strategies"][s][f"robustness_{how}"] = {
                    "drops": dict(zip(map(_range_name, ranges), drops)), "mean_drop": float(np.mean(drops)),
                    "ra": value}
                if how == "best":
                    ra[m][s], clean[m][s] = value, base
    if t2:
        write_table(out / "table2", t2_header, t2, "Table 2: DICE drop under shifted / expanded prompts, "
                                                   "robust accuracy RA = DICE - mean drop")
        ra_bars(out / "ra_bars.png", clean, ra)

    _csv(out / "instances.csv", rec.instances)
    _csv(out / "robustness.csv", rec.robustness)
    _csv(out / "timing.csv", rec.timing)
    dice_boxplot(out / "dice_boxplot.png",
                 {m: {s: [r["dice_best"] for r in inst.get((m, s), [])] for s in strategies if (m, s) in inst}
                  for m in models})
    summary = {"models": summary_models, "rejected_perturbed_prompts": dict(rec.rejected), "notes": rec.notes,
               "strategies": {s: STRATEGIES[s] for s in strategies}, "ranges": [list(r) for r in ranges]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


# -------------------------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(TOOL, help="DICE / Jaccard / Hausdorff, robustness and timing of SAM models (S1-S6)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="COCO instance-segmentation json")
    p.add_argument("--image-root", type=Path, default=None, help="folder of the images (default: the json's)")
    p.add_argument("--models", nargs="+", default=["vit_b"], metavar="[LABEL=]TYPE",
                   help="model types to compare (vit_b, vit_l, vit_h, mobile_sam:vit_t, hq:vit_b, ..., grabcut); "
                        "LABEL=TYPE names an entry, e.g. ft=vit_b with --decoder-checkpoint ft=...")
    p.add_argument("--checkpoint", action="append", metavar="LABEL=PATH",
                   help="full-model checkpoint of a --models entry (repeatable; none: random weights)")
    p.add_argument("--decoder-checkpoint", action="append", metavar="LABEL=PATH",
                   help="fine-tuned mask decoder of a --models entry (repeatable)")
    p.add_argument("--arch", type=parse_json_arg, default=None,
                   help="encoder size override for every SAM model, JSON or a JSON file (small test models)")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES),
                   help="prompting strategies (default: all)")
    p.add_argument("--shift-ranges", nargs="*", type=parse_range, default=list(SHIFT_RANGES), metavar="LO-HI",
                   help="perturbation ranges in pixels (default 0-10 10-20 20-30; none: no robustness test)")
    p.add_argument("--repeats", type=int, default=5, help="seeded repeats per perturbation range (default 5)")
    p.add_argument("--max-images", type=int, default=None, help="evaluate the first N images only")
    p.add_argument("--min-area", type=int, default=0, help="ground-truth instances with fewer pixels are left out")
    p.add_argument("--s1-points-per-side", type=int, default=32, help="S1 point grid (default 32)")
    p.add_argument("--s1-pred-iou-thresh", type=float, default=0.88, help="S1 predicted-IoU filter (default 0.88)")
    p.add_argument("--s1-stability-thresh", type=float, default=0.95, help="S1 stability filter (default 0.95)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--chunk-size", type=int, default=None, help="prompts per decoder call (default per device)")
    add_run_options(p, TOOL)
    p.set_defaults(func=run)
    return p


def evaluate(args: argparse.Namespace) -> tuple[Path, dict]:
    from ..data import CocoDataset
    from ..segmentation import build_segmenter

    models = parse_models(args.models, parse_mapping(args.checkpoint, "--checkpoint"),
                          parse_mapping(args.decoder_checkpoint, "--decoder-checkpoint"))
    if args.repeats < 0 or args.s1_points_per_side < 1:
        raise ToolError("--repeats must be >= 0 and --s1-points-per-side >= 1")
    strategies = [s for s in STRATEGIES if s in args.strategies]
    ranges = list(args.shift_ranges) if args.repeats else []
    dataset = CocoDataset(args.data, args.image_root, min_area=args.min_area)
    images = list(range(len(dataset)))[:args.max_images]
    if not images:
        raise ToolError(f"--data {args.data}: no images to evaluate")
    out = run_folder(args.out, TOOL)
    save_config(out, args)
    knobs = {"points_per_side": args.s1_points_per_side, "pred_iou_thresh": args.s1_pred_iou_thresh,
             "stability_score_thresh": args.s1_stability_thresh}
    rec = Recorder()
    for entry in models:
        try:
            seg = build_segmenter(entry.model_type, checkpoint=entry.checkpoint, device=args.device,
                                  precision=args.precision, decoder_checkpoint=entry.decoder_checkpoint,
                                  chunk_size=args.chunk_size, arch=args.arch)
        except (ValueError, KeyError) as e:
            raise ToolError(f"model {entry.label!r} ({entry.model_type}): {e}") from None
        evaluate_model(seg, entry.label, dataset, strategies, ranges, args.repeats, args.seed, knobs, images, rec)
    summary = report(out, rec, [e.label for e in models], strategies, ranges)
    return out, summary


def run(args: argparse.Namespace) -> int:
    """0 on success; 2 on bad input (one-line message, no traceback)."""
    from ..checkpoints import CheckpointError
    from ..data import DatasetError

    try:
        out, summary = evaluate(args)
    except (ToolError, DatasetError, CheckpointError) as e:
        print(f"{TOOL}: error: {e}", file=sys.stderr)
        return 2
    for note in summary["notes"]:
        print(f"{TOOL}: note: {note}", file=sys.stderr)
    print(f"{TOOL}: results in {out} (table1.md, table2.md, dice_boxplot.png, ra_bars.png)")
    return 0
