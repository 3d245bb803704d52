"""Latency percentiles and counters (vs scipy), the /diagnostics message they become, and the overlay."""
import threading

import numpy as np
import pytest
from scipy import stats as sps

from scrap_perception.classification.base import Classification, unclassified
from scrap_perception.masks import from_full
from scrap_perception.pipeline import Instance
from scrap_perception.prompts import Prompt
from scrap_perception.ros.overlay import colour_of, render_overlay
from scrap_perception.ros.pairing import StampPairer
from scrap_perception.ros.stats import STAGES, LatencyWindow, NodeStats


def test_latency_window_percentiles_match_scipy_over_the_last_samples():
    w = LatencyWindow(size=100)
    samples = np.random.default_rng(0).exponential(0.2, 250)
    for s in samples:
        w.add(s)
    last = samples[-100:]
    p50, p95, top = w.percentiles()
    assert p50 == pytest.approx(sps.scoreatpercentile(last, 50))
    assert p95 == pytest.approx(sps.scoreatpercentile(last, 95))
    assert top == pytest.approx(last.max()) and w.count == 250
    assert all(np.isnan(v) for v in LatencyWindow().percentiles())


def test_node_stats_are_thread_safe_and_keyed():
    st = NodeStats(["a", "b"])

    def hammer():
        for _ in range(2000):
            st.count("a", "images_in")
            st.reject("b", "wrong_step")
            st.time("convert", 0.001)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert st.frames("a")["images_in"] == 8000 and st.frames("b")["images_in"] == 0
    assert st.rejected("b") == {"wrong_step": 8000} and st.rejected("a") == {}
    assert st.latency()["convert"][3] == 8000
    with pytest.raises(KeyError, match="unknown stage"):
        st.time("nonsense", 1.0)
    st.batch(4, 2.0)
    st.batch(2, 1.0)
    assert st.batch_sizes() == (3.0, 4)


@pytest.mark.ros
def test_diagnostics_message_carries_every_counter_and_stage():
    pytest.importorskip("diagnostic_msgs.msg")
    from scrap_perception.ros import diagnostics

    st = NodeStats(["cam0"])
    st.count("cam0", "images_in", 5)
    st.count("cam0", "dropped", 2)
    st.reject("cam0", "nan_box", 3)
    st.time("encode", 0.5)
    st.time("encode", 1.5)
    pairer = StampPairer(2, 10.0)
    for s in range(4):
        pairer.add_image((s, 0), s)
    msg = diagnostics.build("node", "/node", st, {"cam0": pairer}, {"segmenter": "grabcut", "device": "cpu"})
    d = diagnostics.parse(msg)
    node, cam = d["node: pipeline"], d["node: camera cam0"]
    assert node["segmenter"] == "grabcut" and node["device"] == "cpu"
    assert (node["latency.encode.p50_ms"], node["latency.encode.max_ms"]) == ("1000.0", "1500.0")
    assert node["latency.convert.p50_ms"] == "nan"
    assert {f"latency.{s}.p95_ms" for s in STAGES} <= set(node)
    assert (cam["images_in"], cam["dropped"], cam["rejected.nan_box"], cam["rejected.total"]) == ("5", "2", "3", "3")
    assert (cam["waiting.images"], cam["expired.image_buffer_full"], cam["expired.total"]) == ("2", "2", "2")
    assert msg.status[1].level == diagnostics.WARN


def test_overlay_blends_class_colour_inside_masks_only():
    rgb = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    full = np.zeros((120, 160), bool)
    full[40:100, 30:90] = True
    probs = np.full(7, 0.05, np.float32)
    probs[4] = 0.7
    inst = Instance("p", Prompt(box=(30, 40, 90, 100)), from_full(full, 0.9),
                    Classification(4, "Pipe", 0.7, probs, np.zeros(0, np.float32)))
    other = np.zeros_like(full)
    other[5:20, 120:150] = True
    unk = Instance("u", Prompt(box=(120, 5, 150, 20)), from_full(other, 0.5), unclassified())
    out = render_overlay(rgb, [inst, unk], alpha=0.4)
    assert out.shape == rgb.shape and out.dtype == np.uint8 and not np.shares_memory(out, rgb)
    # Well inside the mask (away from the outline and the label): exact alpha blend with the class colour.
    inner = (slice(50, 95), slice(40, 85))
    expected = np.round(rgb[inner].astype(np.float32) * 0.6 + np.array(colour_of(4), np.float32) * 0.4)
    np.testing.assert_array_equal(out[inner], expected.astype(np.uint8))
    # Far from both objects nothing changes.
    np.testing.assert_array_equal(out[105:, :20], rgb[105:, :20])
    # The unclassified instance is grey, and its outline is drawn.
    assert colour_of(255) == (160, 160, 160)
    assert (out[5:20, 120:150] != rgb[5:20, 120:150]).any()
