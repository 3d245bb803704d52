"""``scrap-tools eval-assoc``: cross-view association, triangulation and tracking on a generated rig.

Input: a ``scrap-tools synth --cameras N`` folder: rig.yaml, annotations.json (COCO; images carry
``camera`` and ``frame``, annotations ``object_id``) and objects.json (per frame each object's true
position, the centre of its bounding box, world metres). Each frame is one camera set; per condition its
detections are built, associated (``multiview.association``), located (``multiview.triangulation``)
and tracked over the frames (``multiview.tracking``, stamps 1 s apart):

- conditions: ``gt`` = the ground-truth masks; ``grabcut`` = GrabCut (``build_segmenter("grabcut")``,
  NOT SAM) prompted as the node does (box + its centre) with the tight ground-truth box; ``grabcut+jitter
  LO-HI`` = the same with detector-like boxes: shifted or grown by LO-HI px (``prompt_strategies.perturb``,
  seeded). Ground-truth instances under --min-area pixels are left out everywhere.
- cues: ``geometry`` alone, and ``geometry+colour``: each detection gets, as its embedding, a
  STAND-IN for CN-CLIP's — the Hellinger-normalised HSV colour histogram of its masked pixels (CN-CLIP
  with random weights, all that is available without checkpoints, carries no signal; with real weights
  the node's embeddings go in the same slot).
- metrics, pooled over the frames: pairwise precision / recall / F1 over pairs of detections in
  different cameras (a pair is predicted when one group holds both, true when they share object_id;
  as in multi-camera MOT evaluation); objects recovered: of the true objects seen by two cameras or more
  (instances >= --min-area), those some group stands for (a group stands for the object most of its
  members belong to when at least two do); 3D error of each recovered object's position against
  objects.json (median, p95, in m and in % of the scene extent: the diagonal of the box around every
  object's bounding box, median over frames); reprojection error of the triangulated centroids; ID
  switches: times a true object's track id changes between frames in which it is recovered.

Outputs in the results folder: table.{md,csv}, objects.csv (every recovered object), positions.png (top
view, estimated vs true: ground-truth masks, and GrabCut with 10-20 px jitter or else the last
condition), error_hist.png, summary.json (its "outputs" lists what was written), config.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from math import comb
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..multiview.association import AssociationConfig
from ..multiview.tracking import Tracker, TrackerConfig
from ..multiview.views import Detection, DetectionRef
from ..prompt_strategies import SHIFT_RANGES
from . import ToolError, add_run_options, fail, input_errors, run_folder, save_config, seed_call, write_table
from .eval_seg import parse_range

TOOL = "eval-assoc"
CUES = ("geometry", "geometry+colour")


# ------------------------------------------------------------------------------------------- input
@dataclass
class SynthSet:
    """A synth --cameras folder. images: (frame, camera) -> image record; anns: image id -> its
    annotations; truth: frame -> object_id -> objects.json record."""

    folder: Path
    rig: Any
    images: dict[tuple[int, str], dict]
    anns: dict[int, list[dict]]
    truth: dict[int, dict[int, dict]]

    @property
    def frames(self) -> list[int]:
        return sorted(self.truth)


def load_set(folder: Path) -> SynthSet:
    """Reads the folder; ToolError naming the file and record for anything missing or malformed."""
    from ..multiview.rig import RigError, load_rig

    try:
        rig = load_rig(folder / "rig.yaml")
        coco = json.loads((folder / "annotations.json").read_text(encoding="utf-8"))
        objects = json.loads((folder / "objects.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, RigError) as e:
        raise ToolError(f"{folder}: not a synth --cameras folder: {e}") from None
    images, anns = {}, defaultdict(list)
    try:
        for rec in coco["images"]:
            if rec["camera"] not in rig:
                raise ToolError(f"{folder}/annotations.json: image {rec['id']}: camera {rec['camera']!r} "
                                f"is not in rig.yaml {rig.names}")
            images[(int(rec["frame"]), rec["camera"])] = rec
        for ann in coco["annotations"]:
            anns[ann["image_id"]].append({**ann, "object_id": int(ann["object_id"])})
        truth = {int(f["frame"]): {int(o["object_id"]): o for o in f["objects"]} for f in objects["frames"]}
    except (KeyError, TypeError, ValueError) as e:
        raise ToolError(f"{folder}: annotations.json / objects.json lack a field of the synth format: {e!r}") from None
    missing = [rec["file_name"] for rec in images.values() if not (folder / rec["file_name"]).is_file()]
    if missing:
        raise ToolError(f"{folder}/annotations.json: unreadable image {missing[0]} (missing; {len(missing)} in all)")
    return SynthSet(folder, rig, images, dict(anns), truth)


def scene_extent(objects: Mapping[int, dict]) -> float:
    """Diagonal (m) of the axis-aligned box around every object's (yawed) bounding box."""
    corners = []
    for o in objects.values():
        c, s = np.cos(o["yaw"]), np.sin(o["yaw"])
        R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
        half = np.asarray(o["size"], float) / 2
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
        corners.append((signs * half) @ R.T + np.asarray(o["position"], float))
    pts = np.concatenate(corners)
    return float(np.linalg.norm(pts.max(0) - pts.min(0)))


def _decode(ann: dict) -> np.ndarray:
    """(H, W) bool mask of an annotation's RLE; ToolError when it does not decode."""
    from pycocotools import mask as mask_utils

    try:
        seg = ann["segmentation"]
        counts = seg["counts"].encode("ascii") if isinstance(seg["counts"], str) else seg["counts"]
        rle = mask_utils.frPyObjects(seg, *seg["size"]) if isinstance(seg["counts"], list) else \
            {"size": seg["size"], "counts": counts}
        return mask_utils.decode(rle).astype(bool)
    except Exception as e:  # pycocotools raises bare TypeErrors/ValueErrors on malformed input
        raise ToolError(f"annotation {ann.get('id')!r}: segmentation does not decode: {e}") from None


def colour_embedding(rgb: np.ndarray, det: Detection) -> np.ndarray:
    """(128,) the embedding STAND-IN: sqrt of the normalised 8x4x4 HSV histogram of the masked pixels
    (unit length; the cosine of two is their Bhattacharyya coefficient)."""
    import cv2

    x, y, w, h = det.roi
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb[y:y + h, x:x + w]), cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], det.mask.astype(np.uint8), [8, 4, 4], [0, 180, 0, 256, 0, 256])
    v = np.sqrt(hist.ravel() / max(hist.sum(), 1.0))
    return v / max(np.linalg.norm(v), 1e-12)


@dataclass(frozen=True)
class Condition:
    """name: table label; masks: "gt" or "grabcut"; jitter: (lo, hi) px box perturbation or None."""

    name: str
    masks: str
    jitter: Optional[tuple[float, float]] = None


def conditions(jitters: Sequence[tuple[float, float]], grabcut: bool = True) -> list[Condition]:
    out = [Condition("gt", "gt")]
    if grabcut:
        out.append(Condition("grabcut", "grabcut"))
        out += [Condition(f"grabcut+jitter {lo:g}-{hi:g}", "grabcut", (lo, hi)) for lo, hi in jitters]
    return out


def grabcut_masks(segmenter, rgb: np.ndarray, boxes: Sequence[Sequence[float]], jitter: Optional[tuple[float, float]],
                  rng: np.random.Generator) -> list[Optional[np.ndarray]]:
    """(H, W) bool GrabCut mask per COCO box [x, y, w, h], prompted as the node does (box + its centre)
    after an optional jitter; None where the jittered box left the image."""
    from ..prompt_strategies import perturb
    from ..prompts import PromptError, box_point_prompt, box_prompt, sanitize

    prompts, slots = [], []
    for k, (x, y, w, h) in enumerate(boxes):
        box = np.array([x, y, x + w, y + h], np.float32)
        if jitter is not None:
            box = perturb(box_prompt(box), rng, jitter).box
        try:
            prompts.append(sanitize(box_point_prompt(box), rgb.shape[:2]))
            slots.append(k)
        except PromptError:
            continue
    out: list[Optional[np.ndarray]] = [None] * len(boxes)
    segmenter.set_image(rgb)
    for k, m in zip(slots, segmenter.segment(prompts)):
        out[k] = m.full(rgb.shape[:2])
    return out


def frame_views(ds: SynthSet, frame: int, cond: Condition, cond_index: int, segmenter, seed: int, min_area: int
                ) -> tuple[dict[str, list[Detection]], dict[DetectionRef, int]]:
    """The detections of one frame under ``cond`` (every camera; embeddings = the colour stand-in) and the
    true object id of each (camera, index). Random draws are seeded by (seed, frame, camera, condition)."""
    from ..multiview.views import detection_from_full

    views: dict[str, list[Detection]] = {}
    labels: dict[DetectionRef, int] = {}
    for cam_index, cam in enumerate(ds.rig.names):
        rec = ds.images.get((frame, cam))
        if rec is None:
            continue
        rgb = _load_rgb(ds.folder / rec["file_name"])
        kept = [(a, m) for a in ds.anns.get(rec["id"], []) for m in [_decode(a)] if m.sum() >= min_area]
        masks: list[Optional[np.ndarray]] = [m for _, m in kept]
        if cond.masks == "grabcut":
            seed_call(seed, frame, cam_index, cond_index)
            rng = np.random.default_rng([seed, frame, cam_index, cond_index])
            masks = grabcut_masks(segmenter, rgb, [a["bbox"] for a, _ in kept], cond.jitter, rng)
        dets: list[Detection] = []
        for (a, _), m in zip(kept, masks):
            if m is None or not m.any():
                continue
            det = detection_from_full(cam, f"{cam}/{a['id']}", m)
            labels[(cam, len(dets))] = int(a["object_id"])
            dets.append(replace(det, embedding=colour_embedding(rgb, det)))
        views[cam] = dets
    return views, labels


def _load_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ToolError(f"{path}: unreadable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def seen_twice(labels: Mapping[DetectionRef, int]) -> set[int]:
    """Object ids that ``labels`` (detection -> true id) places in two cameras or more."""
    cams = defaultdict(set)
    for (cam, _), oid in labels.items():
        cams[oid].add(cam)
    return {o for o, c in cams.items() if len(c) >= 2}


# ----------------------------------------------------------------------------------------- metrics
def pair_counts(pred: Mapping[DetectionRef, Optional[int]], truth: Mapping[DetectionRef, int]
                ) -> tuple[int, int, int]:
    """(true positives, predicted pairs, true pairs) over the unordered pairs of detections in different
    cameras; pred: detection -> its group (None or absent: alone); truth: detection -> true object id."""
    def pairs(key) -> int:
        per_key, per_key_cam = Counter(), Counter()
        for ref in truth:
            k = key(ref)
            if k is not None:
                per_key[k] += 1
                per_key_cam[(k, ref[0])] += 1
        return sum(comb(n, 2) for n in per_key.values()) - sum(comb(n, 2) for n in per_key_cam.values())

    tp = pairs(lambda r: None if pred.get(r) is None else (pred[r], truth[r]))
    return tp, pairs(lambda r: pred.get(r)), pairs(lambda r: truth[r])


def represented(groups: Sequence[Sequence[DetectionRef]], truth: Mapping[DetectionRef, int]) -> dict[int, int]:
    """True object id -> index of the group standing for it: the id most of a group's members carry (ties:
    the smallest) when at least two do; of several groups for one id, the one with most of its members."""
    best: dict[int, tuple[int, int]] = {}
    for g, members in enumerate(groups):
        counts = Counter(truth[r] for r in members)
        oid, n = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if n >= 2 and n > best.get(oid, (0, -1))[0]:
            best[oid] = (n, g)
    return {oid: g for oid, (_, g) in best.items()}


@dataclass
class Tally:
    """Everything one (condition, cues) run counts over the frames."""

    tp: int = 0
    n_pred: int = 0
    n_true: int = 0
    detections: int = 0
    eligible: int = 0
    recovered: int = 0
    switches: int = 0
    seconds: float = 0.0
    sets: int = 0
    errors: list[float] = field(default_factory=list)
    reprojection: list[float] = field(default_factory=list)
    estimates: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    last_track: dict[int, int] = field(default_factory=dict)


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else (0.0 if p == p and r == r else float("nan"))


def _stat(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


TABLE_HEADER = ["Condition", "Cues", "Sets", "Detections", "True pairs", "Precision", "Recall", "F1",
                "Objects (>=2 views)", "Recovered", "3D median (m)", "3D p95 (m)", "3D median (% extent)",
                "3D p95 (% extent)", "Reprojection median (px)", "ID switches", "Association + location (ms/set)"]


def table_row(cond: str, cues: str, t: Tally, extent: float) -> list[Any]:
    p, r = _ratio(t.tp, t.n_pred), _ratio(t.tp, t.n_true)
    med, p95 = _stat(t.errors, 50), _stat(t.errors, 95)
    return [cond, cues, t.sets, t.detections, t.n_true, p, r, _f1(p, r), t.eligible, _ratio(t.recovered, t.eligible),
            med, p95, 100 * med / extent, 100 * p95 / extent, _stat(t.reprojection, 50), t.switches,
            1000 * t.seconds / max(t.sets, 1)]


# -------------------------------------------------------------------------------------------- run
def run_set(ds: SynthSet, frame: int, views: Mapping[str, Sequence[Detection]], labels: Mapping[DetectionRef, int],
            eligible: set[int], config: AssociationConfig, tracker, tally: Tally, rows: list, tag: tuple[str, str]
            ) -> None:
    """Associates, locates and tracks one camera set into ``tally`` (and a row per recovered object)."""
    from ..multiview.association import associate
    from ..multiview.triangulation import locate

    t0 = time.perf_counter()
    groups = associate(ds.rig, views, config)
    located = [locate([ds.rig[c] for c, _ in g.members], [views[c][i] for c, i in g.members]) for g in groups]
    ids = tracker.update(np.array([loc.position for loc in located]).reshape(-1, 3), float(frame))
    tally.seconds += time.perf_counter() - t0
    pred = {ref: k for k, g in enumerate(groups) for ref in g.members}
    tp, n_pred, n_true = pair_counts(pred, labels)
    tally.tp, tally.n_pred, tally.n_true = tally.tp + tp, tally.n_pred + n_pred, tally.n_true + n_true
    tally.sets += 1
    tally.detections += len(labels)
    tally.eligible += len(eligible)
    truth = ds.truth[frame]
    for oid, g in represented([grp.members for grp in groups], labels).items():
        loc, true = located[g], np.asarray(truth[oid]["position"], float)
        err = float(np.linalg.norm(loc.position - true))
        tally.recovered += oid in eligible
        tally.errors.append(err)
        tally.reprojection += [float(v) for v in loc.reprojection_px]
        tally.estimates.append((loc.position, true))
        if oid in tally.last_track and tally.last_track[oid] != ids[g]:
            tally.switches += 1
        tally.last_track[oid] = ids[g]
        rows.append([*tag, frame, oid, truth[oid]["class_name"], len(groups[g].members), *np.round(loc.position, 4),
                     *np.round(true, 4), round(err, 4), round(float(loc.reprojection_px.max()), 3), ids[g]])


def _plots(out: Path, tallies: Mapping[tuple[str, str], Tally], panels: Sequence[str]) -> None:
    """positions.png (top view of ``panels`` conditions, geometry cues) and error_hist.png (geometry cues)."""
    from .plots import plt

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.5), squeeze=False)
    for ax, cond in zip(axes[0], panels):
        est = tallies[(cond, CUES[0])].estimates
        if est:
            e, t = (np.array([p[k] for p in est]) for k in (0, 1))
            ax.plot(np.stack([t[:, 0], e[:, 0]]), np.stack([t[:, 1], e[:, 1]]), color="0.6", lw=0.8)
            ax.scatter(t[:, 0], t[:, 1], s=28, facecolors="none", edgecolors="tab:blue", label="true")
            ax.scatter(e[:, 0], e[:, 1], s=22, marker="x", color="tab:red", label="estimated")
        ax.set(title=f"{cond} ({CUES[0]})", xlabel="world x (m)", ylabel="world y (m)", aspect="equal")
        ax.legend(loc="best")
    save(fig, "positions.png")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    errs = {c: t.errors for (c, cue), t in tallies.items() if cue == CUES[0] and t.errors}
    top = max((max(v) for v in errs.values()), default=1.0)
    for cond, v in errs.items():
        ax.hist(np.minimum(v, top), bins=np.linspace(0, top, 40), histtype="step", lw=1.5, label=cond)
    ax.set(xlabel="3D position error (m)", ylabel="objects", title="3D position error (geometry cues)")
    ax.legend()
    save(fig, "error_hist.png")


OBJECT_HEADER = ["condition", "cues", "frame", "object_id", "class", "views", "x", "y", "z", "true_x", "true_y",
                 "true_z", "error_m", "max_reprojection_px", "track_id"]


def evaluate(args: argparse.Namespace) -> tuple[Path, dict]:
    """Runs every condition and cue set over the frames; writes the outputs; returns (folder, summary)."""
    from tqdm import tqdm

    ds = load_set(args.data)
    frames = ds.frames[:args.frames] if args.frames else ds.frames
    conds = conditions(args.jitter, not args.no_grabcut)
    segmenter = None
    if not args.no_grabcut:
        from ..segmentation import build_segmenter
        segmenter = build_segmenter("grabcut")
    out = run_folder(args.out, TOOL)
    save_config(out, args)
    base = AssociationConfig(tolerance_px=args.tolerance_px)
    configs = {CUES[0]: base, CUES[1]: replace(base, embedding_weight=args.embedding_weight,
                                               embedding_offset=args.embedding_offset)}
    keys = [(c.name, cue) for c in conds for cue in CUES]
    tallies = {k: Tally() for k in keys}
    trackers = {k: Tracker(TrackerConfig(gate=args.track_gate)) for k in keys}
    rows: list[list] = []
    extents = []
    for frame in tqdm(frames, desc=TOOL, unit="set", disable=args.quiet):
        extents.append(scene_extent(ds.truth[frame]))
        eligible = None
        for k, cond in enumerate(conds):
            views, labels = frame_views(ds, frame, cond, k, segmenter, args.seed, args.min_area)
            eligible = seen_twice(labels) if eligible is None else eligible  # conditions[0] is gt
            for cue in CUES:
                run_set(ds, frame, views, labels, eligible, configs[cue], trackers[(cond.name, cue)],
                        tallies[(cond.name, cue)], rows, (cond.name, cue))
    extent = float(np.median(extents))
    table = [table_row(c, cue, tallies[(c, cue)], extent) for c, cue in keys]
    write_table(out / "table", TABLE_HEADER, table,
                f"Cross-view association, {len(ds.rig.names)} cameras, {len(frames)} sets, scene extent "
                f"{extent:.2f} m (geometry+colour: colour-histogram stand-in embeddings)")
    with open(out / "objects.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([OBJECT_HEADER] + rows)
    shown = [c.name for c in conds[1:] if c.jitter == (10.0, 20.0)] or [c.name for c in conds[-1:]]
    _plots(out, tallies, list(dict.fromkeys([conds[0].name, shown[0]])))
    outputs = ["table.md", "table.csv", "objects.csv", "positions.png", "error_hist.png", "summary.json", "config.json"]
    summary = {"cameras": ds.rig.names, "sets": len(frames), "scene_extent_m": extent,
               "rows": [dict(zip(TABLE_HEADER, r)) for r in table], "outputs": outputs}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return out, summary


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(TOOL, help="cross-view association P/R/F1, 3D error, id switches on a synth rig",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a scrap-tools synth --cameras N folder")
    p.add_argument("--frames", type=int, default=None, help="evaluate the first N frames (camera sets) only")
    p.add_argument("--min-area", type=int, default=50, help="instances with fewer pixels are left out (default 50)")
    p.add_argument("--jitter", nargs="*", type=parse_range, default=list(SHIFT_RANGES), metavar="LO-HI",
                   help="box jitter ranges of the GrabCut conditions, px (default 0-10 10-20 20-30)")
    p.add_argument("--no-grabcut", action="store_true", help="ground-truth masks only")
    p.add_argument("--tolerance-px", type=float, default=AssociationConfig.tolerance_px,
                   help="mask boundary tolerance of the epipolar test, px (default %(default)s)")
    p.add_argument("--embedding-weight", type=float, default=0.5,
                   help="weight of the embedding cosine in geometry+colour (default 0.5)")
    p.add_argument("--embedding-offset", type=float, default=0.8,
                   help="cosine counted as neutral evidence in geometry+colour (default 0.8)")
    p.add_argument("--track-gate", type=float, default=TrackerConfig.gate,
                   help="tracker gate, m (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_run_options(p, TOOL)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """0 on success; 2 on bad input (one-line message, no traceback)."""
    try:
        out, summary = evaluate(args)
    except input_errors() as e:
        return fail(TOOL, e)
    for r in summary["rows"]:
        print(f"{TOOL}: {r['Condition']:<22} {r['Cues']:<16} F1 {r['F1']:.3f}  recovered {r['Recovered']:.3f}  "
              f"3D median {r['3D median (m)']:.3f} m ({r['3D median (% extent)']:.2f} %)")
    print(f"{TOOL}: results in {out} (table.md, positions.png, error_hist.png)")
    return 0
