"""The perception node as a real process with small random-weight SAM and CN-CLIP, fed over DDS by this
test process: two cameras, both arrival orders, outputs checked against the same Pipeline run here,
bad input of every kind, and Ctrl-C."""
import functools
import math
import time

import numpy as np
import pytest

from ros_helpers import (Client, detections_msg, header, image_msg, scene, small_models,
                         start_node)

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

CAMS = ("cam_a", "cam_b")
H, W = 240, 320
BOXES = [(20, 30, 90, 100), (120, 40, 170, 130), (200, 120, 300, 220)]
OUTSIDE = (400, 10, 450, 60)  # wholly right of the 320-px image
SEED = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ros_node")
    params = dict(small_models(tmp), camera_names=list(CAMS), min_mask_score=-1.0, random_seed=SEED,
                  **{"pairing.max_age": 1.5})
    node = start_node(tmp, "node", **params)
    client = Client(CAMS, overlay_cameras=["cam_a"])
    try:
        client.wait_for_node(180, node)
        yield node, client, params
    finally:
        client.close()
        node.close()


def frame_msgs(cam, k, extra=()):
    hdr = header(1000 + k, 500 * k + (cam == "cam_b"), f"{cam}_optical")
    rgb = scene(H, W, BOXES, seed=10 * k + (cam == "cam_b"))
    enc = "rgb8" if cam == "cam_a" else "bgr8"
    boxes = [*BOXES, OUTSIDE, *extra]
    ids = [f"{cam}-{k}-{i}" for i in range(len(boxes))]
    return hdr, rgb, image_msg(rgb, hdr, enc), detections_msg(hdr, boxes, ids, score=0.5 + 0.1 * k)


def arrays_of(client, cam):
    with client.lock:
        return [m for _, m in client.arrays[cam]]


def test_two_cameras_one_array_per_image_matching_the_pipeline(setup):
    node, client, params = setup
    frames = {}
    for k in range(4):
        msgs = {c: frame_msgs(c, k) for c in CAMS}
        first, second = (2, 3) if k % 2 == 0 else (3, 2)  # even: image first; odd: detections first
        for c in CAMS:
            (client.image_pubs if first == 2 else client.det_pubs)[c].publish(msgs[c][first])
        time.sleep(0.3)
        for c in CAMS:
            (client.image_pubs if second == 2 else client.det_pubs)[c].publish(msgs[c][second])
        client.wait_until(lambda: all(len(client.arrays[c]) == k + 1 for c in CAMS), 90, f"arrays of frame {k}")
        frames[k] = msgs

    # Outputs checked field by field, and against the same pipeline (same seed -> same weights) run here.
    from scrap_perception.ros.conversions import mask_from_msg
    from scrap_perception.ros.pipeline_factory import build_pipeline
    from scrap_perception.ros.params import validate

    pipe = build_pipeline(validate(params))
    for c in CAMS:
        arrays = arrays_of(client, c)
        assert len(arrays) == 4
        for k, arr in enumerate(arrays):
            hdr, rgb, _, det = frames[k][c]
            assert arr.header == hdr, "header (stamp and frame_id) must be unchanged"
            assert (arr.camera_name, arr.image_height, arr.image_width) == (c, H, W)
            assert arr.segmenter == "sam:vit_b" and arr.classifier == "cn_clip:small_clip"
            ids = [i.id for i in arr.instances]
            assert ids == [f"{c}-{k}-{i}" for i in range(len(BOXES))], "one instance per valid detection, in order"
            from scrap_perception.ros.conversions import detections_to_prompts
            expected = pipe.process_frames([(rgb, detections_to_prompts(det)[0])])[0]
            for inst, ref in zip(arr.instances, expected.instances):
                x, y, w, h = inst.roi.x_offset, inst.roi.y_offset, inst.roi.width, inst.roi.height
                assert w > 0 and h > 0 and x + w <= W and y + h <= H, "roi inside the image"
                assert (inst.mask.width, inst.mask.height, inst.mask.encoding) == (w, h, "mono8")
                crop = np.frombuffer(inst.mask.data, np.uint8).reshape(h, w)
                assert set(np.unique(crop)) <= {0, 255}
                assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any(), "tight roi"
                assert inst.area == np.count_nonzero(crop)
                full = mask_from_msg(inst, (H, W))
                ref_full = ref.mask.full((H, W))
                iou = (full & ref_full).sum() / max((full | ref_full).sum(), 1)
                assert iou > 0.99, f"{c} frame {k} {inst.id}: mask IoU {iou:.4f} with the in-process pipeline"
                assert inst.mask_score == pytest.approx(ref.mask.iou, abs=1e-3)
                assert inst.detection_score == pytest.approx(0.5 + 0.1 * k, abs=1e-6)
                assert len(inst.class_scores) == 7 and math.isclose(sum(inst.class_scores), 1, abs_tol=1e-4)
                np.testing.assert_allclose(inst.class_scores, ref.classification.probabilities, atol=2e-3)
                assert inst.class_id == int(np.argmax(inst.class_scores))
                emb = np.asarray(inst.embedding)
                assert emb.size > 0 and np.linalg.norm(emb) == pytest.approx(1, abs=1e-3)

    # Overlays only for the subscribed camera, with the source header.
    client.wait_until(lambda: len(client.overlays["cam_a"]) == 4, 10, "overlays of cam_a")
    assert [m.header for _, m in client.overlays["cam_a"]] == [frames[k]["cam_a"][0] for k in range(4)]
    assert "cam_b" not in client.overlays
    t = time.monotonic()
    client.wait_until(lambda: client.latest_diagnostics(after=t) is not None, 5, "diagnostics")
    diag = client.latest_diagnostics(after=t)
    a, b = diag["scrap_perception_node: camera cam_a"], diag["scrap_perception_node: camera cam_b"]
    assert (a["overlays"], b["overlays"]) == ("4", "0")
    for cam in (a, b):
        assert cam["processed"] == cam["published"] == cam["paired"] == "4"
        assert cam["rejected.box_outside_image"] == "4"
    node_status = diag["scrap_perception_node: pipeline"]
    assert node_status["segmenter"] == "sam:vit_b" and node_status["device"] == "cpu"
    # precision 'auto' (the default) is reported as what it resolved to on this machine
    import torch
    from scrap_perception.devices import resolve_precision_name
    assert node_status["segmenter.precision"] == node_status["classifier.precision"] == resolve_precision_name(
        params.get("segmenter.precision", "auto"), torch.device("cpu"))
    assert float(node_status["latency.encode.p50_ms"]) > 0 and int(node_status["latency.total.samples"]) == 8


def test_bad_input_is_counted_and_the_next_good_frame_processed(setup):
    node, client, _ = setup
    from sensor_msgs.msg import Image

    t0 = time.monotonic()
    client.wait_until(lambda: client.latest_diagnostics(after=t0) is not None, 5, "diagnostics")
    before = client.latest_diagnostics(after=t0)["scrap_perception_node: camera cam_a"]
    pub_img, pub_det = client.image_pubs["cam_a"], client.det_pubs["cam_a"]
    good = scene(H, W, BOXES).tobytes()
    bad_images = [
        Image(header=header(2001), height=H, width=W, encoding="rgb8", step=W * 3 - 1, data=good),  # wrong step
        Image(header=header(2002), height=H, width=W, encoding="yuv9000", step=W * 3, data=good),  # unknown enc.
        Image(header=header(2003), height=H, width=W, encoding="rgb8", step=W * 3, data=good[:-5]),  # short data
        Image(header=header(2004), height=0, width=W, encoding="rgb8", step=W * 3, data=b""),  # zero size
    ]
    for img in bad_images:  # (spaced a little: sensor-data QoS may drop what floods its queue)
        pub_img.publish(img)
        pub_det.publish(detections_msg(img.header, BOXES))
        time.sleep(0.05)
    pub_det.publish(detections_msg(header(2999), BOXES))  # detections for stamps never seen
    pub_det.publish(detections_msg(header(2998), BOXES))
    time.sleep(0.05)
    # A frame whose detections are all bad, then a good frame: both must come out.
    nan_det = detections_msg(header(3000), [BOXES[0], OUTSIDE, BOXES[1]], ["ok", "outside", "nan"])
    nan_det.detections[2].bbox.center.position.x = float("nan")
    pub_img.publish(image_msg(scene(H, W, BOXES), header(3000)))
    pub_det.publish(nan_det)
    time.sleep(0.05)
    hdr, _, img, det = frame_msgs("cam_a", 9)
    pub_img.publish(img)
    pub_det.publish(det)
    client.wait_until(lambda: any(m.header == hdr for m in arrays_of(client, "cam_a")), 60, "the good frame")
    arrays = {m.header.stamp.sec: m for m in arrays_of(client, "cam_a")}
    assert [i.id for i in arrays[3000].instances] == ["ok"]
    assert not any(s in arrays for s in (2001, 2002, 2003, 2004, 2998, 2999))
    assert node.alive()

    def change(key, diag):
        return int(diag.get(key, 0)) - int(before.get(key, 0))

    def settled():
        # max_age 1.5 s: the unpaired detections expire; poll the diagnostics until they have
        d = client.latest_diagnostics(after=time.monotonic() - 1.1)
        return d is not None and change("expired.detections_expired_without_image",
                                        d["scrap_perception_node: camera cam_a"]) >= 6

    client.wait_until(settled, 10, "the unpaired detections to expire")
    delta = functools.partial(change, diag=client.latest_diagnostics()["scrap_perception_node: camera cam_a"])
    assert delta("images_in") == 6 and delta("detections_in") == 8 and delta("published") == 2
    assert {k: delta(f"rejected.{k}") for k in ("wrong_step", "unknown_encoding", "short_data", "zero_size",
                                                "nan_box", "box_outside_image")} == {
        "wrong_step": 1, "unknown_encoding": 1, "short_data": 1, "zero_size": 1, "nan_box": 1, "box_outside_image": 2}
    # the 4 refused images' detections and the 2 never-seen stamps
    assert delta("expired.detections_expired_without_image") == 6
    log = node.output()
    assert "step 959 < width 320 x 3 bytes" in log and "encoding 'yuv9000'" in log  # log lines say why
    assert "Traceback" not in log


def test_ctrl_c_while_inferring_exits_within_2s_without_traceback(setup):
    node, client, _ = setup
    for k in (20, 21):
        _, _, img, det = frame_msgs("cam_b", k)
        client.image_pubs["cam_b"].publish(img)
        client.det_pubs["cam_b"].publish(det)
    time.sleep(0.2)  # the worker is busy with the frame now
    code, seconds = node.interrupt(timeout=10)
    assert code == 0, node.output()[-2000:]
    assert seconds < 2.0, f"shutdown took {seconds:.2f} s"
    assert "Traceback" not in node.stderr
