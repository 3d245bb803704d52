"""``scrap-tools synth``: render a synthetic scrap dataset (PNG images + COCO json with RLE masks)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import add_run_options, run_folder

TOOL = "synth"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(TOOL, help="render synthetic scrap scenes as a COCO dataset",
                              description=__doc__ + "\nThe same --seed gives byte-identical files.")
    p.add_argument("--num-images", type=int, default=100, help="number of images (default 100)")
    p.add_argument("--height", type=int, default=720, help="image height in pixels (default 720)")
    p.add_argument("--width", type=int, default=1280, help="image width in pixels (default 1280)")
    p.add_argument("--objects", type=int, nargs=2, default=(8, 24), metavar=("MIN", "MAX"),
                   help="pieces drawn per image (default 8 24)")
    p.add_argument("--min-area", type=int, default=48, help="smallest visible mask kept, pixels (default 48)")
    p.add_argument("--preview", type=int, default=6, help="images shown in preview.png (0: none; default 6)")
    add_run_options(p, TOOL)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..synth import generate_dataset

    if args.num_images < 1 or args.height < 16 or args.width < 16 or not 1 <= args.objects[0] <= args.objects[1]:
        print(f"{TOOL}: error: need --num-images >= 1, --height/--width >= 16 and 1 <= MIN <= MAX objects",
              file=sys.stderr)
        return 2
    out = run_folder(args.out, TOOL)
    path = generate_dataset(out, args.num_images, seed=args.seed, image_size=(args.height, args.width),
                            objects=tuple(args.objects), min_area=args.min_area)
    if args.preview > 0:
        from ..data import CocoDataset
        from .plots import dataset_preview

        dataset_preview(Path(out) / "preview.png", CocoDataset(path), args.preview)
    print(f"{TOOL}: wrote {path}")
    return 0
