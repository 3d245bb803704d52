"""From a running system back to a training set: synth -> replay -> node -> recorder -> export.

Real processes over DDS: the replay publishes generated scenes and their boxes, the perception node
(GrabCut + a small random-weight CN-CLIP, so classes vary) segments and classifies them, the recorder
writes an MCAP, and a client in this process keeps what the node published. ``scrap-tools export`` of
the recording must give back exactly those masks, classes and scores, on the replayed images."""
import json
import time

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ros_helpers import Client, NodeProcess, ros_args, start_node
from scrap_perception.data import CocoDataset
from scrap_perception.labels import DEFAULT_LABELS, UNKNOWN_NAME
from scrap_perception.synth import generate_dataset
from scrap_perception.tools import cli
from tiny_models import small_clip_json

pytestmark = [pytest.mark.ros, pytest.mark.slow]
pytest.importorskip("rclpy")

CAMS = ("cam_a", "cam_b")


def _published_mask(inst, hw):
    """Full-resolution mask of a received ScrapInstance (its roi crop, honouring the row step)."""
    x, y, w, h = inst.roi.x_offset, inst.roi.y_offset, inst.roi.width, inst.roi.height
    full = np.zeros(hw, bool)
    if w and h:
        full[y:y + h, x:x + w] = np.frombuffer(bytes(inst.mask.data), np.uint8).reshape(h, inst.mask.step)[:, :w] > 0
    return full


def test_export_of_a_recording_gives_back_what_the_node_published(tmp_path):
    ann = generate_dataset(tmp_path / "data", 2 * len(CAMS), seed=4, image_size=(180, 240), objects=(3, 5),
                           progress=False)
    mcap = tmp_path / "run.mcap"
    topics = [f"/{c}/{t}" for c in CAMS for t in ("image_raw", "detections", "scrap_instances")]
    client = Client([], name="roundtrip_client")
    from scrap_perception.msg import ScrapInstanceArray
    from scrap_perception.ros.qos import output_qos

    got = {}
    for cam in CAMS:
        client.node.create_subscription(
            ScrapInstanceArray, f"/{cam}/scrap_instances",
            lambda m, c=cam: got.setdefault((c, m.header.stamp.sec, m.header.stamp.nanosec), m), output_qos(100))
    procs = [start_node(tmp_path, camera_names=list(CAMS), publish_overlay=False, **{
        "segmenter.model_type": "grabcut", "classifier.model": small_clip_json(tmp_path),
        "classifier.checkpoint": "random", "classifier.device": "cpu"})]
    try:
        node = procs[0]
        recorder = NodeProcess("scrap_perception.ros.recorder_node", ros_args(output=str(mcap), topics=topics),
                               tmp_path, "recorder")
        procs.append(recorder)
        # The recorder must hold the node's result topics before the first frame goes out (they are volatile).
        deadline = time.monotonic() + 120
        while not all(f"recording /{c}/scrap_instances" in recorder.output() for c in CAMS):
            assert time.monotonic() < deadline and node.alive() and recorder.alive(), \
                node.output()[-2000:] + recorder.output()[-2000:]
            time.sleep(0.2)
        replay = NodeProcess("scrap_perception.ros.replay_node", ros_args(
            source=str(ann), camera_names=list(CAMS), rate=5.0, jitter_px=4.0, lockstep=True, seed=1,
            wait_for_subscribers=120.0, min_subscribers=2, linger=1.0), tmp_path, "replay")
        procs.append(replay)
        assert replay.wait(240) == 0, replay.output()[-3000:] + node.output()[-3000:]
        client.wait_until(lambda: len(got) == 4, 20, "the node's four arrays")
        code, _ = recorder.interrupt(20)  # SIGINT finishes the MCAP file
        assert code == 0, recorder.output()[-3000:]
    finally:
        for p in reversed(procs):
            p.close()
        client.close()

    out = tmp_path / "export"
    assert cli.main(["export", "--mcap", str(mcap), "--out", str(out)]) == 0
    coco = json.loads((out / "annotations.json").read_text())
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    images = {(r["camera"], r["stamp"]["sec"], r["stamp"]["nanosec"]): r for r in coco["images"]}
    assert set(images) == set(got), "one exported image per published array"
    ds = CocoDataset(ann)
    replayed = {ds.load_image(i).tobytes() for i in range(len(ds))}
    n_instances = 0
    for key, arr in got.items():
        rec = images[key]
        hw = (rec["height"], rec["width"])
        assert hw == (arr.image_height, arr.image_width) == (180, 240)
        rgb = cv2.cvtColor(cv2.imread(str(out / rec["file_name"])), cv2.COLOR_BGR2RGB)
        assert rgb.tobytes() in replayed, "the exported image is a replayed one, pixel for pixel"
        anns = [a for a in coco["annotations"] if a["image_id"] == rec["id"]]
        assert [a["attributes"]["instance_id"] for a in anns] == [i.id for i in arr.instances]
        for a, inst in zip(anns, arr.instances):
            rle = {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
            np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), _published_mask(inst, hw))
            want = next((lb.name for lb in DEFAULT_LABELS if lb.id == inst.class_id), UNKNOWN_NAME)
            assert cats[a["category_id"]] == want == inst.class_name
            assert a["attributes"]["class_score"] == pytest.approx(inst.class_score)
            assert a["attributes"]["mask_score"] == pytest.approx(inst.mask_score)
            assert a["attributes"]["detection_score"] == pytest.approx(inst.detection_score)
            assert a["area"] == inst.area
            n_instances += 1
    assert n_instances >= 8
    # The corrected set is a training set as it stands here (every class known): it validates.
    assert len(CocoDataset(out / "annotations.json").validate()) == 4
