"""``scrap-tools synth``: render a synthetic scrap dataset (PNG images + COCO json with RLE masks).

Without --cameras: independent procedural 2D scenes (``scrap_perception.synth``). With --cameras N: one
3D pile (``multiview.scene``) seen by N calibrated cameras (``multiview.render``) over --frames conveyor
steps; writes rig.yaml, annotations.json (every camera's images, ``object_id`` shared across views and
frames), objects.json (the 3D ground truth) and preview.png.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from . import add_run_options, run_folder

TOOL = "synth"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(TOOL, help="render synthetic scrap scenes as a COCO dataset",
                              description=__doc__ + "\nThe same --seed gives byte-identical files.",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-images", type=int, default=None, help="number of images (default 100; single view)")
    p.add_argument("--height", type=int, default=None, help="image height in pixels (default 720; 480 with --cameras)")
    p.add_argument("--width", type=int, default=None, help="image width in pixels (default 1280; 640 with --cameras)")
    p.add_argument("--objects", type=int, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="pieces drawn per image (default 8 24); with --cameras pieces in the pile (default 8 14)")
    p.add_argument("--min-area", type=int, default=48, help="smallest visible mask kept, pixels (default 48)")
    p.add_argument("--preview", type=int, default=6,
                   help="images shown in preview.png, with --cameras frames (one row of views each); 0: none "
                        "(default 6)")
    mv = p.add_argument_group("multi-view: one 3D pile seen by calibrated cameras")
    mv.add_argument("--cameras", type=int, default=None, metavar="N",
                    help="render one 3D scene from N cameras around it (rig.yaml, objects.json)")
    mv.add_argument("--frames", type=int, default=1, metavar="K", help="frames of the moving pile (default 1)")
    mv.add_argument("--speed", type=float, default=0.05,
                    help="conveyor motion of the pile along world +x, m per frame (default 0.05)")
    add_run_options(p, TOOL)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.cameras is not None:
        return _run_multiview(args)
    from ..synth import generate_dataset

    num_images = 100 if args.num_images is None else args.num_images
    height, width = args.height or 720, args.width or 1280
    objects = tuple(args.objects or (8, 24))
    if num_images < 1 or height < 16 or width < 16 or not 1 <= objects[0] <= objects[1]:
        print(f"{TOOL}: error: need --num-images >= 1, --height/--width >= 16 and 1 <= MIN <= MAX objects",
              file=sys.stderr)
        return 2
    out = run_folder(args.out, TOOL)
    path = generate_dataset(out, num_images, seed=args.seed, image_size=(height, width), objects=objects,
                            min_area=args.min_area)
    if args.preview > 0:
        from ..data import CocoDataset
        from .plots import dataset_preview

        dataset_preview(Path(out) / "preview.png", CocoDataset(path), args.preview)
    print(f"{TOOL}: wrote {path}")
    return 0


def _run_multiview(args: argparse.Namespace) -> int:
    height, width = args.height or 480, args.width or 640
    objects = tuple(args.objects or (8, 14))
    if args.num_images is not None:
        print(f"{TOOL}: error: --num-images is for single-view scenes; with --cameras use --frames", file=sys.stderr)
        return 2
    if args.cameras < 1 or args.frames < 1 or height < 16 or width < 16 or not 1 <= objects[0] <= objects[1]:
        print(f"{TOOL}: error: need --cameras >= 1, --frames >= 1, --height/--width >= 16 and 1 <= MIN <= MAX "
              f"objects", file=sys.stderr)
        return 2
    out = run_folder(args.out, TOOL)
    path = generate_multiview(out, args.cameras, args.frames, seed=args.seed, image_size=(height, width),
                              objects=objects, speed=args.speed, min_area=args.min_area, preview=args.preview)
    print(f"{TOOL}: wrote {path}, {out / 'rig.yaml'}, {out / 'objects.json'}")
    return 0


def _annotations(ids: np.ndarray, classes: dict[int, int], image_id: int, first_id: int, min_area: int
                 ) -> list[dict]:
    """COCO annotations of one view's id buffer (H, W): one per object with >= ``min_area`` pixels."""
    from ..data import mask_to_rle

    anns = []
    areas = np.bincount(ids.ravel(), minlength=max(classes) + 1)
    for oid in sorted(classes):
        if areas[oid] < max(min_area, 1):
            continue
        mask = ids == oid
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        anns.append({"id": first_id + len(anns), "image_id": image_id, "category_id": classes[oid] + 1,
                     "object_id": oid, "segmentation": mask_to_rle(mask), "area": int(areas[oid]),
                     "bbox": [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)],
                     "iscrowd": 0})
    return anns


def _outlined(rgb: np.ndarray, ids: np.ndarray, kept: Sequence[int], title: str) -> np.ndarray:
    """(H, W, 3) uint8 BGR: the view with each kept object's mask outlined and its id at its centroid."""
    import cv2

    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for oid in kept:
        hue = int(179 * ((oid * 0.618034) % 1.0))
        colour = tuple(int(v) for v in cv2.cvtColor(np.uint8([[[hue, 230, 255]]]), cv2.COLOR_HSV2BGR)[0, 0])
        mask = (ids == oid).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, colour, 1, cv2.LINE_AA)
        rows, cols = np.nonzero(mask)
        at = (int(cols.mean()) - 6, int(rows.mean()) + 5)
        cv2.putText(img, str(oid), at, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, str(oid), at, cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    cv2.putText(img, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def generate_multiview(out_dir: Path, cameras: int, frames: int, seed: int = 0,
                       image_size: tuple[int, int] = (480, 640), objects: tuple[int, int] = (8, 14),
                       speed: float = 0.05, min_area: int = 48, preview: int = 6, progress: bool = True) -> Path:
    """Writes a multi-view dataset into ``out_dir`` and returns the path of its annotations.json.

    One pile (``multiview.scene.random_scene``, MIN..MAX pieces) and ``cameras`` cameras ``cam0``.. on a
    ring around it (``camera_ring``); frame k shows the pile moved by k * ``speed`` m along +x. Files:
    rig.yaml (``save_rig``, frame "world"); images/<cam>/<frame:06d>.png; annotations.json (COCO, one
    image per camera and frame with ``camera`` and ``frame`` fields, annotations with ``object_id``,
    RLE masks exact under occlusion, objects under ``min_area`` visible pixels left out); objects.json
    (per frame the 3D ground truth: object_id, class, position, yaw, roll, size); preview.png (the
    first ``preview`` frames, one row of outlined views each; none when 0). image_size: (H, W).
    """
    import cv2
    from tqdm import tqdm

    from ..data import coco_categories, write_json
    from ..labels import DEFAULT_LABELS
    from ..multiview.render import render_view, shadow_map
    from ..multiview.rig import save_rig
    from ..multiview.scene import camera_ring, random_scene

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0])
    scene = random_scene(rng, int(rng.integers(objects[0], objects[1] + 1)))
    rig = camera_ring(np.random.default_rng([seed, 1]), scene, cameras, width=image_size[1], height=image_size[0])
    save_rig(rig, out_dir / "rig.yaml")
    cam_rng = np.random.default_rng([seed, 3])
    response = {name: cam_rng.uniform(0.85, 1.15) * cam_rng.uniform(0.96, 1.04, 3) for name in rig.names}
    classes = {o.object_id: o.class_id for o in scene.objects}
    images, anns, truth, rows = [], [], [], []
    bar = tqdm(total=frames * cameras, desc="synth", unit="view", disable=not progress)
    for k in range(frames):
        scene_k = scene.at_frame(k, speed)
        truth.append({"frame": k, "objects": [o.record() for o in scene_k.objects]})
        shadows = shadow_map(scene_k, 2 * max(image_size))
        row = []
        for c, name in enumerate(rig.names):
            view = render_view(scene_k, rig[name], np.random.default_rng([seed, 2, k, c]), shadows, response[name])
            file_name = f"images/{name}/{k:06d}.png"
            (out_dir / file_name).parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(out_dir / file_name), cv2.cvtColor(view.rgb, cv2.COLOR_RGB2BGR)):
                raise OSError(f"cannot write {out_dir / file_name}")
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": file_name, "height": image_size[0], "width": image_size[1],
                           "camera": name, "frame": k})
            view_anns = _annotations(view.ids, classes, image_id, len(anns) + 1, min_area)
            anns += view_anns
            if k < preview:
                row.append(_outlined(view.rgb, view.ids, [a["object_id"] for a in view_anns], f"{name} frame {k}"))
            bar.update()
        if row:
            rows.append(np.hstack(row))
    bar.close()
    write_json(out_dir / "objects.json", {"frame_id": rig.frame_id, "speed": speed, "frames": truth})
    if rows:
        cv2.imwrite(str(out_dir / "preview.png"), np.vstack(rows))
    coco = {"info": {"description": "scrap_perception synthetic multi-view scrap scenes", "seed": seed, "version": 1,
                     "rig": "rig.yaml", "objects": "objects.json"},
            "licenses": [], "images": images, "annotations": anns, "categories": coco_categories(DEFAULT_LABELS)}
    return write_json(out_dir / "annotations.json", coco)
