"""Message conversions against OpenCV's own colour conversions and hand-made messages."""
import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scrap_perception.classification.base import Classification, unclassified
from scrap_perception.masks import from_full
from scrap_perception.pipeline import FrameResult, Instance
from scrap_perception.prompts import Prompt, PromptError

pytestmark = pytest.mark.ros

sensor_msgs = pytest.importorskip("sensor_msgs.msg")
vision_msgs = pytest.importorskip("vision_msgs.msg")
from scrap_perception.ros import conversions as cv  # noqa: E402
from scrap_perception.ros.conversions import ConversionError  # noqa: E402

# encoding -> (channels, OpenCV conversion from that layout to RGB)
CV2_TO_RGB = {"rgb8": (3, None), "bgr8": (3, cv2.COLOR_BGR2RGB), "rgba8": (4, cv2.COLOR_RGBA2RGB),
              "bgra8": (4, cv2.COLOR_BGRA2RGB), "mono8": (1, cv2.COLOR_GRAY2RGB)}


def raw_image(pixels: np.ndarray, encoding: str, pad: int = 0):
    """An Image whose rows are `pad` bytes longer than the pixels (filled with 0xEE)."""
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1)
    data = np.concatenate([row, np.full((h, pad), 0xEE, np.uint8)], axis=1)
    return sensor_msgs.Image(height=h, width=w, encoding=encoding, step=row.shape[1] + pad,
                             data=data.tobytes())


@settings(max_examples=60, deadline=None)
@given(enc=st.sampled_from(sorted(CV2_TO_RGB)), h=st.integers(1, 9), w=st.integers(1, 9),
       pad=st.integers(0, 5), seed=st.integers(0, 2**32 - 1))
def test_every_encoding_matches_opencv(enc, h, w, pad, seed):
    ch, code = CV2_TO_RGB[enc]
    px = np.random.default_rng(seed).integers(0, 256, (h, w, ch), dtype=np.uint8)
    if ch == 1:
        px = px[..., 0]
    expected = px if code is None else cv2.cvtColor(px, code)
    rgb = cv.image_to_rgb(raw_image(px, enc, pad), use_cv_bridge=False)
    assert rgb.dtype == np.uint8 and rgb.shape == (h, w, 3)
    np.testing.assert_array_equal(rgb, expected)


def test_rgb8_without_padding_is_zero_copy():
    px = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = raw_image(px, "rgb8")
    rgb = cv.image_to_rgb(msg, use_cv_bridge=False)
    assert np.shares_memory(rgb, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("enc", ["rgb8", "bgr8"])
def test_rgb_to_image_round_trip(enc):
    px = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = cv.rgb_to_image(px, encoding=enc)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 7, 21, enc)
    np.testing.assert_array_equal(cv.image_to_rgb(msg, use_cv_bridge=False), px)
    if enc == "bgr8":
        np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(5, 7, 3), px[..., ::-1])


@pytest.mark.parametrize("make, code", [
    (lambda: sensor_msgs.Image(height=0, width=4, encoding="rgb8", step=12), "zero_size"),
    (lambda: sensor_msgs.Image(height=4, width=0, encoding="rgb8", step=0), "zero_size"),
    (lambda: sensor_msgs.Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8)), "unknown_encoding"),
    (lambda: sensor_msgs.Image(height=2, width=2, encoding="", step=6, data=bytes(12)), "unknown_encoding"),
    (lambda: sensor_msgs.Image(height=2, width=4, encoding="rgb8", step=11, data=bytes(22)), "wrong_step"),
    (lambda: sensor_msgs.Image(height=2, width=4, encoding="rgb8", step=12, data=bytes(23)), "short_data"),
    (lambda: sensor_msgs.Image(height=3, width=2, encoding="mono8", step=4, data=bytes(10)), "short_data"),
])
def test_bad_images_give_a_reason(make, code):
    with pytest.raises(ConversionError) as e:
        cv.image_to_rgb(make(), use_cv_bridge=False)
    assert e.value.code == code
    assert str(e.value)  # a human-readable reason for the log


def detection(cx, cy, sx, sy, id="d", scores=(0.5,), theta=0.0):
    d = vision_msgs.Detection2D(id=id)
    d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.theta = cx, cy, theta
    d.bbox.size_x, d.bbox.size_y = sx, sy
    for s in scores:
        h = vision_msgs.ObjectHypothesisWithPose()
        h.hypothesis.class_id, h.hypothesis.score = "Pipe", s
        d.results.append(h)
    return d


def test_detections_to_prompts_keeps_order_ids_and_best_score():
    arr = vision_msgs.Detection2DArray(detections=[
        detection(50, 40, 20, 10, "a", (0.2, 0.9, 0.4)), detection(5, 6, 4, 2, "b", ()),
        detection(float("nan"), 1, 2, 3, "c"), detection(1, 2, 3, float("inf"), "d"),
        detection(1, 2, 3, 4, "e", (float("nan"),)), detection(30, 30, 10, 10, "f")])
    prompts, bad = cv.detections_to_prompts(arr)
    assert [p.id for p in prompts] == ["a", "b", "f"]
    np.testing.assert_allclose(prompts[0].box, [40, 35, 60, 45])
    assert prompts[0].score == pytest.approx(0.9) and prompts[1].score == 0.0
    assert [(i, e.code) for i, e in bad] == [(2, "nan_box"), (3, "nan_box"), (4, "nan_score")]


FLOATS = st.one_of(st.floats(-5000, 5000), st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0]))
# What a ROS string can hold: UTF-8 text without NUL (surrogates do not encode)
TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


@settings(max_examples=80, deadline=None)
@given(dets=st.lists(st.tuples(FLOATS, FLOATS, st.one_of(st.just(0.0), FLOATS), FLOATS, FLOATS,
                               st.text(TEXT, max_size=12), st.lists(st.tuples(st.text(TEXT, max_size=6), FLOATS),
                                                                    max_size=3),
                               st.text(TEXT, max_size=5)), max_size=8),
       frame_id=st.text(TEXT, max_size=9), sec=st.integers(-2**31, 2**31 - 1), nanosec=st.integers(0, 999_999_999))
def test_serialised_detections_read_as_the_deserialised_ones(dets, frame_id, sec, nanosec):
    """detections_from_cdr on the wire bytes = detections_to_prompts on the deserialised message: stamp,
    every prompt (box, id, score) and every refusal (index, code, message)."""
    from rclpy.serialization import deserialize_message, serialize_message

    msg = vision_msgs.Detection2DArray()
    msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec = frame_id, sec, nanosec
    for cx, cy, theta, sx, sy, id_, results, det_frame in dets:
        d = detection(cx, cy, sx, sy, id_, [score for _, score in results], theta)
        d.header.frame_id = det_frame
        for r, (class_id, _) in zip(d.results, results):
            r.hypothesis.class_id = class_id
            r.pose.covariance[0] = r.pose.pose.orientation.w = 2.5
        msg.detections.append(d)
    wire = serialize_message(msg)
    stamp, prompts, rejected = cv.detections_from_cdr(wire)
    ref = deserialize_message(wire, vision_msgs.Detection2DArray)
    want, want_rejected = cv.detections_to_prompts(ref)
    assert stamp == cv.stamp_of(ref.header) == (sec, nanosec)
    assert [(p.id, p.score) for p in prompts] == [(p.id, p.score) for p in want]
    for p, q in zip(prompts, want):
        np.testing.assert_array_equal(p.box, q.box)
        assert (p.points.shape, p.point_labels.shape) == (q.points.shape, q.point_labels.shape) == ((0, 2), (0,))
    assert [(i, e.code, str(e)) for i, e in rejected] == [(i, e.code, str(e)) for i, e in want_rejected]


def test_serialised_detections_in_another_layout_are_refused_not_misread():
    from rclpy.serialization import serialize_message

    assert cv.cdr_detections_ok()  # this installation's vision_msgs: the node subscribes raw
    wire = serialize_message(vision_msgs.Detection2DArray(detections=[detection(5.0, 6.0, 4.0, 2.0, "a", (0.5,))]))
    for bad in (b"\x00\x00" + wire[2:], wire[:-9], b"\x00\x01\x00\x00" + bytes(6), bytes(wire[:4]) + b"\xff" * 40):
        with pytest.raises(ValueError):
            cv.detections_from_cdr(bad)


@pytest.mark.parametrize("theta", [0.3, -1.1, math.pi / 2])
def test_rotated_box_becomes_its_axis_aligned_hull(theta):
    p = cv.detection_to_prompt(detection(100, 80, 40, 10, theta=theta))
    corners = cv2.boxPoints(((100, 80), (40, 10), math.degrees(theta)))
    np.testing.assert_allclose(p.box, [*corners.min(0), *corners.max(0)], atol=1e-3)


def test_result_to_msg_round_trips_masks_and_fields():
    from std_msgs.msg import Header

    rng = np.random.default_rng(1)
    full = np.zeros((30, 40), bool)
    full[5:12, 8:20] = rng.random((7, 12)) > 0.3
    full[5, 8] = full[11, 19] = True
    emb = rng.normal(size=8).astype(np.float32)
    emb /= np.linalg.norm(emb)
    probs = np.full(7, 0.1, np.float32)
    probs[4] = 0.4
    inst = Instance("det-7", Prompt(box=(7.5, 4, 21, 13), id="det-7", score=0.8), from_full(full, 0.9),
                    Classification(4, "Pipe", 0.4, probs, emb))
    empty_cls = Instance("x", Prompt(box=(0, 0, 3, 3), id="x", score=0.1), from_full(full[:, ::-1], 0.5),
                         unclassified())
    header = Header(frame_id="cam0_optical")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = cv.result_to_msg(FrameResult([inst, empty_cls]), header, "cam0", (30, 40), "sam:vit_b", "cn_clip:x")
    assert msg.header == header and msg.camera_name == "cam0"
    assert (msg.image_height, msg.image_width, msg.segmenter, msg.classifier) == (30, 40, "sam:vit_b", "cn_clip:x")
    a, b = msg.instances
    assert (a.id, a.class_id, a.class_name) == ("det-7", 4, "Pipe")
    assert a.class_score == pytest.approx(0.4) and a.detection_score == pytest.approx(0.8)
    assert a.mask_score == pytest.approx(0.9)
    np.testing.assert_allclose(a.class_scores, probs)
    np.testing.assert_allclose(a.embedding, emb)
    assert (a.prompt_box.center.position.x, a.prompt_box.center.position.y) == (14.25, 8.5)
    assert (a.prompt_box.size_x, a.prompt_box.size_y) == (13.5, 9)
    assert (a.roi.x_offset, a.roi.y_offset, a.roi.width, a.roi.height) == (8, 5, 12, 7)
    assert (a.mask.encoding, a.mask.width, a.mask.height, a.mask.step) == ("mono8", 12, 7, 12)
    assert set(np.unique(np.frombuffer(a.mask.data, np.uint8))) == {0, 255}
    assert a.area == full.sum()
    np.testing.assert_array_equal(cv.mask_from_msg(a, (30, 40)), full)
    np.testing.assert_array_equal(cv.mask_from_msg(b, (30, 40)), full[:, ::-1])
    assert b.class_id == 255 and len(b.class_scores) == 0
    no_emb = cv.result_to_msg(FrameResult([inst]), header, "cam0", (30, 40), "s", "c", publish_embeddings=False)
    assert len(no_emb.instances[0].embedding) == 0


# --- the array builder against the original one ------------------------------------------------------
def reference_result_to_msg(result, header, camera_name, image_hw, segmenter, classifier, publish_embeddings=True):
    """conversions.result_to_msg as it was before it was optimised (numpy arrays into the generated
    setters, fresh sub-messages): the reference the fast builder must equal field for field."""
    from scrap_perception.msg import ScrapInstance, ScrapInstanceArray
    from sensor_msgs.msg import Image, RegionOfInterest
    from vision_msgs.msg import BoundingBox2D

    out = ScrapInstanceArray()
    out.header = header
    out.camera_name = camera_name
    out.image_height, out.image_width = int(image_hw[0]), int(image_hw[1])
    out.segmenter = segmenter
    out.classifier = classifier if isinstance(classifier, str) else classifier.name
    for inst in result.instances:
        m = ScrapInstance()
        m.id = inst.id
        c = inst.classification
        m.class_id, m.class_name, m.class_score = int(c.class_id), c.class_name, float(c.score)
        m.class_scores = np.asarray(c.probabilities, np.float32)
        m.detection_score = float(inst.prompt.score)
        m.mask_score = float(inst.mask.iou)
        box = BoundingBox2D()
        if inst.prompt.box is not None:
            x0, y0, x1, y1 = (float(v) for v in inst.prompt.box)
            box.center.position.x, box.center.position.y = (x0 + x1) / 2, (y0 + y1) / 2
            box.center.theta = 0.0
            box.size_x, box.size_y = x1 - x0, y1 - y0
        m.prompt_box = box
        x, y, w, h = (int(v) for v in inst.mask.roi)
        m.roi = RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h, do_rectify=False)
        mask = Image(header=header, height=h, width=w, encoding="mono8", is_bigendian=0, step=w)
        mask.data = (np.asarray(inst.mask.mask, bool).astype(np.uint8) * 255).tobytes()
        m.mask = mask
        m.area = int(inst.mask.area)
        if publish_embeddings:
            m.embedding = np.asarray(c.embedding, np.float32)
        out.instances.append(m)
    return out


def sample_result(seed: int, n: int = 20, hw: tuple = (720, 1280)) -> FrameResult:
    """n instances of every kind the pipeline makes: box-sized and frame-sized masks, a mask that is a
    non-contiguous view, an empty mask, unclassified ones, a prompt without a box, float64 inputs."""
    from scrap_perception.masks import InstanceMask

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 6
        h, w = (int(v) for v in (rng.integers(1, 160), rng.integers(1, 220)))
        if kind == 1:
            h, w = hw
        x, y = int(rng.integers(0, hw[1] - w + 1)), int(rng.integers(0, hw[0] - h + 1))
        crop = rng.random((h, 2 * w)) > 0.4
        crop = crop[:, ::2] if kind == 2 else crop[:, :w]  # kind 2: a strided view
        roi = (x, y, w, h)
        if kind == 3:
            roi, crop = (0, 0, 0, 0), np.zeros((0, 0), bool)
        probs = rng.dirichlet(np.ones(7))
        emb = rng.normal(size=512)
        emb /= np.linalg.norm(emb)
        cls = (unclassified() if kind == 4 else
               Classification(int(probs.argmax()), "Pipe", float(probs.max()),
                              probs if kind == 5 else probs.astype(np.float32),
                              emb if kind == 5 else emb.astype(np.float32)))
        box = None if kind == 5 else (x - rng.uniform(0, 9), y - rng.uniform(0, 9), x + w + 0.5, y + h + 1.25)
        out.append(Instance(f"det-{i}", Prompt(box=box, id=f"det-{i}", score=float(rng.uniform(0, 1))),
                            InstanceMask(roi, crop, float(rng.uniform(0.5, 1))), cls))
    return FrameResult(out)


def assert_same_array(new, ref):
    """Field for field, each instance's fields named when one differs, with the same Python types. (Not
    the serialised bytes: CDR's alignment padding is not initialised, it differs from call to call.)"""
    for field in ref.get_fields_and_field_types():
        if field != "instances":
            assert getattr(new, field) == getattr(ref, field), field
    assert len(new.instances) == len(ref.instances)
    for a, b in zip(new.instances, ref.instances):
        for field in b.get_fields_and_field_types():
            assert getattr(a, field) == getattr(b, field), (b.id, field)
            assert type(getattr(a, field)) is type(getattr(b, field)), (b.id, field)
    assert new == ref


class _Named:
    name = "cn_clip:ViT-B-16"


def array_header():
    from std_msgs.msg import Header

    header = Header(frame_id="cam_right_optical")
    header.stamp.sec, header.stamp.nanosec = 1_700_000_321, 123_456_789
    return header


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("embeddings", [True, False])
def test_result_to_msg_equals_the_original_builder(seed, embeddings):
    from std_msgs.msg import Header

    header = Header(frame_id=f"cam{seed}_optical")
    header.stamp.sec, header.stamp.nanosec = 1_700_000_000 + seed, 999_999_999 - seed
    result = sample_result(seed)
    for classifier in ("cn_clip:x", _Named()):
        args = (result, header, "cam0", (720, 1280), "mobile_sam:vit_t", classifier, embeddings)
        assert_same_array(cv.result_to_msg(*args), reference_result_to_msg(*args))


def test_result_to_msg_masks_paste_back_exactly():
    result = sample_result(11)
    from std_msgs.msg import Header

    msg = cv.result_to_msg(result, Header(), "c", (720, 1280), "s", "c")
    for inst, m in zip(result.instances, msg.instances):
        np.testing.assert_array_equal(cv.mask_from_msg(m, (720, 1280)), inst.mask.full((720, 1280)))
        assert m.mask.data.typecode == "B" and m.embedding.typecode == "f" and m.class_scores.typecode == "f"


def test_empty_result_is_one_array_with_no_instances():
    from std_msgs.msg import Header

    msg = cv.result_to_msg(FrameResult([]), Header(frame_id="f"), "cam1", (2, 3), "grabcut", "none")
    assert msg.instances == [] and msg.header.frame_id == "f"


def test_rejection_codes_of_the_pipelines_own_reasons():
    """The codes the node counts come from the real Pipeline's rejections (sanitize policy and thresholds)."""
    from ros_helpers import BoxSegmenter
    from scrap_perception.pipeline import Pipeline

    pipe = Pipeline(BoxSegmenter(iou=0.3), min_mask_score=0.5)
    prompts = [Prompt(box=(np.nan, 1, 5, 5)), Prompt(box=(900, 10, 950, 20)), Prompt(box=(1, 1, 1, 5)),
               Prompt(box=(2, 2, 9, 9))]
    result = pipe.process_frames([(np.zeros((40, 60, 3), np.uint8), prompts)])[0]
    assert [(r.index, r.code) for r in result.rejected] == [
        (0, "nan_box"), (1, "box_outside_image"), (2, "empty_box"), (3, "mask_below_min_score")]
    pipe = Pipeline(BoxSegmenter(), min_area=1000)
    result = pipe.process_frames([(np.zeros((40, 60, 3), np.uint8), prompts[3:])])[0]
    assert [r.code for r in result.rejected] == ["mask_below_min_area"]
    assert PromptError("something new").code == "prompt_rejected"


# --- compressed images --------------------------------------------------------------------------------
def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A camera-like RGB frame: smooth gradients plus mild noise (pure noise is a jpeg worst case)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 23), 128 + 90 * np.cos(y / 17), 64 + (x + y) % 128], axis=2)
    noise = np.random.default_rng(seed).normal(0, 4, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def compressed(data: bytes, fmt: str):
    return sensor_msgs.CompressedImage(format=fmt, data=data)


def encoded(img: np.ndarray, ext: str) -> bytes:
    """What a camera driver sends: OpenCV's own encoding of a BGR (or mono / BGRA) array."""
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("hw", [(1, 1), (37, 53), (120, 161)])
def test_png_round_trip_is_exact(hw):
    px = np.random.default_rng(hw[1]).integers(0, 256, (*hw, 3), dtype=np.uint8)
    msg = cv.rgb_to_compressed(px, fmt="png")
    assert msg.format == "rgb8; png compressed bgr8"
    rgb = cv.compressed_to_rgb(msg)
    assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, px)


@pytest.mark.parametrize("hw", [(1, 1), (37, 53), (240, 321)])
def test_jpeg_round_trip_is_close(hw):
    px = textured(*hw)
    hdr = sensor_msgs.CompressedImage().header
    hdr.frame_id, hdr.stamp.sec = "cam0_optical", 42
    msg = cv.rgb_to_compressed(px, hdr, fmt="jpeg", quality=90)
    assert msg.format == "rgb8; jpeg compressed bgr8" and msg.header == hdr
    rgb = cv.compressed_to_rgb(msg)
    assert rgb.shape == px.shape and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert np.abs(rgb.astype(int) - px).mean() < 4
    # colour order: the red channel stays red (a swapped decode would put blue's values there)
    assert np.abs(rgb.astype(int) - px[..., ::-1]).mean() > 10 or hw == (1, 1)


@pytest.mark.parametrize("fmt, ext", [
    ("jpeg", ".jpg"), ("jpg", ".jpg"), ("JPEG", ".jpg"), ("png", ".png"),
    ("rgb8; jpeg compressed bgr8", ".jpg"), ("bgr8; jpeg compressed bgr8", ".jpg"),
    ("bgr8; png compressed bgr8", ".png"), ("rgba8; png compressed bgra8", ".png"),
    ("mono8; jpeg compressed mono8", ".jpg")])
def test_image_transport_format_strings_decode(fmt, ext):
    px = textured(24, 32)
    rgb = cv.compressed_to_rgb(compressed(encoded(px[..., ::-1], ext), fmt))
    assert rgb.shape == (24, 32, 3)
    assert np.abs(rgb.astype(int) - px).mean() < (4 if ext == ".jpg" else 1e-9)


@pytest.mark.parametrize("fmt", ["16UC1; compressedDepth png", "32FC1; compressedDepth", "compressedDepth",
                                 "", "rgb8", "tiff", "bgr8; webp compressed bgr8", "theora"])
def test_unsupported_compression_is_refused(fmt):
    with pytest.raises(ConversionError) as e:
        cv.compressed_to_rgb(compressed(encoded(np.zeros((4, 4), np.uint8), ".png"), fmt))
    assert e.value.code == "unsupported_compression" and repr(fmt) in str(e.value)


def test_mono_alpha_and_16_bit_pngs_become_rgb():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    np.testing.assert_array_equal(cv.compressed_to_rgb(compressed(encoded(gray, ".png"), "png")),
                                  np.repeat(gray[..., None], 3, axis=2))
    rgba = np.random.default_rng(0).integers(0, 256, (5, 6, 4), dtype=np.uint8)
    bgra = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)
    np.testing.assert_array_equal(cv.compressed_to_rgb(compressed(encoded(bgra, ".png"), "png")), rgba[..., :3])
    deep = gray.astype(np.uint16) * 257
    np.testing.assert_array_equal(cv.compressed_to_rgb(compressed(encoded(deep, ".png"), "png"))[..., 0], gray)


def _broken_streams():
    px = textured(48, 64)[..., ::-1]
    jpg, png = encoded(px, ".jpg"), encoded(px, ".png")
    header_zeroed = bytes(32) + jpg[32:]
    return [
        ("empty jpeg", b"", "jpeg"), ("empty png", b"", "bgr8; png compressed bgr8"),
        ("garbage", bytes(range(256)) * 4, "jpeg"), ("garbage ending like a jpeg", b"\x00" * 500 + b"\xff\xd9", "jpeg"),
        ("jpeg, first half", jpg[:len(jpg) // 2], "jpeg"), ("jpeg less its last 2 bytes", jpg[:-2], "jpeg"),
        ("jpeg with a zeroed header", header_zeroed, "jpeg"),
        ("png, first half", png[:len(png) // 2], "png"), ("png less its IEND chunk", png[:-12], "png"),
        ("png with a zeroed header", bytes(16) + png[16:], "png"),
    ]


@pytest.mark.parametrize("what, data, fmt", _broken_streams(), ids=[b[0] for b in _broken_streams()])
def test_broken_streams_are_undecodable_not_a_crash(what, data, fmt):
    with pytest.raises(ConversionError) as e:
        cv.compressed_to_rgb(compressed(data, fmt))
    assert e.value.code == "undecodable_image" and str(e.value)


def test_rgb_to_compressed_refuses_what_it_cannot_write():
    with pytest.raises(ValueError, match="fmt"):
        cv.rgb_to_compressed(np.zeros((2, 2, 3), np.uint8), fmt="webp")
    with pytest.raises(ValueError, match="RGB uint8"):
        cv.rgb_to_compressed(np.zeros((2, 2), np.uint8))
