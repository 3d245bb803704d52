"""Burst: 4 cameras at 30 Hz into a node that needs about a second per frame (a narrow SAM ViT-B with
windowed attention at SAM's full 1024 input, plus a small CN-CLIP; random weights). The node must keep
only the newest frame per camera, batch the cameras, keep memory bounded and latency under about two
batch times, and account for every frame in /diagnostics."""
import json
import threading
import time

import numpy as np
import pytest

from ros_helpers import Client, detections_msg, header, image_msg, rss_mb, scene, small_models, start_node
from tiny_models import SLOW_SAM_ARCH

pytestmark = [pytest.mark.ros, pytest.mark.slow]

rclpy = pytest.importorskip("rclpy")

CAMS = ("cam0", "cam1", "cam2", "cam3")
RATE = 30.0
SECONDS = 20.0
BOXES = [(10, 10, 60, 50), (80, 30, 150, 110)]
H, W = 240, 320  # 230 KB per image: 4 x 30 Hz of them is 28 MB/s that must not pile up


def test_burst_of_four_cameras_is_bounded_and_accounted(tmp_path):
    # SLOW_SAM_ARCH needs about a second per frame at fp32 (bf16, where 'auto' picks it, is ~3x faster).
    params = dict(small_models(tmp_path), camera_names=list(CAMS), min_mask_score=-1.0,
                  **{"segmenter.arch": json.dumps(SLOW_SAM_ARCH), "segmenter.precision": "fp32"})
    node = start_node(tmp_path, "burst_node", **params)
    client = Client(CAMS)
    try:
        client.wait_for_node(180, node)
        images = {c: image_msg(scene(H, W, BOXES, seed=i), header(0)) for i, c in enumerate(CAMS)}
        sent: dict[tuple[int, int], float] = {}
        rss: list[float] = []
        stop = threading.Event()

        def sample_memory():
            while not stop.is_set():
                rss.append((time.monotonic(), rss_mb(node.proc.pid)))
                time.sleep(0.25)

        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        k = 0
        while time.monotonic() - t0 < SECONDS:
            stamp = (100 + k // 30, (k % 30) * 33_000_000)
            for c in CAMS:
                hdr = header(*stamp, frame_id=c)
                images[c].header = hdr
                client.image_pubs[c].publish(images[c])
                client.det_pubs[c].publish(detections_msg(hdr, BOXES))
            sent[stamp] = time.monotonic()
            k += 1
            time.sleep(max(0.0, t0 + k / RATE - time.monotonic()))
        burst_end = time.monotonic()
        # Drain: the worker finishes what it holds (at most one frame per camera), then idles.
        client.wait_until(lambda: (d := client.latest_diagnostics(after=time.monotonic() - 0.9)) is not None
                          and d["scrap_perception_node: pipeline"]["queue.pending"] == "0"
                          and d["scrap_perception_node: pipeline"]["worker.busy"] == "False", 60, "the node to idle")
        time.sleep(1.2)
        stop.set()
        sampler.join(2)
        diag = client.latest_diagnostics(after=time.monotonic() - 1.0)
        pipe = diag["scrap_perception_node: pipeline"]
        with client.lock:
            arrays = {c: list(v) for c, v in client.arrays.items()}

        sent_per_cam = len(sent)
        batch_max = float(pipe["latency.batch.max_ms"]) / 1000
        frame_s = float(pipe["latency.encode.p50_ms"]) / 1000
        latencies = []
        for c in CAMS:
            d = diag[f"scrap_perception_node: camera {c}"]
            n = {key: int(d[key]) for key in ("images_in", "detections_in", "paired", "dropped", "processed",
                                              "published", "failed")}
            received = arrays.get(c, [])
            stamps = [(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in received]
            print(c, n, f"received {len(received)}, expired {d['expired.total']}")
            # Every paired frame is either dropped (a newer one replaced it) or processed, and each
            # processed frame is published once and reached us.
            assert n["paired"] == n["dropped"] + n["processed"] + n["failed"]
            assert n["failed"] == 0
            assert n["processed"] == n["published"] == len(received)
            assert len(set(stamps)) == len(stamps) and set(stamps) <= set(sent)
            assert stamps == sorted(stamps), "newest-frame policy keeps the order"
            # Every image and detection array that arrived is paired, expired or still waiting (sensor-data
            # QoS may lose some in transport under this load: those never arrive and are not the node's).
            assert n["images_in"] == n["paired"] + int(d["expired.image_expired_without_detections"]) + int(
                d["expired.image_buffer_full"]) + int(d["expired.duplicate_image_stamp"]) + int(d["waiting.images"])
            assert n["detections_in"] == n["paired"] + int(d["expired.detections_expired_without_image"]) + int(
                d["expired.detections_buffer_full"]) + int(d["expired.duplicate_detections_stamp"]) + int(
                d["waiting.detections"])
            assert sent_per_cam >= n["images_in"] > 0.3 * sent_per_cam
            assert n["dropped"] > 10 * n["processed"], "the node cannot keep up with 30 Hz: most frames are dropped"
            latencies += [t - sent[s] for (t, _), s in zip(received, stamps)]
        lat = np.asarray(latencies)
        print(f"sent {sent_per_cam}/camera in {burst_end - t0:.1f} s; encode p50 {frame_s:.2f} s/frame; "
              f"batch max {batch_max:.2f} s, mean size {pipe['batch.size_mean']}; latency p50 "
              f"{np.median(lat):.2f} s max {lat.max():.2f} s")
        assert 0.3 < frame_s < 5, "the model is meant to need about a second per frame"
        assert float(pipe["batch.size_mean"]) > 2.5, "frames of the cameras waiting together are encoded together"
        # A frame waits at most for the batch in progress, then rides in the next one.
        assert lat.max() < 2 * batch_max + 0.5, f"latency {lat.max():.2f} s vs batch {batch_max:.2f} s"
        # Memory once the first results are out (models warm): RSS swings with each batch's activations,
        # but its level must not climb. Keeping the arriving images (up to 28 MB/s) would lift the mean of
        # the last third of the run above the first third's by hundreds of MB.
        first_out = min(t for c in CAMS for t, _ in arrays.get(c, [])[:1])
        warm = [v for t, v in rss if t >= first_out]
        print("RSS MiB every 0.25 s after the first results:", " ".join(f"{v:.0f}" for v in warm))
        third = len(warm) // 3
        early, late = np.mean(warm[:third]), np.mean(warm[-third:])
        assert late < early + 60, f"mean RSS rose from {early:.0f} to {late:.0f} MiB"
        assert node.alive()
    finally:
        client.close()
        code, seconds = node.interrupt(10)
        out = node.output()
        node.close()
    assert code == 0 and seconds < 2.0 and "Traceback" not in out, out[-2000:]
