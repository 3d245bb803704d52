"""Small generated datasets for the fine-tuning tests.

``instance_crop_dataset`` turns a synthetic scene set into a COCO set of one-object windows: each
instance cut out with a margin around its box, the instance's mask as the window's one annotation.
A random-weight decoder learns such a set within a few hundred steps on the CPU (the object covers
much of the window), while whole scenes of many small pieces would need thousands.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from scrap_perception.data import CocoDataset, coco_categories, mask_to_rle, write_json

SMALL_SAM_ARCH = {"embed_dim": 64, "depth": 2, "num_heads": 2, "global_attn_indexes": [1], "image_size": 256}


def instance_crop_dataset(ann_file: Path, out_dir: Path, grow: float = 0.25, min_area: int = 150,
                          max_windows: int | None = None) -> Path:
    """Writes ``out_dir/annotations.json`` + PNG windows (one per instance of at least ``min_area``
    pixels, its box grown by ``grow`` of its size on each side) and returns the json's path."""
    ds = CocoDataset(ann_file)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(len(ds)):
        rgb, sample = ds.load_image(i), ds[i]
        for inst in sample.instances:
            if inst.area < min_area or (max_windows is not None and len(images) >= max_windows):
                continue
            x0, y0, x1, y1 = (int(v) for v in inst.box)
            gx, gy = int(grow * (x1 - x0) + 0.5), int(grow * (y1 - y0) + 0.5)
            x0, y0 = max(x0 - gx, 0), max(y0 - gy, 0)
            x1, y1 = min(x1 + gx, sample.width), min(y1 + gy, sample.height)
            name = f"images/{len(images):05d}.png"
            cv2.imwrite(str(out_dir / name), cv2.cvtColor(rgb[y0:y1, x0:x1], cv2.COLOR_RGB2BGR))
            mask = inst.mask[y0:y1, x0:x1]
            images.append({"id": len(images) + 1, "file_name": name, "height": y1 - y0, "width": x1 - x0})
            anns.append({"id": len(anns) + 1, "image_id": len(images), "category_id": inst.class_id + 1,
                         "segmentation": mask_to_rle(mask), "area": int(mask.sum()), "iscrowd": 0,
                         "bbox": [0, 0, 0, 0]})
    return write_json(out_dir / "annotations.json",
                      {"images": images, "annotations": anns, "categories": coco_categories()})


def history(run: Path) -> dict:
    return json.loads((run / "history.json").read_text())


def nontrivial(mask: np.ndarray) -> bool:
    return 0 < int(mask.sum()) < mask.size
