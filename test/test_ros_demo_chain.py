"""The multi-view chain of `python -m scrap_perception.ros.demo` as real processes over DDS: replay (images,
CameraInfo, ground-truth boxes) -> perception node (camera sets, GrabCut, no classifier) -> association node ->
recorder; the recorded ScrapObjects are checked against the generated ground truth."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict

import pytest

from scrap_perception.ros.processes import ROOT

pytestmark = [pytest.mark.ros, pytest.mark.slow]

pytest.importorskip("rclpy")

FRAMES = 2


def test_every_object_seen_twice_becomes_one_scrap_object_with_exactly_its_views(tmp_path):
    """Every replayed camera set yields one ScrapViewSet and one ScrapObjectArray, and every object that two or
    more cameras see yields exactly one ScrapObject whose members are exactly its (camera, instance id) views.

    This checks the wiring, not accuracy under hard conditions (``scrap-tools eval-assoc`` measures that), so the
    scene is made easy on purpose: a small pile (4-5 pieces) at 640x480, exact ground-truth boxes (no jitter),
    and a seed (2) whose pieces GrabCut separates. The generator's pieces always touch in some view (it packs
    them into a pile), so the ground truth is unambiguous by this choice of parameters, not by gaps."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out = tmp_path / "demo"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "scrap_perception.ros.demo", "--out", str(out), "--cameras", "3",
                        "--frames", str(FRAMES), "--image-size", "480", "640", "--objects", "4", "5", "--seed", "2",
                        "--jitter", "0", "--timeout", "300"],
                       capture_output=True, text=True, timeout=360, cwd=str(ROOT))
    print(f"demo took {time.monotonic() - t0:.0f} s")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "pairwise precision" in r.stdout and "Traceback" not in r.stderr
    assert (out / "association.jpg").is_file() and (out / "summary.png").is_file()

    # The ground truth of the generated rig: per frame, each object's views {(camera, annotation id)}.
    coco = json.loads((out / "data" / "annotations.json").read_text())
    images = {im["id"]: im for im in coco["images"]}
    views_of = defaultdict(lambda: defaultdict(set))
    frame_of = {}
    for a in coco["annotations"]:
        im = images[a["image_id"]]
        views_of[im["frame"]][a["object_id"]].add((im["camera"], str(a["id"])))
        frame_of[str(a["id"])] = im["frame"]
    cams = sorted({im["camera"] for im in images.values()})
    assert cams == ["cam0", "cam1", "cam2"]

    sets, objects, arrays = {}, {}, defaultdict(int)
    with open(out / "demo.mcap", "rb") as f:
        for _, channel, _, msg in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec) if hasattr(msg, "header") else None
            if channel.topic == "/scrap_views":
                assert stamp not in sets
                sets[stamp] = msg
            elif channel.topic == "/scrap_objects":
                assert stamp not in objects
                objects[stamp] = msg
            elif channel.topic.endswith("/scrap_instances"):
                arrays[channel.topic.split("/")[1]] += 1
    assert dict(arrays) == {c: FRAMES for c in cams}
    assert len(sets) == len(objects) == FRAMES and set(sets) == set(objects), "one set and one object array per frame"

    ids, matched = defaultdict(set), 0
    for stamp, vs in sets.items():
        assert not vs.partial and sorted(v.camera_name for v in vs.views) == cams
        frames = {frame_of[i.id] for v in vs.views for i in v.instances}
        assert len(frames) == 1, f"a set mixes frames {frames}"
        truth = views_of[frames.pop()]
        twice = {oid: v for oid, v in truth.items() if len({cam for cam, _ in v}) >= 2}
        assert twice, "the scene has objects seen by two cameras"
        members = [frozenset(zip(o.cameras, o.instance_ids)) for o in objects[stamp].objects]
        for o, m in zip(objects[stamp].objects, members):
            assert o.num_views == len(m) == len(o.cameras) >= 2
        every = [view for m in members for view in m]
        assert len(every) == len(set(every)), "a view belongs to one object at most"
        for oid, v in twice.items():
            matches = [k for k, m in enumerate(members) if m == v]
            assert len(matches) == 1, (f"object {oid} (views {sorted(v)}) is in ScrapObjects "
                                       f"{[sorted(m) for m in members if m & v]}")
            ids[oid].add(objects[stamp].objects[matches[0]].id)
            matched += 1
        assert len(members) == len(twice), "no ScrapObject beyond the true objects"
    assert all(len(v) == 1 for v in ids.values()), f"object ids change between sets: {dict(ids)}"

    summary = json.loads((out / "summary.json").read_text())["association"]
    assert summary["F1"] == 1.0 and summary["Recovered"] == 1.0
    assert summary["Exact views"] == summary["Objects (>=2 views)"] == matched
