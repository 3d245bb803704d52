"""``scrap-tools prelabel``: a folder of images (+ detector boxes) -> a COCO set of predicted masks and
classes to correct in CVAT or Label Studio.

Images: every .png / .jpg / .jpeg / .bmp / .tif / .tiff under --images (sub-folders included), in sorted
order; ``file_name`` in the output is the path relative to --images (so the annotation tools match it
to the uploaded images; scrap-tools read the set with --image-root <--images>). Prompts:
- --boxes COCO.json: its images matched by file_name (relative to --images, or a unique base name),
  each annotation's ``bbox`` (x, y, w, h px) a box, its ``score`` (default 1) the detection score;
- --yolo DIR: per image ``DIR/<relative path>.txt`` (none: no object), lines ``class cx cy w h [conf]``
  normalised to the image, class = position in --labels (the seven shapes: Angle 0 ... U 6);
- neither: the everything mode (strategy S1, SAM backends only: point grid, IoU / stability filters).
Boxes go through the node's ``Pipeline`` (--prompt-mode, thresholds); classes come from CN-CLIP, or with
--classifier none from the detector's class when it names a label (else Unknown, for a person to name).
Each annotation's attributes: instance id (the box's annotation id or ``<txt>:<line>``), class name,
class / detection / mask scores, source (detector or everything). Everything is checked before any
work: images readable, boxes well-formed and on known images, the model able to run the mode.

Outputs in --out: annotations.json, summary.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from ..pipeline import PROMPT_MODES
from . import ToolError, add_run_options, fail, input_errors, run_folder, seed_call
from .model_options import add_model_options, build_pipeline, check_models, parse_labels

TOOL = "prelabel"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class Box:
    """A detector box: (x0, y0, x1, y1) px, score, the label id it names (None: none or unknown), its id."""

    box: tuple[float, float, float, float]
    score: float
    class_id: Optional[int]
    id: str


def list_images(root: Path) -> list[str]:
    """Relative POSIX paths of the image files under ``root``, sorted; ToolError when there are none."""
    if not root.is_dir():
        raise ToolError(f"--images {root}: no such folder")
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not found:
        raise ToolError(f"--images {root}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return found


def image_sizes(root: Path, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """{name: (H, W)} after reading every image; ToolError naming the first unreadable one."""
    import cv2
    from tqdm import tqdm

    out = {}
    for name in tqdm(names, desc="check images", unit="img", leave=False):
        img = cv2.imread(str(root / name), cv2.IMREAD_COLOR)
        if img is None:
            raise ToolError(f"--images: {root / name} is not a readable image")
        out[name] = img.shape[:2]
    return out


def _box(x: float, y: float, w: float, h: float, where: str) -> tuple[float, float, float, float]:
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise ToolError(f"{where}: box x={x}, y={y}, w={w}, h={h} needs finite values and w, h > 0")
    return (x, y, x + w, y + h)


def coco_boxes(path: Path, names: Sequence[str], labels) -> dict[str, list[Box]]:
    """{image name: boxes} of a COCO detection json (module doc); ToolError naming a bad record."""
    from ..data import match_category

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ToolError(f"--boxes {path}: not a readable JSON file: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise ToolError(f"--boxes {path}: not a COCO file (needs lists 'images' and 'annotations')")
    by_base: dict[str, list[str]] = {}
    for n in names:
        by_base.setdefault(os.path.basename(n), []).append(n)
    image_of = {}
    for rec in data["images"]:
        fn = str(rec.get("file_name", "")) if isinstance(rec, dict) else ""
        same_base = by_base.get(os.path.basename(fn), [])
        name = fn if fn in names else same_base[0] if len(same_base) == 1 else None
        if name is None or "id" not in rec:
            raise ToolError(f"--boxes {path}: image {rec!r} is not (uniquely) one of the files under --images")
        image_of[rec["id"]] = name
    category = {c.get("id"): match_category(str(c.get("name", "")), labels) for c in data.get("categories", [])
                if isinstance(c, dict)}
    out: dict[str, list[Box]] = {n: [] for n in names}
    for ann in data["annotations"]:
        where = f"--boxes {path}: annotation id={ann.get('id')!r}" if isinstance(ann, dict) else f"--boxes {path}"
        if not isinstance(ann, dict) or ann.get("image_id") not in image_of:
            raise ToolError(f"{where}: its image_id is not one of the json's images")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
            raise ToolError(f"{where}: 'bbox' must be [x, y, w, h]")
        label = category.get(ann.get("category_id"))
        score = ann.get("score", 1.0)
        if not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ToolError(f"{where}: 'score' must be a finite number")
        out[image_of[ann["image_id"]]].append(Box(_box(*map(float, bbox), where), float(score),
                                                  label.id if label else None, str(ann.get("id", ""))))
    return out


def yolo_boxes(folder: Path, sizes: dict[str, tuple[int, int]], labels) -> dict[str, list[Box]]:
    """{image name: boxes} of YOLO txt files (module doc); ToolError naming a bad file and line."""
    if not folder.is_dir():
        raise ToolError(f"--yolo {folder}: no such folder")
    out: dict[str, list[Box]] = {}
    for name, (h, w) in sizes.items():
        txt = folder / Path(name).with_suffix(".txt")
        boxes = []
        lines = txt.read_text(encoding="utf-8").splitlines() if txt.is_file() else []
        for k, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"--yolo {txt}:{k}"
            try:
                values = [float(v) for v in line.split()]
            except ValueError:
                values = []
            if len(values) not in (5, 6) or not values[0].is_integer() or not 0 <= values[0] < len(labels):
                raise ToolError(f"{where}: expected 'class cx cy w h [conf]' with class 0..{len(labels) - 1}, "
                                f"got {line.strip()!r}")
            cx, cy, bw, bh = values[1] * w, values[2] * h, values[3] * w, values[4] * h
            boxes.append(Box(_box(cx - bw / 2, cy - bh / 2, bw, bh, where), values[5] if len(values) == 6 else 1.0,
                             labels[int(values[0])].id, f"{txt.name}:{k}"))
        out[name] = boxes
    return out


# -------------------------------------------------------------------------------------------- running
def prelabel_image(pipe, rgb, boxes: Optional[list[Box]], s1_knobs: dict, classified: bool) -> list[dict[str, Any]]:
    """The instances of one image: [{mask, class_id, attributes}] (boxes None: the everything mode)."""
    from ..prompts import Prompt

    if boxes is None:
        from ..segmentation import AutomaticMaskGenerator

        generated = AutomaticMaskGenerator(pipe.segmenter, **s1_knobs).generate(rgb)
        classes = pipe.classifier.classify(rgb, [g.mask for g in generated])
        return [{"mask": g.mask, "class_id": c.class_id,
                 "attributes": {"instance_id": f"s1-{k}", "class_name": c.class_name, "class_score": float(c.score),
                                "mask_score": float(g.mask.iou), "stability_score": float(g.stability_score),
                                "source": "everything"}}
                for k, (g, c) in enumerate(zip(generated, classes))]
    result, = pipe.process_frames([(rgb, [Prompt(box=b.box, id=b.id, score=b.score) for b in boxes])])
    detector_class = {b.id: b.class_id for b in boxes}
    out = []
    for inst in result.instances:
        c = inst.classification
        class_id = c.class_id if classified or detector_class[inst.id] is None else detector_class[inst.id]
        out.append({"mask": inst.mask, "class_id": class_id,
                    "attributes": {"instance_id": inst.id, "class_name": c.class_name, "class_score": float(c.score),
                                   "detection_score": float(inst.prompt.score), "mask_score": float(inst.mask.iou),
                                   "source": "detector"}})
    return out


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(TOOL, help="images (+ detector boxes) -> a COCO set of predicted masks to correct",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, required=True, help="folder of images (sub-folders included)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--boxes", type=Path, default=None, help="COCO json of detector boxes")
    src.add_argument("--yolo", type=Path, default=None, help="folder of YOLO txt files (one per image)")
    add_model_options(p)
    p.add_argument("--prompt-mode", default="box_point_refined", choices=PROMPT_MODES,
                   help="how boxes prompt the segmenter (default box_point_refined)")
    p.add_argument("--min-mask-score", type=float, default=0.0, help="masks under this predicted IoU are left out")
    p.add_argument("--min-area", type=int, default=0, help="masks with fewer pixels are left out")
    p.add_argument("--s1-points-per-side", type=int, default=32, help="everything mode grid (default 32)")
    p.add_argument("--s1-pred-iou-thresh", type=float, default=0.88, help="everything mode IoU filter (0.88)")
    p.add_argument("--s1-stability-thresh", type=float, default=0.95, help="everything mode stability filter (0.95)")
    p.add_argument("--segmentation", default="rle", choices=("rle", "polygon"),
                   help="mask format: rle (exact; CVAT) or polygon (outer contours; Label Studio)")
    add_run_options(p, TOOL)
    p.set_defaults(func=run)
    return p


def prepare(args: argparse.Namespace) -> tuple[list[str], dict, Optional[dict], Any, tuple]:
    """Everything checked before any work: (images, sizes, boxes per image or None, pipeline, labels)."""

    labels = parse_labels(args.labels)
    if args.s1_points_per_side < 1 or args.min_area < 0:
        raise ToolError("need --s1-points-per-side >= 1 and --min-area >= 0")
    check_models(args)
    names = list_images(args.images)
    sizes = image_sizes(args.images, names)
    boxes = (coco_boxes(args.boxes, names, labels) if args.boxes else
             yolo_boxes(args.yolo, sizes, labels) if args.yolo else None)
    pipe = build_pipeline(args, labels, args.prompt_mode, max_detections=0)
    if boxes is None:
        from ..segmentation.automatic import GridSegmenter

        if not isinstance(pipe.segmenter, GridSegmenter):
            raise ToolError(f"--model-type {args.model_type} has no everything mode: give --boxes or --yolo")
    return names, sizes, boxes, pipe, labels


def run(args: argparse.Namespace) -> int:
    """0 on success; 2 on bad input (one-line message, no traceback)."""
    import cv2
    from tqdm import tqdm

    from ..data import CocoWriter

    try:
        names, sizes, boxes, pipe, labels = prepare(args)
    except input_errors() as e:
        return fail(TOOL, e)
    classified = args.classifier.strip().lower() not in ("", "none")
    knobs = {"points_per_side": args.s1_points_per_side, "pred_iou_thresh": args.s1_pred_iou_thresh,
             "stability_score_thresh": args.s1_stability_thresh}
    writer = CocoWriter(labels, args.segmentation)
    for k, name in enumerate(tqdm(names, desc=TOOL, unit="img")):
        rgb = cv2.cvtColor(cv2.imread(str(args.images / name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        image_id = writer.add_image(name, *sizes[name])
        seed_call(args.seed, k)
        for inst in prelabel_image(pipe, rgb, boxes[name] if boxes is not None else None, knobs, classified):
            writer.add_instance(image_id, inst["mask"], inst["class_id"], inst["attributes"])
    out = run_folder(args.out, TOOL)
    writer.write(out / "annotations.json")
    summary = {"images": len(writer.images), "instances": len(writer.annotations),
               "prompts": "everything mode (S1)" if boxes is None else
               f"{'COCO' if args.boxes else 'YOLO'} boxes, prompt mode {args.prompt_mode}",
               "skipped": dict(writer.skipped), "image_root": str(args.images.resolve()),
               "outputs": ["annotations.json", "summary.json"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"{TOOL}: {summary['images']} images, {summary['instances']} instances -> {out / 'annotations.json'} "
          f"(image root {args.images}: scrap-tools read it with --image-root {args.images})")
    return 0
