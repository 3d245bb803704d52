"""Replay, recorder and demo: MCAP schemas that a third-party reader (mcap_ros2) decodes, jittered
detections, and the whole demo (COCO replay -> node -> association -> recorder) followed by a replay of
its MCAP."""
import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest

from ros_helpers import ROOT, Client, NodeProcess, ros_args

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")
from rclpy.serialization import serialize_message  # noqa: E402

from scrap_perception.ros.msgdefs import schema_text, type_name_of  # noqa: E402


def sample_messages():
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from msg_samples import sample_array
    from vision_msgs.msg import Detection2DArray

    from ros_helpers import detections_msg, header, image_msg, scene

    hdr = header(12, 34, "cam_x")
    det = detections_msg(hdr, [(1, 2, 30, 40), (5, 6, 7.5, 9.25)], ["a", "b"], score=0.75)
    diag = DiagnosticArray(header=hdr, status=[DiagnosticStatus(level=b"\x01", name="n", message="m",
                                                                values=[KeyValue(key="k", value="v")])])
    return [sample_array(), image_msg(scene(6, 5, [(1, 1, 3, 3)]), hdr, "bgr8"), det, diag,
            Detection2DArray(header=hdr)]


@pytest.mark.parametrize("index", range(5))
def test_schema_text_decodes_what_rclpy_serializes(index):
    """The ros2msg text (as ros2 bag writes it) lets mcap_ros2's own parser decode our CDR bytes."""
    from mcap_ros2._dynamic import generate_dynamic

    msg = sample_messages()[index]
    name = type_name_of(type(msg))
    decoded = generate_dynamic(name, schema_text(name))[name](serialize_message(msg))
    assert_same(msg, decoded)


def assert_same(msg, dec):
    for field in msg.get_fields_and_field_types():
        a, b = getattr(msg, field), getattr(dec, field)
        if hasattr(a, "get_fields_and_field_types"):
            assert_same(a, b)
        elif isinstance(a, list) and a and hasattr(a[0], "get_fields_and_field_types"):
            assert len(a) == len(b)
            for x, y in zip(a, b):
                assert_same(x, y)
        elif isinstance(a, (bytes, bytearray)) or (hasattr(a, "typecode") and a.typecode == "B"):
            assert bytes(a) == (bytes([b]) if isinstance(b, int) else bytes(b)), field  # `byte`: one int
        elif isinstance(a, (float, np.ndarray)) or (hasattr(a, "typecode") and a.typecode in "fd"):
            np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-6, err_msg=field)
        else:
            assert a == b or list(a) == list(b), field


def test_schema_lists_each_dependency_once_with_rosbag2_separators():
    text = schema_text("scrap_perception/msg/ScrapInstanceArray")
    deps = [line[5:] for line in text.splitlines() if line.startswith("MSG: ")]
    assert len(deps) == len(set(deps))
    assert set(deps) == {"std_msgs/Header", "builtin_interfaces/Time", "scrap_perception/ScrapInstance",
                         "vision_msgs/BoundingBox2D", "vision_msgs/Pose2D", "vision_msgs/Point2D",
                         "sensor_msgs/RegionOfInterest", "sensor_msgs/Image"}
    assert text.count("=" * 80 + "\nMSG: ") == len(deps)


def raster_iou(a, b, scale=4):
    """IoU of two boxes by counting pixels of a fine grid (independent of the formula under test)."""
    lo = np.floor(np.minimum(a, b)[:2].min()) - 1
    hi = np.ceil(np.maximum(a, b)[2:].max()) + 1
    g = (np.arange(lo * scale, hi * scale) + 0.5) / scale
    xx, yy = np.meshgrid(g, g)

    def inside(box):
        return (xx >= box[0]) & (xx < box[2]) & (yy >= box[1]) & (yy < box[3])

    ia, ib = inside(a), inside(b)
    return (ia & ib).sum() / (ia | ib).sum()


def test_jittered_boxes_stay_within_jitter_and_score_is_their_iou():
    from scrap_perception.ros.conversions import detection_to_prompt
    from scrap_perception.ros.replay_node import jitter_box, make_detection

    rng = np.random.default_rng(0)
    for _ in range(30):
        box = np.array([rng.uniform(0, 200), rng.uniform(0, 200), 0, 0])
        box[2:] = box[:2] + rng.uniform(10, 80, 2)
        out, score = jitter_box(box, 8.0, rng)
        assert np.all(np.abs(out - box) <= 8.0 + 1e-9) or out[2] == out[0] + 1 or out[3] == out[1] + 1
        assert score == pytest.approx(raster_iou(box, out), abs=0.03)
        p = detection_to_prompt(make_detection(out, "7", "Pipe", score))
        np.testing.assert_allclose(p.box, out, atol=1e-3)
        assert (p.id, p.score) == ("7", pytest.approx(score))
    same, one = jitter_box(box, 0.0, rng)
    assert one == 1.0 and np.array_equal(same, box)


@pytest.mark.slow
def test_demo_end_to_end_then_replay_its_recording(tmp_path):
    """`python -m scrap_perception.ros.demo` (small, 2 cameras): replay -> node (GrabCut, camera sets) ->
    association -> recorder; the MCAP it writes decodes with mcap_ros2, holds one array per frame matching the
    recorded images, and replays. (test_ros_demo_chain checks the association of the chain.)"""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out = tmp_path / "demo"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "scrap_perception.ros.demo", "--out", str(out), "--frames", "2",
                        "--image-size", "240", "320", "--cameras", "2", "--objects", "3", "4", "--timeout", "240"],
                       capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    seconds = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "mean DICE" in r.stdout and "Traceback" not in r.stderr
    summary = json.loads((out / "summary.json").read_text())
    print(f"demo took {seconds:.0f} s; mean DICE {summary['scores']['all']['mean_dice']:.3f}")
    assert summary["segmenter"] == "grabcut" and summary["frames_replayed"] == 4
    for cam in ("cam0", "cam1"):
        c = summary["node_counters"][cam]
        assert c["images_in"] == c["paired"] == c["processed"] == c["published"] == "2"
    assert (out / "summary.png").is_file() and (out / "overlay_example.png").is_file()
    assert len(list((out / "overlays").glob("cam0_scrap_overlay_*.png"))) == 2

    # The recording, read with mcap_ros2's decoder: arrays pair with the recorded images by header.
    images, arrays, dets = {}, {}, {}
    with open(out / "demo.mcap", "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        for schema, channel, _, msg in reader.iter_decoded_messages():
            key = (channel.topic.split("/")[1], msg.header.stamp.sec, msg.header.stamp.nanosec) \
                if hasattr(msg, "header") else None
            if schema.name == "sensor_msgs/msg/Image" and channel.topic.endswith("image_raw"):
                images[key] = msg
            elif schema.name == "scrap_perception/msg/ScrapInstanceArray":
                arrays[key] = msg
            elif schema.name == "vision_msgs/msg/Detection2DArray":
                dets[key] = msg
    assert len(images) == len(arrays) == len(dets) == 4
    assert set(arrays) == set(images) == set(dets)
    for key, arr in arrays.items():
        assert (arr.image_height, arr.image_width) == (240, 320)
        det_ids = iter(d.id for d in dets[key].detections)
        assert all(i.id in det_ids for i in arr.instances), "instances follow the detections' order and ids"
    mean = summary["scores"]["all"]["mean_dice"]
    assert mean is not None and 0.0 < mean <= 1.0 and not math.isnan(mean)

    # Replay the MCAP with its recorded stamps: what arrives equals what was recorded.
    client = Client([], name="mcap_reader")
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    got = {}
    for cam in ("cam0", "cam1"):
        client.node.create_subscription(Image, f"/{cam}/image_raw",
                                        lambda m, c=cam: got.setdefault(("img", c, m.header.stamp.sec,
                                                                         m.header.stamp.nanosec), m), 10)
        client.node.create_subscription(Detection2DArray, f"/{cam}/detections",
                                        lambda m, c=cam: got.setdefault(("det", c, m.header.stamp.sec,
                                                                         m.header.stamp.nanosec), m), 10)
    replay = NodeProcess("scrap_perception.ros.replay_node",
                         ros_args(source=str(out / "demo.mcap"), restamp=False, rate=5.0, wait_for_subscribers=30.0,
                                  min_subscribers=1, linger=1.0), tmp_path, "mcap_replay")
    try:
        assert replay.wait(90) == 0, replay.output()[-2000:]
        client.wait_until(lambda: len(got) == 8, 10, "the replayed messages")
    finally:
        replay.close()
        client.close()
    for (cam, sec, nsec), img in images.items():
        rep = got[("img", cam, sec, nsec)]
        assert (rep.height, rep.width, rep.encoding, rep.step) == (img.height, img.width, img.encoding, img.step)
        assert bytes(rep.data) == bytes(img.data)
        replayed_ids = [d.id for d in got[("det", cam, sec, nsec)].detections]
        assert replayed_ids == [d.id for d in dets[(cam, sec, nsec)].detections]


def test_coco_frames_split_cameras_and_carry_ground_truth_boxes(tmp_path):
    """Images go to cameras in turn (or by their 'camera' field); detections are the annotations."""
    from scrap_perception.data import CocoDataset
    from scrap_perception.ros.conversions import detection_to_prompt, image_to_rgb
    from scrap_perception.ros.replay_node import coco_frames
    from scrap_perception.synth import generate_dataset

    ann = generate_dataset(tmp_path, 5, seed=1, image_size=(48, 64), objects=(2, 4), min_area=4, progress=False)
    ds = CocoDataset(ann)
    frames = coco_frames(ann, ["l", "r"], jitter=0.0, seed=0, encoding="bgr8")
    assert len(frames) == 2 and [[f.camera for f in fr] for fr in frames] == [["l", "r"], ["l", "r"]]
    for k, fr in enumerate(frames):
        for j, f in enumerate(fr):
            i = 2 * k + j  # image k of camera j is the json's image 2k + j; the fifth image is left over
            np.testing.assert_array_equal(image_to_rgb(f.image(), use_cv_bridge=False), ds.load_image(i))
            prompts = [detection_to_prompt(d) for d in f.detections()]
            assert [p.id for p in prompts] == [str(g.ann_id) for g in ds[i].instances]
            for p, g in zip(prompts, ds[i].instances):
                np.testing.assert_allclose(p.box, g.box)
                assert p.score == 1.0
    data = json.loads(ann.read_text())
    for rec, cam in zip(data["images"], ["r", "r", "l", "x", "l"]):
        rec["camera"] = cam
    ann.write_text(json.dumps(data))
    by_field = coco_frames(ann, ["l", "r"], jitter=0.0, seed=0, encoding="rgb8")
    assert len(by_field) == 2  # 'l' has images 2 and 4, 'r' 0 and 1; 'x' is not replayed
    np.testing.assert_array_equal(image_to_rgb(by_field[1][0].image(), use_cv_bridge=False), ds.load_image(4))
    np.testing.assert_array_equal(image_to_rgb(by_field[0][1].image(), use_cv_bridge=False), ds.load_image(0))
