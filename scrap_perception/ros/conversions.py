"""Messages <-> the pipeline's numpy types.

Images: ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8) -> RGB uint8 (H, W, 3). The numpy path
views ``msg.data`` in place (``np.frombuffer`` honouring ``step``) and copies only to reorder or drop
channels; cv_bridge is used instead when a ROS 2 cv_bridge is importable. A message that cannot be
read raises ``ConversionError`` whose ``code`` is the counter key and whose message says why.

Detections: ``vision_msgs/Detection2DArray`` -> ``Prompt`` per detection, in order. BoundingBox2D is a
centre and a size in pixels; the prompt box is its (x0, y0, x1, y1) corners (the axis-aligned hull
when ``theta`` is not 0). Score = the best hypothesis score, id = ``Detection2D.id``. The node reads
them from the serialised message (``detections_from_cdr``, the same prompts without building the ~25
Python objects per detection that deserialising makes) where ``cdr_detections_ok`` says it can.

Compressed images: ``sensor_msgs/CompressedImage`` (jpeg or png, ``format`` as image_transport writes it,
e.g. ``"bgr8; jpeg compressed bgr8"``) -> RGB uint8 (H, W, 3) by ``cv2.imdecode``; depth codecs and
streams that do not decode raise ``ConversionError`` like a bad raw image.

Results: ``FrameResult`` -> ``ScrapInstanceArray`` with the source header unchanged; arrays go into the
messages as bytes (one memcpy each, see ``result_to_msg``). Labels:
``vision_msgs/LabelInfo`` (class id -> name), published once, latched.
"""
from __future__ import annotations

import array
import functools
import math
import struct
from typing import TYPE_CHECKING, Any, Optional, Sequence

import cv2
import numpy as np

from ..prompts import Prompt

if TYPE_CHECKING:  # the pipeline imports torch; the replay and the recorder do without
    from ..classification.base import Classifier
    from ..labels import Label
    from ..pipeline import FrameResult

# encoding -> (channels, numpy channel order -> RGB index list or None for mono)
ENCODINGS: dict[str, tuple[int, Optional[tuple[int, ...]]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, None),
}


class ConversionError(ValueError):
    """code: short counter key (zero_size, unknown_encoding, wrong_step, short_data, nan_box, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Refused = list[tuple[int, ConversionError]]  # (index, why) of the detections not turned into prompts


def _load_cv_bridge() -> Any:
    try:
        from cv_bridge import CvBridge  # a real ROS 2 install; the PyPI "cv-bridge" is ROS 1's
        bridge = CvBridge()
        if not hasattr(bridge, "imgmsg_to_cv2"):
            return None
        return bridge
    except Exception:  # absent or broken (ROS 1 build): the numpy path is exact
        return None


_BRIDGE = _load_cv_bridge()


def check_image(msg: Any) -> int:
    """Validates an Image message's geometry; returns its channel count or raises ConversionError."""
    h, w, step, enc = int(msg.height), int(msg.width), int(msg.step), str(msg.encoding)
    if h == 0 or w == 0:
        raise ConversionError("zero_size", f"image is {w}x{h}")
    if enc not in ENCODINGS:
        raise ConversionError("unknown_encoding",
                              f"encoding {enc!r} is not one of {sorted(ENCODINGS)}")
    ch = ENCODINGS[enc][0]
    if step < w * ch:
        raise ConversionError("wrong_step", f"step {step} < width {w} x {ch} bytes ({enc})")
    if len(msg.data) < h * step:
        raise ConversionError("short_data",
                              f"{len(msg.data)} data bytes < height {h} x step {step} ({enc} {w}x{h})")
    return ch


def image_to_rgb(msg: Any, use_cv_bridge: bool = True) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a sensor_msgs/Image. rgb8 with no row padding is a view of msg.data."""
    ch = check_image(msg)
    if use_cv_bridge and _BRIDGE is not None:
        return np.asarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    # Rows are `step` bytes apart: view them, then cut each row's padding (still a view).
    img = np.frombuffer(msg.data, np.uint8, count=h * step).reshape(h, step)[:, :w * ch].reshape(h, w, ch)
    order = ENCODINGS[str(msg.encoding)][1]
    if order is None:
        return np.repeat(img, 3, axis=2)
    if order == (0, 1, 2) and ch == 3:
        return img if step == w * 3 else np.ascontiguousarray(img)
    return np.ascontiguousarray(img[..., list(order)])


def rgb_to_image(rgb: np.ndarray, header: Any = None, encoding: str = "rgb8") -> Any:
    """A sensor_msgs/Image of an RGB uint8 (H, W, 3) array, as rgb8 or bgr8, no row padding."""
    from sensor_msgs.msg import Image

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"encoding must be rgb8 or bgr8, not {encoding!r}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = 3 * msg.width
    msg.data = np.ascontiguousarray(rgb if encoding == "rgb8" else rgb[..., ::-1]).tobytes()
    return msg


# CompressedImage codec (the format's first word after the last ';') -> cv2.imencode extension.
CODECS: dict[str, str] = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}
# Stored pixels as they are: no EXIF rotation (detector boxes refer to the stored raster; cv_bridge and
# image_transport decode the same way); mono and alpha PNGs come out as 3 channels.
_IMREAD = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
# The end-of-stream marker each codec writes last. libjpeg treats a cut-off stream as a warning and older
# OpenCV (4.x) may return the grey-padded frame; a missing marker is the cheap, version-proof check.
_END_MARKERS = {".jpg": b"\xff\xd9", ".png": b"IEND"}
_TAIL = 64


def compression_codec(fmt: str) -> str:
    """The cv2 extension (".jpg" / ".png") of a CompressedImage ``format``; ConversionError for depth
    (``compressedDepth``) and unknown codecs."""
    codec = (fmt.rsplit(";", 1)[-1].split() or [""])[0].lower()
    if "compresseddepth" in fmt.lower() or codec not in CODECS:
        raise ConversionError("unsupported_compression",
                              f"compressed format {fmt!r}: only jpeg and png colour images are decoded")
    return CODECS[codec]


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """RGB uint8 (H, W, 3), C-contiguous, of a sensor_msgs/CompressedImage (jpeg or png)."""
    ext = compression_codec(str(msg.format))
    buf = np.frombuffer(msg.data, np.uint8)
    if buf.size == 0:
        raise ConversionError("undecodable_image", f"compressed image ({msg.format!r}) has no data")
    if _END_MARKERS[ext] not in buf[-_TAIL:].tobytes():
        raise ConversionError("undecodable_image", f"{buf.size} bytes labelled {msg.format!r} have no {ext[1:]} "
                                                   "end marker (truncated, or not that codec)")
    try:
        bgr = cv2.imdecode(buf, _IMREAD)
    except cv2.error as e:  # OpenCV raises for some malformed headers instead of returning None
        raise ConversionError("undecodable_image", f"{ext[1:]} stream of {buf.size} bytes: {e}") from None
    if bgr is None or bgr.ndim != 3 or bgr.size == 0:
        raise ConversionError("undecodable_image", f"{buf.size} bytes labelled {msg.format!r} do not decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_to_compressed(rgb: np.ndarray, header: Any = None, fmt: str = "jpeg", quality: int = 90) -> Any:
    """A sensor_msgs/CompressedImage of an RGB uint8 (H, W, 3) array, ``format`` as image_transport's
    compressed publisher writes it ("rgb8; jpeg compressed bgr8"). quality: jpeg 0-100 (png is lossless,
    compression level 3 like image_transport's default)."""
    from sensor_msgs.msg import CompressedImage

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
    if fmt not in CODECS:
        raise ValueError(f"fmt must be one of {sorted(CODECS)}, not {fmt!r}")
    ext = CODECS[fmt]
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, data = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
    msg = CompressedImage(format=f"rgb8; {fmt} compressed bgr8", data=data.tobytes())
    if header is not None:
        msg.header = header
    return msg


def stamp_of(header: Any) -> tuple[int, int]:
    return int(header.stamp.sec), int(header.stamp.nanosec)


def detection_to_prompt(det: Any) -> Prompt:
    """One vision_msgs/Detection2D -> Prompt (box in pixel corners); ConversionError for NaN fields."""
    c = det.bbox.center
    return _prompt(float(c.position.x), float(c.position.y), float(c.theta), float(det.bbox.size_x),
                   float(det.bbox.size_y), [float(r.hypothesis.score) for r in det.results], str(det.id))


def _prompt(cx: float, cy: float, theta: float, sx: float, sy: float, scores: list[float], id: str) -> Prompt:
    """The Prompt of a Detection2D's box (centre, theta, size), hypothesis scores and id."""
    if not all(math.isfinite(v) for v in (cx, cy, theta, sx, sy)):
        raise ConversionError("nan_box", f"detection {id!r}: box has a NaN or infinite field "
                                         f"(center {cx}, {cy}, theta {theta}, size {sx} x {sy})")
    if any(not math.isfinite(s) for s in scores):
        raise ConversionError("nan_score", f"detection {id!r}: a hypothesis score is NaN or infinite")
    hx, hy = sx / 2, sy / 2
    if theta:
        # Axis-aligned hull of the rotated box.
        ct, st = abs(math.cos(theta)), abs(math.sin(theta))
        hx, hy = hx * ct + hy * st, hx * st + hy * ct
    return Prompt(box=(cx - hx, cy - hy, cx + hx, cy + hy), id=id, score=max(scores, default=0.0))


def detections_to_prompts(msg: Any) -> tuple[list[Prompt], Refused]:
    """Prompts of a Detection2DArray in order, and (index, error) for each detection refused."""
    prompts, rejected = [], []
    for i, det in enumerate(msg.detections):
        try:
            prompts.append(detection_to_prompt(det))
        except ConversionError as e:
            rejected.append((i, e))
    return prompts, rejected


class _CdrReader:
    """Little-endian plain CDR (XCDR1, the encapsulation ROS 2 middlewares write): primitives aligned to
    their size counted from the payload's start, after the 4-byte encapsulation header."""

    def __init__(self, wire: bytes) -> None:
        if wire[:2] != b"\x00\x01":
            raise ValueError(f"not little-endian plain CDR (encapsulation {bytes(wire[:4])!r})")
        self.wire, self.pos = wire, 4

    def take(self, fmt: struct.Struct, align: int) -> tuple:
        self.pos += -(self.pos - 4) % align
        out = fmt.unpack_from(self.wire, self.pos)
        self.pos += fmt.size
        return out

    def string(self) -> str:
        (n,) = self.take(_U32, 4)
        if n == 0 or self.pos + n > len(self.wire):
            raise ValueError(f"string of {n} bytes at {self.pos} in {len(self.wire)}")
        text = self.wire[self.pos:self.pos + n - 1].decode()
        self.pos += n
        return text

    def skip(self, nbytes: int, align: int) -> None:
        self.pos += -(self.pos - 4) % align + nbytes


_U32, _STAMP, _F64, _BOX = struct.Struct("<I"), struct.Struct("<iI"), struct.Struct("<d"), struct.Struct("<5d")
_POSE_WITH_COVARIANCE = (7 + 36) * 8  # geometry_msgs/PoseWithCovariance: 7 doubles of pose, 36 of covariance


def detections_from_cdr(wire: bytes) -> tuple[tuple[int, int], list[Prompt], Refused]:
    """(header stamp, prompts, refused) of a serialised vision_msgs/Detection2DArray, as
    ``detections_to_prompts`` gives them of the deserialised message, reading only the fields a prompt
    needs (deserialising builds ~25 Python objects per detection: ~60 us each on this CPU). ValueError
    when ``wire`` is not that layout in little-endian CDR: then deserialise it (``cdr_detections_ok``
    checks this vision_msgs' layout once)."""
    try:
        return _read_detections(_CdrReader(wire), len(wire))
    except struct.error as e:  # ran past the end
        raise ValueError(f"not a Detection2DArray of this layout: {e}") from None


def _read_detections(r: _CdrReader, size: int) -> tuple[tuple[int, int], list[Prompt], Refused]:
    stamp = r.take(_STAMP, 4)
    r.string()  # frame_id
    (count,) = r.take(_U32, 4)
    prompts, rejected = [], []
    for i in range(count):
        r.take(_STAMP, 4)  # the detection's own header
        r.string()
        (results,) = r.take(_U32, 4)
        scores = []
        for _ in range(results):
            r.string()  # class_id
            scores.append(r.take(_F64, 8)[0])
            r.skip(_POSE_WITH_COVARIANCE, 8)
        cx, cy, theta, sx, sy = r.take(_BOX, 8)
        try:
            prompts.append(_prompt(cx, cy, theta, sx, sy, scores, r.string()))
        except ConversionError as e:
            rejected.append((i, e))
    if r.pos > size:
        raise ValueError(f"Detection2DArray layout ends at byte {r.pos} of {size}")
    return stamp, prompts, rejected


@functools.lru_cache(maxsize=1)
def cdr_detections_ok() -> bool:
    """True when ``detections_from_cdr`` reads this installation's vision_msgs/Detection2DArray exactly
    as deserialising it does (checked once on a message with every kind of field in use)."""
    from rclpy.serialization import serialize_message
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    msg = Detection2DArray()
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = -5, 123456789, "cam_ü"
    for i, (n, theta) in enumerate(((2, 0.0), (0, 0.4), (1, float("nan")), (3, -1.2))):
        det = Detection2D(id=f"d{i}-\u5f62" * i)
        det.header.frame_id = "x" * i
        det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.center.theta = 10.5 + i, 20.25, theta
        det.bbox.size_x, det.bbox.size_y = 30.0 + i, 7.125
        for k in range(n):
            hyp = ObjectHypothesisWithPose()
            hyp.hypothesis.class_id, hyp.hypothesis.score = "c" * (k + 1), 0.1 + 0.2 * k
            hyp.pose.pose.position.x, hyp.pose.covariance[35] = 99.0, -1.0
            det.results.append(hyp)
        msg.detections.append(det)
    try:
        stamp, prompts, rejected = detections_from_cdr(serialize_message(msg))
    except ValueError:
        return False
    want, want_rejected = detections_to_prompts(msg)
    return (stamp == stamp_of(msg.header) and len(prompts) == len(want)
            and all(a.id == b.id and a.score == b.score and np.array_equal(a.box, b.box) for a, b in zip(prompts, want))
            and [(i, e.code, str(e)) for i, e in rejected] == [(i, e.code, str(e)) for i, e in want_rejected])


def result_to_msg(result: "FrameResult", header: Any, camera_name: str, image_hw: tuple[int, int],
                  segmenter: str, classifier: "Classifier | str", publish_embeddings: bool = True) -> Any:
    """The ScrapInstanceArray of one processed frame: header unchanged, instances in detection order,
    each mask mono8 0/255 cropped to its roi (roi.height x roi.width).

    Hot path (every frame, ~25 us per instance): the generated setters copy an ``array.array`` of their
    typecode or ``bytes`` with one memcpy but iterate any other sequence (a numpy array) element by
    element, so arrays go in as bytes; and the sub-messages the ScrapInstance constructor already made
    are filled in, not replaced."""
    from scrap_perception.msg import ScrapInstance, ScrapInstanceArray

    out = ScrapInstanceArray()
    out.header = header
    out.camera_name = camera_name
    out.image_height, out.image_width = int(image_hw[0]), int(image_hw[1])
    out.segmenter = segmenter
    out.classifier = classifier if isinstance(classifier, str) else classifier.name
    instances = []
    for inst in result.instances:
        m = ScrapInstance()
        m.id = inst.id
        c = inst.classification
        m.class_id, m.class_name, m.class_score = int(c.class_id), c.class_name, float(c.score)
        m.class_scores = _floats(c.probabilities)
        m.detection_score = float(inst.prompt.score)
        m.mask_score = float(inst.mask.iou)
        _bbox(m.prompt_box, inst.prompt.box)
        x, y, w, h = (int(v) for v in inst.mask.roi)
        roi = m.roi
        roi.x_offset, roi.y_offset, roi.width, roi.height = x, y, w, h
        mask = m.mask
        mask.header = header
        mask.height, mask.width, mask.encoding, mask.step = h, w, "mono8", w
        # bool is one byte of 0 or 1: a uint8 view times 255 is the mono8 mask without a cast.
        mask.data = (np.asarray(inst.mask.mask, bool).view(np.uint8) * np.uint8(255)).tobytes()
        m.area = int(inst.mask.area)
        if publish_embeddings:
            m.embedding = _floats(c.embedding)
        instances.append(m)
    out.instances = instances
    return out


def _floats(values: Any) -> array.array:
    """A float32[] field's value: an array.array('f'), copied from the bytes (no per-element check)."""
    return array.array("f", np.asarray(values, np.float32).tobytes())


def label_info_msg(labels: Sequence["Label"], header: Any, threshold: float) -> Any:
    """vision_msgs/LabelInfo of the label set: one VisionClass (class_id = Label.id, class_name = Label.name)
    per label, in the given order; threshold: the classifier's min_score."""
    from vision_msgs.msg import LabelInfo, VisionClass

    return LabelInfo(header=header, threshold=float(threshold),
                     class_map=[VisionClass(class_id=int(lb.id), class_name=lb.name) for lb in labels])


def _bbox(msg: Any, box: Optional[Sequence[float]]) -> Any:
    if box is None:
        return msg
    x0, y0, x1, y1 = (float(v) for v in box)
    msg.center.position.x, msg.center.position.y = (x0 + x1) / 2, (y0 + y1) / 2
    msg.center.theta = 0.0
    msg.size_x, msg.size_y = x1 - x0, y1 - y0
    return msg


def mask_from_msg(inst: Any, image_hw: tuple[int, int]) -> np.ndarray:
    """Full-resolution (H, W) bool mask of a ScrapInstance (its roi-cropped mono8 mask pasted back)."""
    x, y, w, h = inst.roi.x_offset, inst.roi.y_offset, inst.roi.width, inst.roi.height
    full = np.zeros(image_hw, bool)
    if w and h:
        crop = np.frombuffer(inst.mask.data, np.uint8)[: h * inst.mask.step].reshape(h, inst.mask.step)[:, :w]
        full[y:y + h, x:x + w] = crop > 0
    return full
