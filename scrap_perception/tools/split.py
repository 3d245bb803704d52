"""``scrap-tools split``: split a COCO json by image into train.json / val.json (85/15 by default).

The dataset is validated first (every image readable and of its json size, every mask non-empty, every
category known): a bad record stops the tool before anything is written."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import add_run_options, fail, input_errors, run_folder

TOOL = "split"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(TOOL, help="seeded 85/15 train/validation split of a COCO dataset",
                              description=__doc__ + "\nImage paths in the new files are rewritten relative "
                                                    "to the output folder.")
    p.add_argument("--data", type=Path, required=True, help="COCO instance-segmentation json")
    p.add_argument("--image-root", type=Path, default=None, help="folder of the images (default: the json's)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="validation share of images (default 0.15)")
    add_run_options(p, TOOL)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..data import CocoDataset, split_coco

    try:
        if not 0.0 < args.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
        CocoDataset(args.data, args.image_root).validate(progress=True)
        out = run_folder(args.out, TOOL)
        train, val = split_coco(args.data, out, args.val_fraction, args.seed, args.image_root)
    except (*input_errors(), ValueError) as e:
        return fail(TOOL, e)
    counts = [len(json.loads(p.read_text(encoding="utf-8"))["images"]) for p in (train, val)]
    print(f"{TOOL}: {counts[0]} training images -> {train}, {counts[1]} validation images -> {val}")
    return 0
