"""The managed node through the real ros2 command line, as a user types it: `ros2 launch` with
params_file, camera_names and namespace; `ros2 lifecycle get/set`; `ros2 param set` (dynamic values take
effect, invalid ones are refused by name, static ones wait for the unconfigured state); `ros2 topic echo
--once` of /diagnostics and the latched label_info; a wrong checkpoint fails configure in one line and
the node stays up until the right path is set."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from ros_helpers import Client, Ros2Launch, detections_msg, header, image_msg, ros2, ros2_executable, scene
from tiny_models import SMALL_SAM_ARCH

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NS, CAMS = "yard1", ("a", "b")
NODE = f"/{NS}/scrap_perception_node"
BOXES = [(10, 10, 60, 50), (70, 20, 120, 70)]
GRABCUT = """\
/**/scrap_perception_node:
  ros__parameters:
    segmenter.model_type: grabcut
    classifier.model: none
    camera_names: [x]
"""


@pytest.fixture
def ros2_cli() -> str:
    return ros2_executable()


def send_frame(client: Client, cam: str, sec: int) -> None:
    hdr = header(sec, frame_id=cam)
    client.image_pubs[cam].publish(image_msg(scene(90, 130, BOXES, seed=sec), hdr))
    client.det_pubs[cam].publish(detections_msg(hdr, BOXES))


def answered(client: Client, cam: str, sec: int, timeout: float = 30.0):
    """The ScrapInstanceArray of the frame stamped ``sec``."""
    def arrived():
        return any(m.header.stamp.sec == sec for _, m in client.arrays[cam])

    client.wait_until(arrived, timeout, f"{cam}'s array of stamp {sec}")
    with client.lock:
        return next(m for _, m in client.arrays[cam] if m.header.stamp.sec == sec)


def lifecycle_state() -> str:
    return ros2("lifecycle", "get", NODE).stdout.split()[0]


def test_launch_param_lifecycle_and_topics_through_the_cli(ros2_cli, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(GRABCUT, encoding="utf-8")
    launch = Ros2Launch(tmp_path, "scrap_perception.launch.py", params_file=params, camera_names="[a, b]",
                        namespace=NS)
    client = Client([f"{NS}/{c}" for c in CAMS])
    try:
        launch.wait_for(lambda out: "active: images from" in out, 120, "active node")
        client.wait_for_node(60)
        assert NODE in ros2("node", "list").stdout.split()
        assert lifecycle_state() == "active"
        for cam in CAMS:  # camera_names from the launch argument win over the params file's [x]
            send_frame(client, f"{NS}/{cam}", 1)
            msg = answered(client, f"{NS}/{cam}", 1)
            assert msg.camera_name == cam and len(msg.instances) == 2 and msg.segmenter == "grabcut"

        # a dynamic parameter takes effect; an invalid value is refused with its name; a static one waits
        assert "successful" in ros2("param", "set", NODE, "max_detections", "1").stdout
        send_frame(client, f"{NS}/a", 2)
        assert len(answered(client, f"{NS}/a", 2).instances) == 1
        bad = ros2("param", "set", NODE, "min_mask_score", "5.0", check=False)
        assert "min_mask_score" in bad.stdout + bad.stderr and "successful" not in bad.stdout
        static = ros2("param", "set", NODE, "segmenter.model_type", "vit_t", check=False)
        assert "unconfigured" in static.stdout + static.stderr
        assert ros2("param", "get", NODE, "segmenter.model_type").stdout.strip().endswith("grabcut")

        diag = ros2("topic", "echo", "--once", "/diagnostics", timeout=30).stdout
        assert "scrap_perception_node" in diag and "state" in diag
        labels = ros2("topic", "echo", "--once", "--qos-durability", "transient_local", "--qos-reliability",
                      "reliable", f"/{NS}/label_info", timeout=30).stdout
        assert all(name in labels for name in ("Angle", "Bar", "Billet", "H", "Pipe", "Plate", "U")), labels

        # deactivate: no more answers and nothing counted as dropped; activate: answers again
        assert "successful" in ros2("lifecycle", "set", NODE, "deactivate").stdout.lower()
        assert lifecycle_state() == "inactive"
        send_frame(client, f"{NS}/a", 3)
        time.sleep(2.0)
        assert not any(m.header.stamp.sec == 3 for _, m in client.arrays[f"{NS}/a"])
        assert "successful" in ros2("lifecycle", "set", NODE, "activate").stdout.lower()
        client.wait_for_node(60)
        send_frame(client, f"{NS}/a", 4)
        answered(client, f"{NS}/a", 4)
        t = time.monotonic()
        client.wait_until(lambda: client.latest_diagnostics(after=t) is not None, 10, "diagnostics")
        cam_a = client.latest_diagnostics(after=t)["scrap_perception_node: camera a"]
        assert cam_a["dropped"] == "0" and int(cam_a["published"]) == 3, cam_a

        # cleanup frees the models; a static parameter may change then; configure + activate again
        for step in ("deactivate", "cleanup"):
            assert "successful" in ros2("lifecycle", "set", NODE, step).stdout.lower()
        assert lifecycle_state() == "unconfigured"
        assert "successful" in ros2("param", "set", NODE, "segmenter.prompt_mode", "box").stdout
        for step in ("configure", "activate"):
            assert "successful" in ros2("lifecycle", "set", NODE, step).stdout.lower()
        client.wait_for_node(60)
        send_frame(client, f"{NS}/b", 5)
        assert len(answered(client, f"{NS}/b", 5).instances) == 1  # max_detections 1 kept over cleanup
    finally:
        client.close()
        seconds = launch.ctrl_c()
        out = launch.output()
        launch.close()
    assert "process has finished cleanly" in out and "Traceback" not in out, out[-3000:]
    assert seconds < 2.0, seconds


def test_a_wrong_checkpoint_fails_configure_in_one_line_and_the_node_waits_for_the_right_one(ros2_cli, tmp_path):
    missing = tmp_path / "sam_vit_b.pth"
    params = tmp_path / "params.yaml"
    params.write_text(f"""\
/**/scrap_perception_node:
  ros__parameters:
    camera_names: [a]
    segmenter.model_type: vit_b
    segmenter.arch: '{__import__("json").dumps(SMALL_SAM_ARCH)}'
    segmenter.device: cpu
    segmenter.checkpoint: {missing}
    classifier.model: none
    min_mask_score: -1.0
""", encoding="utf-8")
    launch = Ros2Launch(tmp_path, "scrap_perception.launch.py", params_file=params, namespace=NS)
    client = Client([f"{NS}/a"])
    try:
        launch.wait_for(lambda out: "configure failed" in out, 120, "the configure failure")
        time.sleep(1.0)
        out = launch.output()
        line, = [ln for ln in out.splitlines() if "configure failed" in ln]
        assert "segmenter.checkpoint" in line and str(missing) in line, line
        assert "Traceback" not in out and "process has died" not in out
        assert lifecycle_state() == "unconfigured"

        from scrap_perception.segmentation import build_sam_model

        torch.save(build_sam_model("vit_b", arch=SMALL_SAM_ARCH).state_dict(), missing)
        assert "successful" in ros2("param", "set", NODE, "segmenter.checkpoint", str(missing)).stdout
        for step in ("configure", "activate"):
            assert "successful" in ros2("lifecycle", "set", NODE, step, timeout=120).stdout.lower()
        client.wait_for_node(60)
        send_frame(client, f"{NS}/a", 1)
        msg = answered(client, f"{NS}/a", 1)
        assert msg.segmenter == "sam:vit_b" and len(msg.instances) == 2
        assert np.all([m.area > 0 for m in msg.instances])
    finally:
        client.close()
        launch.ctrl_c()
        out = launch.output()
        launch.close()
    assert "process has finished cleanly" in out and "Traceback" not in out, out[-3000:]


def test_compressed_camera_images_are_decoded_and_bad_ones_counted(tmp_path):
    """image_transport compressed: jpeg and png CompressedImages on <cam>/image_raw/compressed through
    DDS are answered like raw ones; data that does not decode is counted, the next frame answered."""
    from sensor_msgs.msg import CompressedImage

    from ros_helpers import start_node
    from scrap_perception.ros.conversions import rgb_to_compressed
    from scrap_perception.ros.qos import output_qos

    node = start_node(tmp_path, "compressed", **{"segmenter.model_type": "grabcut", "classifier.model": "none",
                                                 "camera_names": ["zc"], "image_transport": ["compressed"],
                                                 "log_throttle": 0.0})
    client = Client(["zc"])
    pub = client.node.create_publisher(CompressedImage, "/zc/image_raw/compressed", output_qos(10))
    try:
        deadline = time.monotonic() + 120
        while (pub.get_subscription_count() == 0 or client.det_pubs["zc"].get_subscription_count() == 0):
            assert node.alive() and time.monotonic() < deadline, node.output()[-3000:]
            time.sleep(0.1)
        time.sleep(1.0)
        rgb = scene(90, 130, BOXES, seed=1)
        for sec, data in ((1, "jpeg"), (2, "png"), (3, "garbage"), (4, "png")):
            hdr = header(sec, frame_id="zc")
            msg = rgb_to_compressed(rgb, hdr, "png" if data == "garbage" else data)
            if data == "garbage":
                msg.data = b"\x89PNG\r\n\x1a\n" + bytes(100)
            pub.publish(msg)
            client.det_pubs["zc"].publish(detections_msg(hdr, BOXES))
            if data != "garbage":  # one frame at a time: a newer frame would replace a waiting one
                assert len(answered(client, "zc", sec).instances) == 2
        assert not any(m.header.stamp.sec == 3 for _, m in client.arrays["zc"])
        t = time.monotonic()
        client.wait_until(lambda: client.latest_diagnostics(after=t) is not None, 10, "diagnostics")
        cam = client.latest_diagnostics(after=t)["scrap_perception_node: camera zc"]
        assert cam["rejected.undecodable_image"] == "1" and cam["published"] == "3", cam
    finally:
        client.close()
        code, _ = node.interrupt(10)
        node.close()
    assert code == 0
