"""Camera sets through real processes and DDS: a node in ``sync.policy: sets`` processes only complete
sets (or partial ones when asked), publishes one ScrapViewSet per processed set holding exactly that
set's frames and their CameraInfos, and accounts for every paired frame per camera."""
from __future__ import annotations

import random
import time

import pytest

from ros_helpers import Client, detections_msg, header, image_msg, scene, start_node

pytestmark = [pytest.mark.ros, pytest.mark.slow]

rclpy = pytest.importorskip("rclpy")

CAMS = ("set_a", "set_b", "set_c")
BOXES = [(20, 20, 120, 90), (150, 60, 260, 170)]
H, W = 240, 320
RATE = 30.0


def camera_info(cam: str, hdr):
    from sensor_msgs.msg import CameraInfo

    k = 500.0 + CAMS.index(cam)
    return CameraInfo(header=hdr, height=H, width=W, distortion_model="plumb_bob", d=[0.01 * CAMS.index(cam)] * 5,
                      k=[k, 0.0, W / 2, 0.0, k, H / 2, 0.0, 0.0, 1.0],
                      p=[k, 0.0, W / 2, 0.1 * CAMS.index(cam), 0.0, k, H / 2, 0.0, 0.0, 0.0, 1.0, 0.0])


def node_params(**extra):
    return {"segmenter.model_type": "grabcut", "classifier.model": "none", "camera_names": list(CAMS),
            "sync.policy": "sets", **extra}


def stamp_ns(hdr) -> int:
    return hdr.stamp.sec * 1_000_000_000 + hdr.stamp.nanosec


def run_cameras(client: Client, moments: int, jitter_ms: int, drop, silent=(), seed: int = 0) -> dict:
    """Publishes ``moments`` frames per camera at RATE (a camera's image, its CameraInfo with the same
    stamp, its detections); frame_id = '<cam>:<moment>'. Returns {(cam, moment): header} of what was sent."""
    rng = random.Random(seed)
    sent = {}
    t0 = time.monotonic()
    base = 1_000_000
    for k in range(moments):
        for cam in CAMS:
            if cam in silent or drop(cam, k):
                continue
            ns = int(k / RATE * 1e9) + rng.randint(-jitter_ms, jitter_ms) * 1_000_000
            hdr = header(base + ns // 1_000_000_000, ns % 1_000_000_000, frame_id=f"{cam}:{k}")
            client.info_pubs[cam].publish(camera_info(cam, hdr))
            client.image_pubs[cam].publish(image_msg(scene(H, W, BOXES, seed=k), hdr))
            client.det_pubs[cam].publish(detections_msg(hdr, BOXES))
            sent[(cam, k)] = hdr
        time.sleep(max(0.0, t0 + (k + 1) / RATE - time.monotonic()))
    return sent


def moment_of(array) -> tuple[str, int]:
    cam, k = array.header.frame_id.split(":")
    return cam, int(k)


def check_accounting(client: Client, after: float) -> dict:
    """paired = processed + dropped + set.expired + failed + set.waiting per camera, from /diagnostics."""
    client.wait_until(lambda: client.latest_diagnostics(after=after) is not None, 10, "diagnostics")
    diag = client.latest_diagnostics(after=after)
    for cam in CAMS:
        d = diag[f"scrap_perception_node: camera {cam}"]
        n = {k: int(d[k]) for k in ("paired", "processed", "dropped", "failed", "set.expired", "set.waiting")}
        assert n["paired"] == n["processed"] + n["dropped"] + n["set.expired"] + n["failed"] + n["set.waiting"], d
        assert n["failed"] == 0 and int(d["published"]) == n["processed"], d
    return diag


def test_jittered_cameras_with_drops_into_a_slow_node_give_only_complete_sets(tmp_path):
    """3 cameras, stamps jittered +-5 ms under sync.slop 10 ms, camera c drops every third frame, 30 Hz
    into a node that needs longer than a frame period for a set of three."""
    proc = start_node(tmp_path, "sets", **node_params(**{"sync.slop": 0.010, "sync.max_age": 0.3}))
    client = Client(CAMS, views_topic="/scrap_views")
    try:
        client.wait_for_node(120, proc)
        sent = run_cameras(client, 90, 5, drop=lambda cam, k: cam == "set_c" and k % 3 == 2)
        time.sleep(3.0)  # the last set finishes; incomplete ones pass max_age
        settled = time.monotonic()
        with client.lock:
            views = [m for _, m in client.views]
            arrays = {c: [m for _, m in client.arrays[c]] for c in CAMS}
        assert 5 <= len(views) < 60, len(views)  # the node is slower than the cameras: sets were dropped
        for vs in views:
            assert not vs.partial and not vs.missing_cameras and len(vs.views) == 3
            moments = [moment_of(a) for a in vs.views]
            assert [c for c, _ in moments] == list(CAMS)
            k = moments[0][1]
            assert all(m == k for _, m in moments) and k % 3 != 2, moments  # one moment, never camera c's gap
            assert stamp_ns(vs.header) == min(stamp_ns(sent[(c, k)]) for c in CAMS)
            assert vs.header.frame_id == "rig"
            for a, info in zip(vs.views, vs.camera_infos):
                cam = a.camera_name
                assert a.header == sent[(cam, k)] and len(a.instances) == 2
                assert info == camera_info(cam, sent[(cam, k)])  # CameraInfo arrives unchanged
        # every processed frame's array is published per camera too: exactly the sets' frames
        for i, cam in enumerate(CAMS):
            assert sorted(moment_of(a)[1] for a in arrays[cam]) == sorted(moment_of(vs.views[i])[1] for vs in views)
        diag = check_accounting(client, settled)
        node = diag["scrap_perception_node: pipeline"]
        assert int(node["sets.published"]) == len(views) and int(node["sets.waiting"]) == 0
        assert int(diag["scrap_perception_node: camera set_a"]["set.missing"]) == 0
        assert int(diag["scrap_perception_node: camera set_c"]["set.missing"]) >= 25  # its 30 gaps, minus
    finally:
        client.close()
        code, _ = proc.interrupt(10)
        proc.close()
    assert code == 0


def test_exact_stamps_and_the_partial_fallback_with_a_silent_camera(tmp_path):
    exact = start_node(tmp_path, "exact", **node_params(**{"sync.partial": True, "sync.max_age": 0.2}))
    client = Client(CAMS, views_topic="/scrap_views")
    try:
        client.wait_for_node(120, exact)
        sent = run_cameras(client, 6, 0, drop=lambda cam, k: False)  # identical stamps, no drop
        client.wait_until(lambda: len(client.views) >= 1, 20, "a complete set")
        time.sleep(2.0)
        with client.lock:
            complete = [m for _, m in client.views]
        for vs in complete:
            k = moment_of(vs.views[0])[1]
            assert not vs.partial and [a.header for a in vs.views] == [sent[(c, k)] for c in CAMS]
        # camera c goes silent: sets go on partial after max_age, the camera is reported silent
        n = len(complete)
        run_cameras(client, 20, 0, drop=lambda cam, k: False, silent=("set_c",))
        time.sleep(3.0)
        with client.lock:
            partial = [m for _, m in client.views][n:]
        assert partial and all(vs.partial and list(vs.missing_cameras) == ["set_c"] for vs in partial)
        assert all([a.camera_name for a in vs.views] == ["set_a", "set_b"] for vs in partial)
        diag = check_accounting(client, time.monotonic())
        cam_c = diag["scrap_perception_node: camera set_c"]
        assert float(cam_c["silent_s"]) >= 2.0 and int(cam_c["set.missing"]) >= len(partial)
    finally:
        client.close()
        code, _ = exact.interrupt(10)
        exact.close()
    assert code == 0


def test_replay_of_a_multiview_set_feeds_camera_sets_with_the_rigs_camera_info(tmp_path):
    """replay (synth --cameras 3, frames as sets, stamp jitter, CameraInfo from the rig) -> perception in
    sets mode: one ScrapViewSet per replayed frame, each camera's CameraInfo the rig's."""
    from ros_helpers import NodeProcess, ros_args
    from scrap_perception.multiview.rig import load_rig
    from scrap_perception.tools.synth_cmd import generate_multiview

    data = tmp_path / "mv"
    generate_multiview(data, cameras=3, frames=4, seed=2, image_size=(120, 160), objects=(3, 4), progress=False)
    rig = load_rig(data / "rig.yaml")
    node = start_node(tmp_path, "sets", **node_params(**{"camera_names": rig.names, "sync.slop": 0.010}))
    client = Client([], views_topic="/scrap_views")
    replay = NodeProcess("scrap_perception.ros.replay_node", ros_args(
        None, source=str(data / "annotations.json"), camera_names=rig.names, rig_file=str(data / "rig.yaml"),
        stamp_jitter=0.004, rate=2.0, lockstep=True, wait_for_subscribers=120.0, linger=1.0), tmp_path, "replay")
    try:
        assert replay.wait(180) == 0, replay.output()[-3000:]
        time.sleep(1.0)
        with client.lock:
            views = [m for _, m in client.views]
        assert len(views) == 4, len(views)
        for vs in views:
            assert [a.camera_name for a in vs.views] == rig.names and not vs.partial
            stamps = [stamp_ns(a.header) for a in vs.views]
            assert max(stamps) - min(stamps) <= 8_000_000 and stamp_ns(vs.header) == min(stamps)
            for a, info in zip(vs.views, vs.camera_infos):
                want = rig[a.camera_name].camera_info()
                assert info.header == a.header and list(info.k) == want["k"] and info.width == want["width"]
    finally:
        replay.close()
        client.close()
        code, _ = node.interrupt(10)
        node.close()
    assert code == 0
