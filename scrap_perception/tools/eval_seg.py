"""``scrap-tools eval-seg``: segmentation accuracy, robustness and speed per model and prompting strategy.

The paper's protocol on a COCO dataset with ground-truth masks:
- strategies S1-S6 (``prompt_strategies``): S2-S6 prompts are built from each ground-truth mask; S1
  runs the everything mode (``AutomaticMaskGenerator``: point grid, IoU / stability filters, NMS).
  S6's point is the ground truth's deepest interior point, an oracle; beside it S6-centre (box + box
  centre: ``prompt_mode: box_point``, what the node did) and S6-refined (box decoded, the deepest point
  of that mask added, decoded again: ``prompt_mode: box_point_refined``), built from the box alone.
- every prompt is decoded with all candidate masks (``segment_candidates``); two matchings are reported:
  "best" = the candidate with the best DICE against the ground truth (the paper's), "top" = the
  candidate the model ranks first (highest predicted IoU). For S1, "best" searches all generated
  masks and "top" is the highest-IoU mask among those whose grid point lies on the object (none: an
  empty prediction).
- metrics DICE, Jaccard, Hausdorff and HD95 (``scrap_perception.metrics``, its empty-mask policy: an
  empty prediction scores the image diagonal, so Table 1 gives the median and the number of empty
  predictions beside the means); per row the DICE standard deviation and a bootstrap 95 % interval of
  the mean (``metrics.spread``, --bootstrap resamples of the instances).
- robustness (S2-S6 and the variants): boxes shifted, expanded or either (--perturb) and points moved by
  each range of pixels (``perturb``), ``--repeats`` seeded repeats; S6-centre and S6-refined move the
  box only, their point follows it. DICE drop = clean DICE - perturbed DICE, RA = DICE - mean drop over
  the ranges (= the mean perturbed DICE, so per instance RA_i = its mean perturbed DICE: std and bootstrap
  interval of RA come from those). A perturbed prompt left unusable by ``prompts.sanitize`` (all of it
  off the image) scores DICE 0 and is counted in Table 2 ("Unusable").
- timing: image embedding per image; prompt encoding + mask decoding per strategy (per image and per
  prompt; S1 per grid point; S6-refined both of its decoder calls), after one untimed warm-up image.
Everything random is seeded by --seed: prompt draws by (seed, image id, annotation id[, range, repeat]),
so every model sees the same prompts and S3/S4 share their positive points, S5/S6 and the variants their
box perturbations; random-weight models by the seed (``seed_models``); OpenCV's generator (GrabCut) per
decoder call (``seed_call``), so a strategy's result does not depend on which strategies ran before.
The dataset is validated and every model built before anything is evaluated or written.

Outputs in the results folder: table1.{md,csv} (accuracy + timing, the paper's Table 1), instances.csv,
timing.csv, dice_boxplot.png, summary.json (its "outputs" lists what was written), config.json; with a
robustness test also table2.{md,csv} (Table 2), robustness.csv and ra_bars.png.
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

from ..devices import PRECISION_CHOICES
from ..prompt_strategies import PERTURB_MODES, SHIFT_RANGES, STRATEGIES
from . import (ToolError, add_run_options, fail, input_errors, parse_json_arg, parse_mapping, run_folder, save_config,
               seed_call, seed_models, write_table)

TOOL = "eval-seg"
MATCHINGS = ("best", "top")
_TAGS = {s: k for k, s in enumerate(STRATEGIES)}  # stable integer per strategy for seeding


@dataclass
class ModelEntry:
    """One evaluated model: its column label, model type and checkpoints."""

    label: str
    model_type: str
    checkpoint: Optional[str] = None
    decoder_checkpoint: Optional[str] = None


def parse_models(specs: Sequence[str], checkpoints: dict[str, str], decoders: dict[str, str]) -> list[ModelEntry]:
    """``[LABEL=]TYPE`` entries with --checkpoint / --decoder-checkpoint keyed by label (checkpoint 'none':
    random weights)."""
    entries = []
    for spec in specs:
        label, sep, model_type = spec.partition("=")
        if not sep:
            label = model_type = spec
        if not label or not model_type:
            raise ToolError(f"--models {spec!r}: expected TYPE or LABEL=TYPE")
        checkpoint = checkpoints.get(label)
        entries.append(ModelEntry(label, model_type, None if str(checkpoint).lower() == "none" else checkpoint,
                                  decoders.get(label)))
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


def _off_object(prompt, gt_mask: np.ndarray) -> int:
    """Positive points of ``prompt`` whose pixel is not on the ground-truth mask (0 without a prompt)."""
    if prompt is None:
        return 0
    pts = prompt.points[prompt.point_labels == 1].astype(int)
    return int(np.count_nonzero(~gt_mask[pts[:, 1], pts[:, 0]]))


class Recorder:
    """Collects per-instance, robustness and timing rows of every model."""

    def __init__(self) -> None:
        self.instances: list[dict[str, Any]] = []
        self.robustness: list[dict[str, Any]] = []
        self.timing: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.params: dict[str, int] = {}

    def instance(self, model: str, strategy: str, image_id: int, gt, cands: Sequence,
                 best: Optional[int], top: Optional[int], prompt=None, fallback: bool = False) -> None:
        row: dict[str, Any] = {"model": model, "strategy": strategy, "image_id": image_id, "ann_id": gt.ann_id,
                               "class": gt.class_name, "area": gt.area, "candidates": len(cands),
                               "points_off_object": _off_object(prompt, gt.mask), "point_fallback": fallback}
        for name, k in (("best", best), ("top", top)):
            scores = _full_scores(cands[k] if k is not None else None, gt.mask)
            row.update({f"{m}_{name}": v for m, v in scores.items()})
            row[f"pred_iou_{name}"] = float(cands[k].iou) if k is not None else float("nan")
        self.instances.append(row)


def decode(seg, strategy: str, prompts: Sequence, enc, keys: Sequence[int]
           ) -> tuple[list[list], list, list[bool]]:
    """Candidates per prompt of ``strategy`` (sanitized base prompts: S6-centre / S6-refined get their
    point here), the prompts decoded, and per prompt whether S6-refined fell back to the box centre.
    OpenCV's generator is seeded per call from ``keys`` + the strategy (S6-refined's first call as S5's,
    so GrabCut gives it the S5 masks)."""
    from ..prompt_strategies import refine_prompts, with_centre

    fallbacks = [False] * len(prompts)
    if strategy == "S6-centre":
        prompts = [with_centre(p) for p in prompts]
    elif strategy == "S6-refined":
        seed_call(*keys, _TAGS["S5"])
        prompts, refined = refine_prompts(seg, prompts, enc)
        fallbacks = [not r for r in refined]
    seed_call(*keys, _TAGS[strategy])
    return (seg.segment_candidates(prompts, encoded=enc) if prompts else []), list(prompts), fallbacks


def evaluate_model(seg, label: str, dataset, strategies: Sequence[str], ranges: Sequence[tuple[float, float]],
                   repeats: int, seed: int, s1_knobs: dict, images: Sequence[int], rec: Recorder,
                   perturb_mode: str = "both", progress: bool = True) -> None:
    """Runs every strategy (and its perturbations) of one segmenter over ``images`` into ``rec``."""
    from tqdm import tqdm

    from ..prompt_strategies import strategy_prompt
    from ..segmentation.automatic import GridSegmenter

    if "S1" in strategies and not isinstance(seg, GridSegmenter):
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
        if not sample.instances:
            continue
        t0 = time.perf_counter()
        enc = seg.encode([rgb])[0]
        rec.timing.append({"model": label, "stage": "embedding", "strategy": "", "image_id": sample.image_id,
                           "prompts": 0, "seconds": time.perf_counter() - t0})
        for strategy in strategies:
            if strategy == "S1":
                if isinstance(seg, GridSegmenter):
                    _everything(seg, label, rgb, sample, enc, s1_knobs, rec)
                continue
            prompts = [strategy_prompt(strategy, gt.mask, np.random.default_rng([seed, sample.image_id, gt.ann_id]),
                                       id=str(gt.ann_id)) for gt in sample.instances]
            t0 = time.perf_counter()
            all_cands, final, fallbacks = decode(seg, strategy, prompts, enc, (seed, sample.image_id, 0, 0))
            rec.timing.append({"model": label, "stage": "decoding", "strategy": strategy,
                               "image_id": sample.image_id, "prompts": len(prompts),
                               "seconds": time.perf_counter() - t0})
            for gt, cands, p, fb in zip(sample.instances, all_cands, final, fallbacks):
                best, top, _ = _pick(cands, gt.mask, gt.area)
                rec.instance(label, strategy, sample.image_id, gt, cands, best, top, p, fb)
            for ri, r in enumerate(ranges):
                for k in range(repeats):
                    _perturbed(seg, label, strategy, sample, prompts, enc, (seed, ri, k, r), perturb_mode, rec)
        bar.set_postfix(instances=len(rec.instances))


def _everything(seg, label: str, rgb: np.ndarray, sample, enc, s1_knobs: dict, rec: Recorder) -> None:
    """S1: the everything mode's masks matched to each ground-truth instance."""
    from ..segmentation.automatic import AutomaticMaskGenerator

    hw = rgb.shape[:2]
    t0 = time.perf_counter()
    generated = AutomaticMaskGenerator(seg, **s1_knobs).generate(rgb, encoded=enc)
    rec.timing.append({"model": label, "stage": "decoding", "strategy": "S1", "image_id": sample.image_id,
                       "prompts": s1_knobs["points_per_side"] ** 2, "seconds": time.perf_counter() - t0})
    cands = [g.mask for g in generated]
    for gt in sample.instances:
        on_object = [k for k, g in enumerate(generated)
                     if gt.mask[min(int(g.point[1]), hw[0] - 1), min(int(g.point[0]), hw[1] - 1)]]
        best, top, _ = _pick(cands, gt.mask, gt.area, on_object)
        rec.instance(label, "S1", sample.image_id, gt, cands, best, top)


def _perturbed(seg, label: str, strategy: str, sample, prompts: Sequence, enc, draw: tuple, mode: str,
               rec: Recorder) -> None:
    """One repeat of one range: every prompt of the image perturbed, sanitized, decoded, scored."""
    from ..prompt_strategies import perturb
    from ..prompts import PromptError, sanitize

    seed, ri, k, r = draw
    hw = (sample.height, sample.width)
    usable, index = [], []
    for j, (gt, p) in enumerate(zip(sample.instances, prompts)):
        moved = perturb(p, np.random.default_rng([seed, sample.image_id, gt.ann_id, ri, k]), r, mode)
        try:
            usable.append(sanitize(moved, hw))
            index.append(j)
        except PromptError:
            pass
    cands, _, fallbacks = decode(seg, strategy, usable, enc, (seed, sample.image_id, ri + 1, k))
    decoded = dict(zip(index, zip(cands, fallbacks)))
    for j, gt in enumerate(sample.instances):
        dice_best = dice_top = 0.0
        fb = False
        if j in decoded:
            best, top, dices = _pick(decoded[j][0], gt.mask, gt.area)
            dice_best, dice_top, fb = dices[best], dices[top], decoded[j][1]
        rec.robustness.append({"model": label, "strategy": strategy, "range": _range_name(r), "repeat": k,
                               "image_id": sample.image_id, "ann_id": gt.ann_id, "dice_best": dice_best,
                               "dice_top": dice_top, "usable": j in decoded, "point_fallback": fb})


# ------------------------------------------------------------------------------------------ reports
def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


T1_HEADER = ["Model", "Strategy", "Instances", "DICE", "DICE std", "DICE 95% lo", "DICE 95% hi", "Jaccard",
             "Hausdorff mean (px)", "Hausdorff median (px)", "HD95 mean (px)", "HD95 median (px)",
             "Empty predictions", "Points off object", "Point fallbacks", "DICE (top-IoU)", "HD95 median (top-IoU)",
             "Embedding (ms/img)", "Decoding (ms/img)", "Decoding (ms/prompt)", "Params (M)"]


def table1_rows(rec: Recorder, models: Sequence[str], strategies: Sequence[str], seed: int,
                resamples: int) -> tuple[list[list], dict]:
    """Table 1 rows and their summary entries ({model: {...}})."""
    from ..metrics import spread

    inst = defaultdict(list)
    for row in rec.instances:
        inst[(row["model"], row["strategy"])].append(row)
    times: dict[tuple, list] = defaultdict(list)
    for row in rec.timing:
        times[(row["model"], row["stage"], row["strategy"])].append(row)
    rows, summary = [], {}
    for m in models:
        embed_ms = 1000 * _mean([r["seconds"] for r in times[(m, "embedding", "")]])
        summary[m] = {"embedding_ms": embed_ms, "params": rec.params.get(m), "strategies": {}}
        for s in strategies:
            got = inst.get((m, s))
            if not got:
                continue
            dec = times[(m, "decoding", s)]
            per_img = 1000 * _mean([r["seconds"] for r in dec])
            per_prompt = 1000 * sum(r["seconds"] for r in dec) / max(sum(r["prompts"] for r in dec), 1)
            dice = spread([r["dice_best"] for r in got], seed, resamples)
            hd, hd95 = (spread([r[f"{k}_best"] for r in got], seed, resamples) for k in ("hausdorff", "hd95"))
            top_hd95 = float(np.median([r["hd95_top"] for r in got]))
            stats = {"instances": len(got), "dice_best": dice.mean, "dice_best_std": dice.std,
                     "dice_best_ci95": [dice.lo, dice.hi], "jaccard_best": _mean([r["jaccard_best"] for r in got]),
                     "hausdorff_best": hd.mean, "hausdorff_best_median": hd.median, "hd95_best": hd95.mean,
                     "hd95_best_median": hd95.median, "empty_best": int(sum(r["empty_best"] for r in got)),
                     "points_off_object": int(sum(r["points_off_object"] for r in got)),
                     "point_fallbacks": int(sum(r["point_fallback"] for r in got)),
                     "dice_top": _mean([r["dice_top"] for r in got]), "hd95_top_median": top_hd95,
                     "decoding_ms_per_image": per_img, "decoding_ms_per_prompt": per_prompt}
            summary[m]["strategies"][s] = stats
            params = rec.params.get(m)
            rows.append([m, s, len(got), dice.mean, dice.std, dice.lo, dice.hi, stats["jaccard_best"], hd.mean,
                         hd.median, hd95.mean, hd95.median, stats["empty_best"], stats["points_off_object"],
                         stats["point_fallbacks"],
                         stats["dice_top"], top_hd95, embed_ms, per_img, per_prompt,
                         params / 1e6 if params else float("nan")])
    return rows, summary


def _ra_per_instance(rows: Sequence[dict], ranges: Sequence[str], how: str) -> np.ndarray:
    """(N,) per instance the mean over ranges of its mean perturbed DICE over repeats."""
    per: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        per[(r["image_id"], r["ann_id"])][r["range"]].append(r[f"dice_{how}"])
    return np.array([np.mean([np.mean(v[rg]) for rg in ranges]) for v in per.values()], np.float64)


def table2_rows(rec: Recorder, models: Sequence[str], strategies: Sequence[str],
                ranges: Sequence[tuple[float, float]], summary: dict, seed: int, resamples: int
                ) -> tuple[list[list], dict, dict]:
    """Table 2 rows, and clean DICE / RA ({model: {strategy: value}}, best matching) for the bars."""
    from ..metrics import spread

    inst = defaultdict(list)
    for row in rec.instances:
        inst[(row["model"], row["strategy"])].append(row)
    rob = defaultdict(list)
    for row in rec.robustness:
        rob[(row["model"], row["strategy"])].append(row)
    names = [_range_name(r) for r in ranges]
    rows, ra, clean = [], defaultdict(dict), defaultdict(dict)
    for m in models:
        for s in strategies:
            got = rob.get((m, s))
            if not got:
                continue
            unusable = sum(not r["usable"] for r in got)
            fallbacks = sum(r["point_fallback"] for r in got)
            for how in MATCHINGS:
                base = _mean([r[f"dice_{how}"] for r in inst[(m, s)]])
                drops = [base - _mean([r[f"dice_{how}"] for r in got if r["range"] == n]) for n in names]
                value = base - float(np.mean(drops))
                per = spread(_ra_per_instance(got, names, how), seed, resamples)
                rows.append([m, s, how, base, *drops, float(np.mean(drops)), value, per.std, per.lo, per.hi,
                             unusable, fallbacks, len(got)])
                summary[m]["strategies"][s][f"robustness_{how}"] = {
                    "drops": dict(zip(names, drops)), "mean_drop": float(np.mean(drops)), "ra": value,
                    "ra_std": per.std, "ra_ci95": [per.lo, per.hi], "unusable": unusable,
                    "point_fallbacks": fallbacks, "perturbed": len(got)}
                if how == "best":
                    ra[m][s], clean[m][s] = value, base
    return rows, clean, ra


def report(out: Path, rec: Recorder, models: Sequence[str], strategies: Sequence[str],
           ranges: Sequence[tuple[float, float]], seed: int = 0, resamples: int = 1000,
           perturb_mode: str = "both") -> dict:
    """Writes the tables, raw CSVs and plots; returns the summary (also written as summary.json), whose
    "outputs" names every file written."""
    from .plots import dice_boxplot, ra_bars

    written = []
    t1, summary_models = table1_rows(rec, models, strategies, seed, resamples)
    write_table(out / "table1", T1_HEADER, t1, "Table 1: accuracy (best-DICE and top-IoU matching) and speed")
    written += ["table1.md", "table1.csv"]
    t2, clean, ra = table2_rows(rec, models, strategies, ranges, summary_models, seed, resamples)
    if t2:
        header = (["Model", "Strategy", "Matching", "DICE"] + [f"Drop {_range_name(r)} px" for r in ranges]
                  + ["Mean drop", "RA", "RA std", "RA 95% lo", "RA 95% hi", "Unusable", "Point fallbacks",
                     "Perturbed prompts"])
        write_table(out / "table2", header, t2, f"Table 2: DICE drop under perturbed prompts (box: {perturb_mode}), "
                                                "robust accuracy RA = DICE - mean drop")
        ra_bars(out / "ra_bars.png", clean, ra)
        _csv(out / "robustness.csv", rec.robustness)
        written += ["table2.md", "table2.csv", "ra_bars.png", "robustness.csv"]
    inst = defaultdict(list)
    for row in rec.instances:
        inst[(row["model"], row["strategy"])].append(row["dice_best"])
    _csv(out / "instances.csv", rec.instances)
    _csv(out / "timing.csv", rec.timing)
    dice_boxplot(out / "dice_boxplot.png", {m: {s: inst[(m, s)] for s in strategies if (m, s) in inst}
                                            for m in models})
    written += ["instances.csv", "timing.csv", "dice_boxplot.png", "summary.json", "config.json"]
    summary = {"models": summary_models, "notes": rec.notes, "strategies": {s: STRATEGIES[s] for s in strategies},
               "ranges": [list(r) for r in ranges], "perturb": perturb_mode, "bootstrap_resamples": resamples,
               "outputs": written}
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
    p.add_argument("--perturb", default="both", choices=PERTURB_MODES,
                   help="how a box is perturbed: shifted, expanded on every side, or either 50/50 (default both)")
    p.add_argument("--repeats", type=int, default=5, help="seeded repeats per perturbation range (default 5)")
    p.add_argument("--max-images", type=int, default=None, help="evaluate the first N images only")
    p.add_argument("--min-area", type=int, default=0, help="ground-truth instances with fewer pixels are left out")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples of the 95%% intervals (default 1000)")
    p.add_argument("--s1-points-per-side", type=int, default=32, help="S1 point grid (default 32)")
    p.add_argument("--s1-pred-iou-thresh", type=float, default=0.88, help="S1 predicted-IoU filter (default 0.88)")
    p.add_argument("--s1-stability-thresh", type=float, default=0.95, help="S1 stability filter (default 0.95)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                   help="auto (default): bf16 where the device runs it natively, else fp32; fp16 needs CUDA")
    p.add_argument("--chunk-size", type=int, default=None, help="prompts per decoder call (default per device)")
    add_run_options(p, TOOL)
    p.set_defaults(func=run)
    return p


def build_models(entries: Sequence[ModelEntry], args: argparse.Namespace) -> list:
    """Every segmenter of --models, each drawn after ``seed_models(--seed)`` (ToolError naming a bad one)."""
    from ..segmentation import build_segmenter

    out = []
    for entry in entries:
        seed_models(args.seed)
        try:
            out.append(build_segmenter(entry.model_type, checkpoint=entry.checkpoint, device=args.device,
                                       precision=args.precision, decoder_checkpoint=entry.decoder_checkpoint,
                                       chunk_size=args.chunk_size, arch=args.arch))
        except (ValueError, KeyError) as e:
            raise ToolError(f"model {entry.label!r} ({entry.model_type}): {e}") from None
    return out


def evaluate(args: argparse.Namespace) -> tuple[Path, dict]:
    from ..data import CocoDataset

    models = parse_models(args.models, parse_mapping(args.checkpoint, "--checkpoint"),
                          parse_mapping(args.decoder_checkpoint, "--decoder-checkpoint"))
    if args.repeats < 0 or args.s1_points_per_side < 1 or args.bootstrap < 1:
        raise ToolError("--repeats must be >= 0, --s1-points-per-side and --bootstrap >= 1")
    strategies = [s for s in STRATEGIES if s in args.strategies]
    ranges = list(args.shift_ranges) if args.repeats else []
    dataset = CocoDataset(args.data, args.image_root, min_area=args.min_area)
    images = list(range(len(dataset)))[:args.max_images]
    if not images:
        raise ToolError(f"--data {args.data}: no images to evaluate")
    dataset.validate(images, progress=True)
    segmenters = build_models(models, args)
    knobs = {"points_per_side": args.s1_points_per_side, "pred_iou_thresh": args.s1_pred_iou_thresh,
             "stability_score_thresh": args.s1_stability_thresh}
    rec = Recorder()
    for entry, seg in zip(models, segmenters):
        evaluate_model(seg, entry.label, dataset, strategies, ranges, args.repeats, args.seed, knobs, images, rec,
                       args.perturb)
    out = run_folder(args.out, TOOL)
    save_config(out, args)
    return out, report(out, rec, [e.label for e in models], strategies, ranges, args.seed, args.bootstrap,
                       args.perturb)


def run(args: argparse.Namespace) -> int:
    """0 on success; 2 on bad input (one-line message, no traceback)."""
    try:
        out, summary = evaluate(args)
    except input_errors() as e:
        return fail(TOOL, e)
    for note in summary["notes"]:
        print(f"{TOOL}: note: {note}", file=sys.stderr)
    shown = [n for n in summary["outputs"] if n.endswith((".md", ".png"))]
    print(f"{TOOL}: results in {out} ({', '.join(shown)})")
    return 0
