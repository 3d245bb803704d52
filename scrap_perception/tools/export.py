"""``scrap-tools export``: a recording of the running system (MCAP) -> a COCO set to correct and train on.

Reads the MCAP with the pure-Python ``mcap`` + ``mcap_ros2`` readers (no ROS needed): every
``scrap_perception/msg/ScrapInstanceArray`` topic (or --arrays) is paired with its camera's images,
``<prefix>/image_raw`` (sensor_msgs/Image: rgb8, bgr8, rgba8, bgra8, mono8) or ``<prefix>/image_raw/compressed``
(sensor_msgs/CompressedImage) for an array topic ``<prefix>/scrap_instances`` (--image-topic
ARRAYS=IMAGES for other names), by identical header stamp. Each pair becomes one image (written as PNG
under ``images/``, named ``<camera>_<sec>_<nanosec>.png``; its record keeps camera, stamp and frame_id) and
its instances become annotations (``data.CocoWriter``): the mask exactly as published (RLE, or polygons
with --segmentation polygon for Label Studio), the class (``Unknown`` when unclassified: a person must
name it) and as attributes the instance id, class name, class / detection / mask scores and camera.
An array whose image was not recorded (or the reverse) is left out and counted.

The set opens in CVAT (Upload annotations, COCO 1.0; RLE masks become mask shapes, attributes are kept)
and in Label Studio (label-studio-converter import coco, with --segmentation polygon); corrected, it is
the --data of finetune-decoder / finetune-clip and of every eval tool. The topics are checked before
anything is written; a frame whose image does not decode, or whose size differs from its array's, is
left out and counted, as is an instance whose class is outside --labels (exported as Unknown).

Outputs in --out: annotations.json, images/*.png, summary.json.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from . import ToolError, fail, input_errors, parse_mapping, run_folder

TOOL = "export"
ARRAY_TYPE = "scrap_perception/msg/ScrapInstanceArray"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ARRAY_SUFFIX = "scrap_instances"
# encoding -> (channels, OpenCV conversion to BGR or None)
RAW_ENCODINGS = {"rgb8": (3, "COLOR_RGB2BGR"), "bgr8": (3, None), "rgba8": (4, "COLOR_RGBA2BGR"),
                 "bgra8": (4, "COLOR_BGRA2BGR"), "mono8": (1, "COLOR_GRAY2BGR")}


def image_bgr(msg: Any, compressed: bool) -> np.ndarray:
    """BGR uint8 (H, W, 3) of a decoded sensor_msgs Image or CompressedImage; ToolError when unreadable."""
    import cv2

    if compressed:
        bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR) if len(msg.data) else None
        if bgr is None:
            raise ToolError(f"compressed image ({msg.format!r}) does not decode")
        return bgr
    h, w, step, enc = int(msg.height), int(msg.width), int(msg.step), str(msg.encoding)
    if enc not in RAW_ENCODINGS:
        raise ToolError(f"image encoding {enc!r} is not one of {sorted(RAW_ENCODINGS)}")
    ch, conv = RAW_ENCODINGS[enc]
    data = bytes(msg.data)
    if not h or not w or step < w * ch or len(data) < h * step:
        raise ToolError(f"image {w}x{h} {enc}: step {step} / {len(data)} data bytes do not fit")
    img = np.frombuffer(data, np.uint8, count=h * step).reshape(h, step)[:, :w * ch].reshape(h, w, ch)
    return np.ascontiguousarray(img) if conv is None else cv2.cvtColor(img, getattr(cv2, conv))


def instance_mask(inst: Any):
    """The ``InstanceMask`` (roi + crop, iou = mask_score) of a decoded ScrapInstance."""
    from ..masks import InstanceMask

    x, y, w, h = (int(v) for v in (inst.roi.x_offset, inst.roi.y_offset, inst.roi.width, inst.roi.height))
    if not w or not h:
        return InstanceMask((0, 0, 0, 0), np.zeros((0, 0), bool), float(inst.mask_score))
    step = int(inst.mask.step) or w
    crop = np.frombuffer(bytes(inst.mask.data), np.uint8, count=h * step).reshape(h, step)[:, :w] > 0
    return InstanceMask((x, y, w, h), crop, float(inst.mask_score))


def pair_topics(channels: dict[str, str], arrays: Optional[list[str]], mapping: dict[str, str]) -> dict[str, str]:
    """{array topic: image topic} from the recording's {topic: schema name}; ToolError naming an array
    topic without images (before any message is read)."""
    found = [t for t, s in channels.items() if s == ARRAY_TYPE]
    chosen = arrays or found
    if not chosen:
        raise ToolError(f"no {ARRAY_TYPE} topic in the recording (topics: {sorted(channels)})")
    out = {}
    for topic in chosen:
        if channels.get(topic) != ARRAY_TYPE:
            raise ToolError(f"--arrays {topic}: not a {ARRAY_TYPE} topic of the recording (those: {found})")
        prefix = topic[:-len(ARRAY_SUFFIX)] if topic.endswith(ARRAY_SUFFIX) else topic + "/"
        guesses = [mapping[topic]] if topic in mapping else [prefix + "image_raw", prefix + "image_raw/compressed"]
        image = next((g for g in guesses if channels.get(g) in IMAGE_TYPES), None)
        if image is None:
            images = sorted(t for t, s in channels.items() if s in IMAGE_TYPES)
            raise ToolError(f"{topic}: no image topic {' or '.join(guesses)} in the recording (image topics: "
                            f"{images}); name it with --image-topic {topic}=IMAGE_TOPIC")
        out[topic] = image
    unknown = sorted(set(mapping) - set(out))
    if unknown:
        raise ToolError(f"--image-topic: {unknown} are not exported array topics ({sorted(out)})")
    return out


def _stamp(msg: Any) -> tuple[int, int]:
    return int(msg.header.stamp.sec), int(msg.header.stamp.nanosec)


def paired_messages(path: Path, pairs: dict[str, str], counts: Counter) -> Iterator[tuple[str, Any, Any, bool]]:
    """(array topic, array, image, image is compressed) for each array whose image has its stamp, in
    recording order of the later of the two; the unpaired are counted."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    image_of = {v: k for k, v in pairs.items()}
    pending: dict[tuple[str, str, tuple[int, int]], Any] = {}
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, _, msg in reader.iter_decoded_messages(topics=list(pairs) + list(image_of)):
            is_array = channel.topic in pairs
            array_topic = channel.topic if is_array else image_of[channel.topic]
            key = (array_topic, "array" if is_array else "image", _stamp(msg))
            other = (array_topic, "image" if is_array else "array", key[2])
            if key in pending:
                counts[f"duplicate stamp on {channel.topic}"] += 1
                continue
            if other not in pending:
                pending[key] = (msg, schema.name)
                continue
            partner, partner_schema = pending.pop(other)
            arr, (img, img_schema) = (msg, (partner, partner_schema)) if is_array else (partner, (msg, schema.name))
            yield array_topic, arr, img, img_schema.endswith("CompressedImage")
    for _, kind, _ in pending:
        counts[f"{kind}s without their {'image' if kind == 'array' else 'array'}"] += 1


def export(path: Path, out: Path, pairs: dict[str, str], labels, segmentation: str, progress: bool = True
           ) -> dict:
    """Writes annotations.json, images/ and summary.json of the paired messages; returns the summary."""
    import cv2
    from tqdm import tqdm

    from ..data import CocoWriter
    from ..labels import UNKNOWN_ID

    counts: Counter[str] = Counter()
    writer = CocoWriter(labels, segmentation)
    (out / "images").mkdir(parents=True, exist_ok=True)
    known = {lb.id for lb in labels}
    for topic, arr, img, compressed in tqdm(paired_messages(path, pairs, counts), desc=TOOL, unit="frame",
                                            disable=not progress):
        try:
            bgr = image_bgr(img, compressed)
        except ToolError:
            counts["frames whose image does not decode"] += 1
            continue
        if bgr.shape[:2] != (int(arr.image_height), int(arr.image_width)):
            counts["frames whose image has another size than its array"] += 1
            continue
        camera = arr.camera_name or topic.strip("/").rsplit("/", 1)[0].replace("/", "_")
        sec, nsec = _stamp(arr)
        name = f"images/{re.sub(r'[^A-Za-z0-9_.-]+', '_', camera)}_{sec}_{nsec:09d}.png"
        cv2.imwrite(str(out / name), bgr)
        image_id = writer.add_image(name, bgr.shape[0], bgr.shape[1], camera=camera, frame_id=arr.header.frame_id,
                                    stamp={"sec": sec, "nanosec": nsec}, segmenter=arr.segmenter,
                                    classifier=arr.classifier)
        for inst in arr.instances:
            class_id = int(inst.class_id)
            if class_id not in known and class_id != UNKNOWN_ID:
                counts["instances with a class outside the label set (exported as Unknown; see --labels)"] += 1
                class_id = UNKNOWN_ID
            writer.add_instance(image_id, instance_mask(inst), class_id,
                                {"instance_id": inst.id, "class_name": inst.class_name,
                                 "class_score": float(inst.class_score), "detection_score": float(inst.detection_score),
                                 "mask_score": float(inst.mask_score), "camera": camera})
        counts["frames"] += 1
    counts.update({f"instances skipped: {k}": v for k, v in writer.skipped.items()})
    writer.write(out / "annotations.json")
    summary = {"source": str(path), "pairs": pairs, "images": len(writer.images),
               "instances": len(writer.annotations), "segmentation": segmentation, "counts": dict(counts),
               "outputs": ["annotations.json", "images/", "summary.json"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def read_channels(path: Path) -> dict[str, str]:
    """{topic: schema name} of an MCAP file; ToolError when it is missing or not MCAP."""
    try:
        from mcap.reader import make_reader
    except ImportError as e:
        raise ToolError(f"reading MCAP needs the mcap and mcap-ros2-support packages ({e})") from None
    if not path.is_file():
        raise ToolError(f"--mcap {path}: no such file")
    try:
        with open(path, "rb") as f:
            summary = make_reader(f).get_summary()
    except Exception as e:  # mcap raises its own error types (bad magic, truncated records)
        raise ToolError(f"--mcap {path}: not a readable MCAP file ({type(e).__name__}: {e})") from None
    if summary is None:
        raise ToolError(f"--mcap {path}: the file has no summary section (not finished?); "
                        f"`mcap recover` rewrites it")
    return {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values() if c.schema_id}


# -------------------------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(TOOL, help="an MCAP recording of the system -> a COCO set (CVAT, Label Studio)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mcap", type=Path, required=True, help="recording with images and ScrapInstanceArrays")
    p.add_argument("--arrays", nargs="+", default=None, metavar="TOPIC",
                   help="ScrapInstanceArray topics to export (default: all)")
    p.add_argument("--image-topic", action="append", metavar="ARRAYS=IMAGES",
                   help="image topic of an array topic when it is not <prefix>/image_raw[/compressed] (repeatable)")
    p.add_argument("--segmentation", default="rle", choices=("rle", "polygon"),
                   help="mask format: rle (exact; CVAT) or polygon (outer contours; Label Studio)")
    p.add_argument("--labels", nargs="+", default=None, metavar="ID:NAME:TEXT",
                   help="the node's label set (default: the seven shapes)")
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default out/{TOOL}/<timestamp>)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """0 on success; 2 on bad input (one-line message, no traceback)."""
    from ..labels import DEFAULT_LABELS, labels_from_strings

    try:
        labels = labels_from_strings(args.labels) if args.labels else DEFAULT_LABELS
        pairs = pair_topics(read_channels(args.mcap), args.arrays, parse_mapping(args.image_topic, "--image-topic"))
        out = run_folder(args.out, TOOL)
        summary = export(args.mcap, out, pairs, labels, args.segmentation)
    except input_errors() as e:
        return fail(TOOL, e)
    for what, n in sorted(summary["counts"].items()):
        if what != "frames":
            print(f"{TOOL}: note: {n} {what}", file=sys.stderr)
    print(f"{TOOL}: {summary['images']} images, {summary['instances']} instances -> {out / 'annotations.json'}")
    return 0
