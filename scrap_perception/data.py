"""COCO instance-segmentation datasets of the seven scrap shapes.

A dataset is one COCO json plus an image root (default: the json's folder) against which each image's
``file_name`` is resolved. Categories map to labels by name, case-insensitively, ignoring spaces,
hyphens and underscores, with aliases ("H-beam" -> H, "U-channel" -> U, Chinese names, ...); the
instance's class id is the label's id (``DEFAULT_LABELS``: Angle 0 ... U 6).

Bad data raises ``DatasetError`` naming the file and the record: an unreadable or missing image, an
annotation whose image is not in the json, a polygon or RLE that decodes to an empty mask, an unknown
category. The json's structure and categories are checked on opening; ``validate`` reads every image
and decodes every mask, so a tool finds a bad record before it does any work. Crowd annotations and
instances under ``min_area`` pixels are left out and counted (``skipped``), never dropped silently.

``CocoWriter`` builds the other direction: predicted instances (export, prelabel) as a COCO json with
RLE or polygon masks, classes and scores as annotation attributes.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .labels import DEFAULT_LABELS, Label
from .masks import InstanceMask, from_full

log = logging.getLogger(__name__)

# Normalised (see _norm) alternative names per default label name.
CATEGORY_ALIASES: dict[str, tuple[str, ...]] = {
    "Angle": ("angle", "anglesteel", "anglebar", "angleiron", "lsection", "lbeam"),
    "Bar": ("bar", "roundbar", "round", "rod", "roundsteel", "rebar"),
    "Billet": ("billet", "squarebillet", "squarebar", "bloom"),
    "H": ("h", "hbeam", "hsection", "hsteel", "ibeam", "wideflange"),
    "Pipe": ("pipe", "tube", "steelpipe", "steeltube"),
    "Plate": ("plate", "sheet", "steelplate", "flat"),
    "U": ("u", "uchannel", "channel", "channelsteel", "cchannel", "usection"),
}


class DatasetError(ValueError):
    """Bad dataset content; the message names the file and the record."""


def _norm(name: str) -> str:
    return re.sub(r"[\s\-_]+", "", str(name)).lower()


def match_category(name: str, labels: Sequence[Label] = DEFAULT_LABELS) -> Optional[Label]:
    """The label a COCO category name means (its name, Chinese text or an alias), or None."""
    key = _norm(name)
    for label in labels:
        names = {_norm(label.name), _norm(label.text)} | set(CATEGORY_ALIASES.get(label.name, ()))
        if key in names:
            return label
    return None


def coco_categories(labels: Sequence[Label] = DEFAULT_LABELS) -> list[dict]:
    """COCO categories for ``labels``: ids 1..K in label order (COCO reserves 0)."""
    return [{"id": i + 1, "name": lb.name, "supercategory": "scrap"} for i, lb in enumerate(labels)]


def mask_to_rle(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of an (H, W) bool mask, JSON-ready (counts as str)."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes ``obj`` as JSON with sorted keys (byte-identical for equal content)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    return path


@dataclass
class GTInstance:
    """One ground-truth object: mask (H, W) bool at full image resolution, box (x0, y0, x1, y1) its
    tight box in pixels, class_id a label id."""

    ann_id: int
    class_id: int
    class_name: str
    mask: np.ndarray
    box: np.ndarray

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


@dataclass
class Sample:
    """One image's record: path of the image file, its size and its instances."""

    image_id: int
    path: Path
    height: int
    width: int
    instances: list[GTInstance]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such annotation file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: not a readable JSON file: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list) or not isinstance(data.get("categories"), list):
        raise DatasetError(f"{path}: not a COCO file (needs lists 'images', 'annotations', 'categories')")
    return data


class CocoDataset:
    """Random access to the images of a COCO json with per-instance ground-truth masks.

    ann_file: the json; image_root: folder ``file_name`` is relative to (default: the json's folder);
    labels: the label set categories map to; min_area: instances with fewer mask pixels are skipped.
    The json's structure is checked here; masks are decoded (and checked) on access.
    """

    def __init__(self, ann_file: str | os.PathLike, image_root: Optional[str | os.PathLike] = None,
                 labels: Sequence[Label] = DEFAULT_LABELS, min_area: int = 0) -> None:
        self.ann_file = Path(ann_file)
        self.image_root = Path(image_root) if image_root is not None else self.ann_file.parent
        self.labels = tuple(labels)
        self.min_area = int(min_area)
        self.skipped: Counter[str] = Counter()
        data = _read_json(self.ann_file)
        self._images: list[dict] = []
        for rec in data["images"]:
            if not isinstance(rec, dict) or not {"id", "file_name", "height", "width"} <= set(rec):
                raise DatasetError(f"{self.ann_file}: image record {rec!r} lacks id/file_name/height/width")
            self._images.append(rec)
        index = {rec["id"]: i for i, rec in enumerate(self._images)}
        if len(index) != len(self._images):
            raise DatasetError(f"{self.ann_file}: duplicate image ids")
        self._category = self._map_categories(data)
        self._anns: list[list[dict]] = [[] for _ in self._images]
        for ann in data["annotations"]:
            self._anns[self._check_annotation(ann, index)].append(ann)

    def _where(self, ann: dict) -> str:
        return f"{self.ann_file}: annotation id={ann.get('id')!r} (image_id={ann.get('image_id')!r})"

    def _map_categories(self, data: dict) -> dict[int, Optional[Label]]:
        out: dict[int, Optional[Label]] = {}
        for cat in data["categories"]:
            if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
                raise DatasetError(f"{self.ann_file}: category record {cat!r} lacks id/name")
            out[cat["id"]] = match_category(cat["name"], self.labels)
        self._category_names = {c["id"]: c["name"] for c in data["categories"]}
        return out

    def _check_annotation(self, ann: Any, index: dict) -> int:
        if not isinstance(ann, dict):
            raise DatasetError(f"{self.ann_file}: annotation record {ann!r} is not an object")
        where = self._where(ann)
        if ann.get("image_id") not in index:
            raise DatasetError(f"{where}: its image is missing (no image with id {ann.get('image_id')!r})")
        cid = ann.get("category_id")
        if cid not in self._category:
            raise DatasetError(f"{where}: unknown category id {cid!r} (not in 'categories')")
        if self._category[cid] is None:
            known = ", ".join(lb.name for lb in self.labels)
            raise DatasetError(f"{where}: unknown category {self._category_names[cid]!r} (id {cid}); "
                               f"expected one of {known} or an alias")
        seg = ann.get("segmentation")
        img = self._images[index[ann["image_id"]]]
        if isinstance(seg, list):
            if not seg or any(not isinstance(p, list) or len(p) < 6 or len(p) % 2 for p in seg):
                raise DatasetError(f"{where}: polygon must be a non-empty list of [x1, y1, x2, y2, x3, y3, ...] "
                                   f"with at least 3 points")
        elif isinstance(seg, dict):
            if "counts" not in seg or list(seg.get("size", ())) != [img["height"], img["width"]]:
                raise DatasetError(f"{where}: RLE needs 'counts' and 'size' == [{img['height']}, {img['width']}]")
        else:
            raise DatasetError(f"{where}: no 'segmentation' polygon or RLE")
        return index[ann["image_id"]]

    def __len__(self) -> int:
        return len(self._images)

    @property
    def image_ids(self) -> list[int]:
        return [rec["id"] for rec in self._images]

    def image_path(self, i: int) -> Path:
        return self.image_root / self._images[i]["file_name"]

    def decode(self, ann: dict, height: int, width: int) -> np.ndarray:
        """(H, W) bool mask of one annotation's polygon or RLE; DatasetError when empty or undecodable."""
        seg = ann["segmentation"]
        try:
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
            elif isinstance(seg["counts"], list):
                rle = mask_utils.frPyObjects(seg, height, width)
            else:
                rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")
                       if isinstance(seg["counts"], str) else seg["counts"]}
            mask = mask_utils.decode(rle).astype(bool)
        except Exception as e:  # pycocotools raises bare TypeErrors/ValueErrors on malformed input
            raise DatasetError(f"{self._where(ann)}: segmentation does not decode: {e}") from None
        if mask.shape != (height, width) or not mask.any():
            raise DatasetError(f"{self._where(ann)}: segmentation decodes to an empty mask")
        return mask

    def __getitem__(self, i: int) -> Sample:
        rec = self._images[i]
        h, w = int(rec["height"]), int(rec["width"])
        instances = []
        for ann in self._anns[i]:
            if ann.get("iscrowd", 0):
                self.skipped["crowd"] += 1
                continue
            mask = self.decode(ann, h, w)
            area = int(mask.sum())
            if area < self.min_area:
                self.skipped["small"] += 1
                log.debug("%s: area %d < min_area %d, skipped", self._where(ann), area, self.min_area)
                continue
            label = self._category[ann["category_id"]]
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            box = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)
            instances.append(GTInstance(int(ann["id"]), label.id, label.name, mask, box))
        return Sample(rec["id"], self.image_path(i), h, w, instances)

    def load_image(self, i: int) -> np.ndarray:
        """RGB uint8 (H, W, 3) of image ``i``; DatasetError when missing, unreadable or of another size."""
        rec, path = self._images[i], self.image_path(i)
        where = f"{self.ann_file}: image id={rec['id']!r} file {path}"
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
        if bgr is None:
            raise DatasetError(f"{where}: unreadable image (missing or not an image file)")
        if bgr.shape[:2] != (rec["height"], rec["width"]):
            raise DatasetError(f"{where}: image is {bgr.shape[1]}x{bgr.shape[0]} but the json says "
                               f"{rec['width']}x{rec['height']}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def validate(self, indices: Optional[Sequence[int]] = None, progress: bool = False) -> "CocoDataset":
        """Reads every image of ``indices`` (default all) and decodes each of its annotations, crowd ones
        included; raises DatasetError naming the first bad record (unreadable or missing image, wrong
        size, empty or undecodable mask). Returns the dataset."""
        from tqdm import tqdm

        todo = range(len(self)) if indices is None else indices
        for i in tqdm(todo, desc="validate", unit="img", disable=not progress, leave=False):
            self.load_image(i)
            rec = self._images[i]
            for ann in self._anns[i]:
                self.decode(ann, int(rec["height"]), int(rec["width"]))
        return self

    def __iter__(self) -> Iterator[tuple[np.ndarray, Sample]]:
        """(rgb, sample) per image, in json order."""
        for i in range(len(self)):
            yield self.load_image(i), self[i]


def split_coco(ann_file: str | os.PathLike, out_dir: str | os.PathLike, val_fraction: float = 0.15,
               seed: int = 0, image_root: Optional[str | os.PathLike] = None) -> tuple[Path, Path]:
    """Splits a COCO json by image into ``train.json`` and ``val.json`` in ``out_dir`` (85/15 by default).

    Images are shuffled with ``seed``; the validation part has round(n * val_fraction) images, at least
    one when there are two or more. ``file_name``s are rewritten relative to ``out_dir`` so the new files
    find the same images.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ann_file = Path(ann_file)
    data = _read_json(ann_file)
    root = Path(image_root) if image_root is not None else ann_file.parent
    out_dir = Path(out_dir)
    n = len(data["images"])
    n_val = min(max(int(round(n * val_fraction)), 1 if n >= 2 else 0), n - 1) if n else 0
    order = np.random.default_rng(seed).permutation(n)
    val_ids = {data["images"][k]["id"] for k in order[:n_val]}
    out = []
    for name, keep in (("train", lambda i: i not in val_ids), ("val", lambda i: i in val_ids)):
        part = {k: copy.deepcopy(v) for k, v in data.items() if k not in ("images", "annotations")}
        part["images"] = []
        for rec in data["images"]:
            if keep(rec["id"]):
                rec = dict(rec)
                src = Path(rec["file_name"]) if os.path.isabs(rec["file_name"]) else root / rec["file_name"]
                rec["file_name"] = os.path.relpath(os.path.abspath(src), os.path.abspath(out_dir))
                part["images"].append(rec)
        part["annotations"] = [a for a in data["annotations"] if keep(a.get("image_id"))]
        out.append(write_json(out_dir / f"{name}.json", part))
    return out[0], out[1]


@dataclass
class CropSet:
    """The classification set: crops (uint8 HWC, as the classifier's ``crop_images`` makes them),
    class_ids (N,) label ids, refs (image_id, ann_id) per crop."""

    crops: list[np.ndarray]
    class_ids: np.ndarray
    refs: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.crops)


def classification_set(dataset: CocoDataset, min_area: int = 0, progress: bool = False,
                       **crop_options: Any) -> CropSet:
    """Crops every instance of ``dataset`` with at least ``min_area`` pixels, exactly as the classifier
    crops masks at inference (``classification.crops.crop_images``; ``crop_options`` = its margin /
    background)."""
    from tqdm import tqdm

    from .classification.crops import crop_images

    crops, ids, refs = [], [], []
    for i in tqdm(range(len(dataset)), desc="crops", unit="img", disable=not progress):
        sample = dataset[i]
        keep = [inst for inst in sample.instances if inst.area >= min_area]
        dataset.skipped["small"] += len(sample.instances) - len(keep)
        if not keep:
            continue
        masks: list[InstanceMask] = [from_full(inst.mask, 1.0) for inst in keep]
        crops.extend(crop_images(dataset.load_image(i), masks, **crop_options))
        ids.extend(inst.class_id for inst in keep)
        refs.extend((sample.image_id, inst.ann_id) for inst in keep)
    return CropSet(crops, np.asarray(ids, np.int64), refs)


SEGMENTATIONS = ("rle", "polygon")


def mask_polygons(mask: InstanceMask) -> list[list[float]]:
    """COCO polygons [x1, y1, x2, y2, ...] of a mask's outer contours (OpenCV ``findContours``, pixel
    centres at (c + 0.5, r + 0.5)); contours of fewer than 3 points are left out, holes are lost."""
    x, y, w, h = mask.roi
    if not w or not h:
        return []
    contours, _ = cv2.findContours(np.ascontiguousarray(mask.mask, np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    return [(c.reshape(-1, 2) + [x + 0.5, y + 0.5]).ravel().astype(float).tolist() for c in contours if len(c) >= 3]


class CocoWriter:
    """A COCO instance-segmentation json of predicted instances (export, prelabel), built image by image.

    Categories are ``coco_categories(labels)`` (ids 1..K in label order) plus 'Unknown' (id K + 1) once an
    instance has no class (UNKNOWN_ID), so the file says which classes still need a person; scrap-tools
    refuse that category until it is corrected. segmentation 'rle': compressed RLE of the full-image mask
    (iscrowd 0; CVAT imports it as a mask); 'polygon': ``mask_polygons`` (Label Studio imports polygons
    only). Every annotation has bbox (x, y, w, h of the mask's ROI), area (mask pixels) and ``attributes``
    (scalars: the class name and scores, the instance id, ...). ``skipped`` counts masks left out (empty,
    or no polygon of 3 points)."""

    def __init__(self, labels: Sequence[Label] = DEFAULT_LABELS, segmentation: str = "rle") -> None:
        if segmentation not in SEGMENTATIONS:
            raise ValueError(f"segmentation must be one of {SEGMENTATIONS}, not {segmentation!r}")
        self.labels = tuple(labels)
        self.segmentation = segmentation
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.skipped: Counter[str] = Counter()
        self._category = {lb.id: k + 1 for k, lb in enumerate(self.labels)}

    def add_image(self, file_name: str, height: int, width: int, **fields: Any) -> int:
        """Adds an image record (``fields``: extra keys such as camera, stamp); returns its id (1, 2, ...)."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "height": int(height), "width": int(width),
                            **fields})
        return image_id

    def category_of(self, class_id: int) -> int:
        """The COCO category id of a label id (UNKNOWN_ID: the 'Unknown' category); KeyError otherwise."""
        from .labels import UNKNOWN_ID

        if class_id == UNKNOWN_ID:
            return len(self.labels) + 1
        return self._category[class_id]

    def add_instance(self, image_id: int, mask: InstanceMask, class_id: int, attributes: dict[str, Any]
                     ) -> Optional[int]:
        """Adds one instance of image ``image_id``; returns its annotation id, or None when it is skipped."""
        rec = self.images[image_id - 1]
        if mask.area == 0:
            self.skipped["empty_mask"] += 1
            return None
        if self.segmentation == "rle":
            seg: Any = mask_to_rle(mask.full((rec["height"], rec["width"])))
        else:
            seg = mask_polygons(mask)
            if not seg:
                self.skipped["no_polygon"] += 1
                return None
        x, y, w, h = mask.roi
        ann_id = len(self.annotations) + 1
        self.annotations.append({"id": ann_id, "image_id": image_id, "category_id": self.category_of(int(class_id)),
                                 "segmentation": seg, "bbox": [float(x), float(y), float(w), float(h)],
                                 "area": int(mask.area), "iscrowd": 0, "attributes": dict(attributes)})
        return ann_id

    def to_json(self) -> dict:
        from .labels import UNKNOWN_NAME

        categories = coco_categories(self.labels)
        if any(a["category_id"] == len(self.labels) + 1 for a in self.annotations):
            categories.append({"id": len(self.labels) + 1, "name": UNKNOWN_NAME, "supercategory": "scrap"})
        return {"images": self.images, "annotations": self.annotations, "categories": categories,
                "info": {"description": "scrap_perception predictions for correction"}}

    def write(self, path: str | os.PathLike) -> Path:
        return write_json(path, self.to_json())
