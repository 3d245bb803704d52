"""The benchmark's measurements rest on equal outputs: the naive baseline computes what the pipeline
computes, the floor runs the decoder the pipeline runs, the model timers see every model call (which
also proves text caching and cross-camera encoder batching). Plus smoke runs of the CLI (no timing
assertions anywhere)."""
import argparse
import json
import warnings

import numpy as np
import pytest
import torch

from scrap_perception.classification import build_classifier, small_clip_config
from scrap_perception.pipeline import Pipeline
from scrap_perception.prompts import box_point_prompt
from scrap_perception.segmentation import build_segmenter
from scrap_perception.tools.bench import cli as bench
from scrap_perception.tools.bench import modes as bench_modes
from scrap_perception.tools.bench.floor import Floor, best_chunk, chunk_candidates
from scrap_perception.tools.bench.flops import count_flops, frame_flops, peak_flops, peak_fractions, unit_flops
from scrap_perception.tools.bench import gpu as bench_gpu
from scrap_perception.tools.bench.frames import load_frames, make_frames, save_frames
from scrap_perception.tools.bench.naive import NaivePipeline
from scrap_perception.tools.bench.precision import compare_precisions
from scrap_perception.tools.bench.precision import markdown as precision_markdown
from scrap_perception.tools.bench.timing import Clock, measure, measure_interleaved
from tiny_models import SMALL_SAM_ARCH

HW = (240, 320)


def small_models(tmp_path, model_type="vit_b", background="gray", seed=0, raise_iou=True):
    torch.manual_seed(seed)
    path = tmp_path / "clip.json"
    path.write_text(json.dumps(small_clip_config()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # fp32: the equality tests compare against float32 references ('auto' would pick bf16 on some CPUs)
        seg = build_segmenter(model_type, device="cpu", arch=SMALL_SAM_ARCH if model_type == "vit_b" else None,
                              precision="fp32")
        cls = build_classifier(str(path), device="cpu", background=background, precision="fp32")
    if raise_iou:  # as the benchmark does: no mask falls under min_mask_score
        with torch.no_grad():
            seg.model.mask_decoder.iou_prediction_head.layers[-1].bias += 1.0
    return seg, cls


def mask_iou(a, b):
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def assert_naive_equals_core(seg, cls, frame, n):
    """Same instances (same boxes kept), same masks, scores, classes and embeddings. Returns the count."""
    pipeline = Pipeline(seg, cls)
    result = pipeline.process_frames([(frame.rgb, frame.prompts(n))])[0]
    naive = NaivePipeline(seg.model, seg.spec.package, cls.model, cls.labels, cls.crop_margin, cls.background,
                          min_mask_score=pipeline.min_mask_score, min_area=pipeline.min_area)
    ref = {inst.index: inst for inst in naive.process(frame.rgb, frame.boxes[:n])}
    assert {int(inst.id[1:]) for inst in result.instances} == set(ref)
    assert len(result.instances) + len(result.rejected) == n
    for inst in result.instances:
        r = ref[int(inst.id[1:])]
        assert mask_iou(inst.mask.full(frame.rgb.shape[:2]), r.mask) >= 0.999
        assert abs(inst.mask.iou - r.iou) < 1e-4
        c = inst.classification
        assert c.class_id == r.class_id
        np.testing.assert_allclose(c.probabilities, r.probabilities, atol=1e-4)
        assert float(np.dot(c.embedding, r.embedding)) > 0.9999
    return len(ref)


@pytest.mark.parametrize("background", ["gray", "keep", "blur"])
def test_naive_baseline_equals_pipeline(tmp_path, background):
    seg, cls = small_models(tmp_path, background=background)
    frame = make_frames(1, 6, HW, seed=1)[0]
    assert assert_naive_equals_core(seg, cls, frame, 6) == 6


def test_naive_baseline_rejects_what_the_pipeline_rejects(tmp_path):
    """Stock random weights predict IoUs around 0: the masks under min_mask_score are the same."""
    seg, cls = small_models(tmp_path, raise_iou=False)
    frame = make_frames(1, 8, HW, seed=1)[0]
    assert 0 < assert_naive_equals_core(seg, cls, frame, 8) < 8


@pytest.mark.slow
def test_naive_baseline_equals_pipeline_with_mobile_sam(tmp_path):
    """The benchmark's own segmenter (MobileSAM vit_t, TinyViT encoder, mobile_sam's SamPredictor)."""
    seg, cls = small_models(tmp_path, model_type="vit_t")
    frame = make_frames(1, 4, (360, 640), seed=2)[0]
    assert assert_naive_equals_core(seg, cls, frame, 4) == 4


def test_floor_decoder_is_the_pipelines_decoder(tmp_path):
    """The floor decodes what the segmenter decodes, whatever the chunk size, from the same prompts."""
    seg, cls = small_models(tmp_path)
    frame = make_frames(1, 5, HW, seed=3)[0]
    floor = Floor(seg.model, cls.model, seg.device, seg.dtype, cls.dtype, cls.batch_size, Clock(seg.device))
    enc = seg.encode([frame.rgb])[0]
    coords, labels, boxes = seg.prompt_tensors([box_point_prompt(b) for b in frame.boxes[:5]], enc)
    own = floor.prompt_tensors(frame.boxes[:5], HW)
    torch.testing.assert_close(own[0], coords, atol=0.5, rtol=0)  # the same points up to resize rounding
    torch.testing.assert_close(own[2], boxes, atol=0.5, rtol=0)
    reference, _ = seg.predict_logits(enc, coords, labels, boxes, mode="single")
    for chunk in chunk_candidates(5):
        out = floor.decoder((coords, labels, boxes), chunk, embedding=enc.features)()
        assert [len(m) for m, _ in out] == [min(chunk, 5 - s) for s in range(0, 5, chunk)]
        torch.testing.assert_close(torch.cat([m[:, :1] for m, _ in out]), reference, atol=1e-4, rtol=1e-4)
    assert chunk_candidates(5) == [1, 2, 4, 5] and chunk_candidates(1) == [1]


def test_floor_chunk_comes_from_the_segmenters_tuner_which_keeps_its_chunk_size(tmp_path):
    """best_chunk times every candidate through SamSegmenter.tune_chunk_size; the core's size stays."""
    seg, cls = small_models(tmp_path)
    floor = Floor(seg.model, cls.model, seg.device, seg.dtype, cls.dtype, cls.batch_size, Clock(seg.device))
    seg.chunk_size = 3
    best, timings = best_chunk(seg, floor.embedding, HW, 5)
    assert sorted(timings) == chunk_candidates(5) and timings[best] == min(timings.values())
    assert seg.chunk_size == 3


def test_flops_of_known_modules_equal_the_analytic_count():
    """A multiply-add is 2 FLOPs: a Linear 2*in*out*batch, attention 2 matmuls of 2*b*h*s*s*d (the CPU's
    fused kernel, which torch's registry lacks, included)."""
    lin, x = torch.nn.Linear(8, 4), torch.randn(3, 8)
    assert count_flops(lambda: lin(x)) == 2 * 8 * 4 * 3
    q = torch.randn(2, 3, 5, 4)
    assert count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)) == 2 * 2 * (2 * 3 * 5 * 5 * 4)
    mha, seq = torch.nn.MultiheadAttention(8, 2).eval(), torch.randn(5, 3, 8)  # CN-CLIP's attention path
    projections = 2 * 3 * 5 * 8 * 8 * 4  # q, k, v and out
    assert count_flops(lambda: mha(seq, seq, seq, need_weights=False)) == projections + 2 * 2 * (3 * 2 * 5 * 5 * 4)


def test_floor_flops_scale_with_prompts_and_crops_and_fractions_are_shares(tmp_path):
    """The per-unit counts times the batch are the counts of the batched calls the floor makes, the same
    at either precision; the fraction of peak is FLOPs / seconds / peak."""
    seg, cls = small_models(tmp_path)
    clock = Clock(seg.device)
    floor = Floor(seg.model, cls.model, seg.device, torch.float32, torch.float32, 8, clock)
    frame = make_frames(1, 5, HW, seed=3)[0]
    unit = unit_flops(floor, HW)
    assert min(unit.values()) > 0
    assert count_flops(floor.decoder(floor.prompt_tensors(frame.boxes[:5], HW), 5)) == 5 * unit["decoder"]
    assert count_flops(floor.crops(lambda: 4, 4)) == 4 * unit["clip_image"]
    assert count_flops(floor.encoder(2)) == 2 * unit["encoder"]
    bf16 = Floor(seg.model, cls.model, seg.device, torch.bfloat16, torch.bfloat16, 8, clock)
    assert unit_flops(bf16, HW) == unit
    flops = frame_flops(unit, 2, 10, 7)
    assert flops == {"encoder": 2 * unit["encoder"], "decoder": 10 * unit["decoder"],
                     "clip_image": 7 * unit["clip_image"]}
    for dtype in (torch.float32, torch.bfloat16):
        peak = peak_flops(seg.device, dtype, clock, size=256, repeats=3)
        assert peak["flop_per_s"] > 0 and peak["dtype"] == str(dtype).replace("torch.", "")
    frac = peak_fractions({"encoder": 4e9, "decoder": 1e9}, {"encoder": 2.0, "decoder": 1.0}, 4e9)
    assert frac == {"encoder": 0.5, "decoder": 0.25, "total": pytest.approx(5 / 12)}


@pytest.mark.parametrize("encoder_batch", [1, 2])
def test_model_timers_see_every_model_call(tmp_path, encoder_batch):
    """Two cameras: encoder_batch images per encoder call, no text-encoder call once the text features
    are cached, one decoder call per prompt at chunk size 1, both frames' crops in one CN-CLIP batch,
    and the wrappers come off."""
    seg, cls = small_models(tmp_path)
    pipeline = Pipeline(seg, cls)
    frames = make_frames(2, 3, HW, seed=4)
    items = [(f.rgb, f.prompts(3)) for f in frames]
    seg.chunk_size, seg.encoder_batch = 1, encoder_batch
    with bench_modes.model_time(seg, cls, Clock(seg.device)) as mt:
        pipeline.process_frames(items)
        first = dict(mt.calls)
        mt.reset()
        results = pipeline.process_frames(items)
        second = dict(mt.calls)
    assert first["clip_text"] == 1 and "clip_text" not in second
    assert second["sam_image_encoder"] == 2 // encoder_batch
    assert second["sam_mask_decoder"] == second["sam_prompt_encoder"] == 6
    assert second["clip_image"] == 1 and [len(r.instances) for r in results] == [3, 3]
    # The same instances as each frame processed alone.
    for (rgb, prompts), res in zip(items, results):
        alone = pipeline.process(rgb, prompts)
        assert [i.mask.roi for i in alone] == [i.mask.roi for i in res.instances]
        for a, b in zip(alone, res.instances):
            assert np.array_equal(a.mask.mask, b.mask.mask) and a.classification.class_id == b.classification.class_id
            np.testing.assert_allclose(a.classification.embedding, b.classification.embedding, atol=1e-5)
    assert all(v > 0 for v in mt.seconds.values())
    for module in (seg.model.image_encoder, seg.model.mask_decoder, cls.model.visual, cls.model.bert):
        assert "forward" not in vars(module) and "predict_masks" not in vars(module)


class StepClock(Clock):
    """Each reading advances 0.5 s: measure()'s repeat logic without real time."""

    def __init__(self):
        super().__init__(torch.device("cpu"))
        self.t = 0.0

    def now(self):
        self.t += 0.5
        return self.t


def test_measure_repeat_bounds_and_budget():
    calls = []
    clock = StepClock()
    s = measure(lambda: calls.append(1) or len(calls), clock, repeats=5, warmup=2)
    assert len(calls) == 7 and s.seconds == [0.5] * 5 and s.extras == [3, 4, 5, 6, 7] and s.median == 0.5
    s = measure(lambda: None, clock, repeats=5, min_repeats=2, budget_s=1.2)
    assert len(s.seconds) == 2  # a third 0.5 s call would pass 1.2 s; the minimum still holds
    s = measure(lambda: None, clock, repeats=5, min_repeats=1, budget_s=1.6)
    assert len(s.seconds) == 3
    s = measure(lambda: None, clock, repeats=5, min_repeats=3, budget_s=0.4)
    assert len(s.seconds) == 1  # one call alone is over the budget


def test_interleaved_rounds_alternate_order_and_share_the_budget():
    calls = []
    fns = {name: (lambda name=name: calls.append(name) or len(calls)) for name in ("a", "b", "c")}
    out = measure_interleaved(fns, StepClock(), repeats=3, warmup=1)
    assert calls == list("abc") + list("abc") + list("cba") + list("abc")
    assert {k: len(v.seconds) for k, v in out.items()} == {"a": 3, "b": 3, "c": 3}
    assert out["a"].extras == [4, 9, 10] and out["c"].extras == [6, 7, 12]
    calls.clear()
    out = measure_interleaved(fns, StepClock(), repeats=5, min_repeats=1, budget_s=1.2)  # 1.5 s a round
    assert len(out["b"].seconds) == 2  # the budget is per callable: 3 x 1.2 s holds two rounds


def test_frames_are_deterministic_and_hold_enough_boxes(tmp_path):
    a, b = make_frames(2, 40, HW, seed=5), make_frames(2, 40, HW, seed=5)
    for fa, fb in zip(a, b):
        assert np.array_equal(fa.rgb, fb.rgb) and np.array_equal(fa.boxes, fb.boxes)
        assert len(fa.boxes) >= 40 and fa.rgb.shape == (*HW, 3)
        x0, y0, x1, y1 = fa.boxes.T
        assert np.all((x0 >= 0) & (y0 >= 0) & (x1 <= HW[1]) & (y1 <= HW[0]) & (x1 > x0) & (y1 > y0))
    assert not np.array_equal(a[0].rgb, a[1].rgb)
    back = load_frames(save_frames(tmp_path / "f.npz", a))
    assert all(np.array_equal(x.rgb, y.rgb) and np.array_equal(x.boxes, y.boxes) for x, y in zip(a, back))
    with pytest.raises(ValueError, match="boxes"):
        a[0].prompts(len(a[0].boxes) + 1)


def test_node_parameters_pass_the_nodes_validation(tmp_path):
    from scrap_perception.ros import params

    args = argparse.Namespace(segmenter="vit_b", arch=SMALL_SAM_ARCH, precision="bf16", quick=True, classifier="x",
                              chunk_size=None, seed=0)
    models = bench_modes.Models(args, torch.device("cpu"), Clock("cpu"), tmp_path)
    values = params.validate(bench_modes.node_params(args, models, tmp_path / "s.pth", tmp_path / "c.pt"))
    assert values["segmenter.precision"] == "bf16" and values["classifier.model"].endswith("small_clip.json")
    assert json.loads(values["segmenter.arch"]) == SMALL_SAM_ARCH


def parser():
    p = argparse.ArgumentParser()
    bench.register(p.add_subparsers())
    return p


def test_bad_options_give_a_message_not_a_traceback(capsys):
    args = parser().parse_args(["bench", "--device", "cpu", "--precision", "fp16"])
    assert args.func(args) == 2
    assert "fp16 needs a CUDA device" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser().parse_args(["bench", "--boxes", "0,5"])


def test_bench_gpu_runs_both_precisions_over_the_cuda_configurations(tmp_path):
    """make bench-gpu's runs parse as bench options: CUDA, auto and fp32, N 1/20/50, 1 and 4 cameras, the
    floor (which measures decoder chunks and encoder batches), a budget, within the target's limit."""
    runs = [parser().parse_args(["bench", *bench_gpu.bench_args(p, tmp_path / p)]) for p in bench_gpu.RUN_PRECISIONS]
    assert [a.precision for a in runs] == ["auto", "fp32"]
    for a in runs:
        assert a.device == "cuda" and a.boxes == [1, 20, 50] and a.cameras == [1, 4] and a.budget == 5.0
        assert "floor" in a.modes and "core" in a.modes and not a.quick
    assert bench_gpu.TOTAL_S <= 8 * 60


def test_bench_gpu_without_cuda_says_so_in_one_line(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_gpu.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench-gpu: error: no CUDA device") and "\n" not in err


def run_quick(tmp_path, capsys, *extra, min_iou=0.999):
    """A --quick run of the CLI's entry point; checks its outputs. min_iou: naive vs core masks (bf16
    rounds the naive path's full-resolution upsampling, which the pipeline does in float32)."""
    out = tmp_path / "bench"
    code = bench.main(["--quick", "--out", str(out), *extra])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    report = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").stat().st_size > 0
    assert "| cameras | N |" in (out / "bench.md").read_text() and "core/floor" in printed.out
    assert [(r["cameras"], r["boxes"]) for r in report["results"]] == [(1, 1), (1, 3), (2, 1), (2, 3)]
    (out / "bench.md").unlink()
    assert bench.main(["--render", str(out)]) == 0  # the report again from bench.json alone
    assert "| cameras | N |" in (out / "bench.md").read_text() and "core/floor" in capsys.readouterr().out
    for r in report["results"]:
        assert r["instances"] == r["boxes"] * r["cameras"]
        assert r["naive_vs_core"]["mask_iou_min"] >= min_iou and r["naive_vs_core"]["class_agreement"] == 1.0
        assert r["naive_vs_core"]["instances"] == r["instances"] and r["naive_vs_core"]["unmatched"] == 0
        batch = report["settings"]["segmenter_encoder_batch"]  # images per encoder call, 1 on the CPU
        assert r["core_model_calls"]["sam_image_encoder"] == -(-r["cameras"] // batch)
        assert r["core_model_calls"]["clip_image"] == 1 and "clip_text" not in r["core_model_calls"]
        assert r["floor"]["encoder_batch"] in (1, r["cameras"]) and set(report["encoder_batches"]) == {"1", "2"}
        for key in ("core_over_floor", "core_over_model", "naive_over_core"):
            assert np.isfinite(r["ratios"][key]) and r["ratios"][key] > 0
        assert r["ratios"]["core_over_model"] >= 1.0  # the calls contain the model time they report
    return report


def test_quick_bench_cli_in_process_modes(tmp_path, capsys):
    report = run_quick(tmp_path, capsys, "--modes", "floor,core,naive", "--precision", "bf16", min_iou=0.98)
    assert report["ros_skipped"] is None and report["ros_conversions"] is None
    assert report["settings"]["precision"] == "bf16"
    assert set(report["memory"]) == {"after_model_load", "core", "floor", "naive"}
    assert all(m["peak_rss_mb"] > 0 for m in report["memory"].values())
    assert set(report["post_model_stages"]) == {"masks", "frame_sized", "box_sized"}
    flops = report["model_flops"]
    assert flops["peak"]["dtype"] == "bfloat16" and flops["peak"]["flop_per_s"] > 0
    for r in report["results"]:  # values are timings: only their presence and sign are checked here
        assert set(r["floor"]["peak_fraction"]) == {"encoder", "decoder", "clip_image", "total"}
        assert all(np.isfinite(v) and v > 0 for v in r["floor"]["peak_fraction"].values())
    assert "% peak" in (tmp_path / "bench" / "bench.md").read_text()


def test_precision_comparison_of_a_precision_with_itself_is_exact_and_bf16_close(tmp_path):
    """fp32 against fp32: the same computation, so IoU 1, same classes, cosine 1; bf16: close, and every
    instance matched. Seconds are reported, not judged."""
    seg, cls = small_models(tmp_path)
    pipe, frames = Pipeline(seg, cls), make_frames(2, 5, HW, seed=4)
    same = compare_precisions(pipe, frames, 5, Clock("cpu"), low="fp32", warmup=0)
    assert (same["instances"], same["unmatched"]) == (10, 0)
    assert same["mask_iou_min"] == same["mask_iou_median"] == 1.0 and same["class_agreement"] == 1.0
    assert same["embedding_cos_min"] == pytest.approx(1.0, abs=1e-6)
    assert all(len(v) == 2 and min(v) > 0 for v in same["samples_s"].values()) and same["speedup"] > 0
    low = compare_precisions(pipe, frames, 5, Clock("cpu"))
    assert low["low"] == "bf16" and (low["instances"], low["unmatched"]) == (10, 0)
    assert 0.9 < low["mask_iou_min"] <= low["mask_iou_median"] <= 1.0
    assert 0.99 < low["embedding_cos_min"] <= low["embedding_cos_median"] <= 1.0 + 1e-6
    assert 0.0 <= low["class_agreement"] <= 1.0
    assert seg.precision == cls.precision == "fp32"  # the pipeline's own engines are left as they were
    md = "\n".join(precision_markdown(low))
    assert "bf16 against fp32" in md and "| 10 | 0 |" in md


def test_quick_bench_precision_mode(tmp_path, capsys):
    out = tmp_path / "bench"
    assert bench.main(["--quick", "--out", str(out), "--modes", "core,precision", "--precision", "fp32"]) == 0, \
        capsys.readouterr().err[-3000:]
    report = json.loads((out / "bench.json").read_text())
    p = report["precision"]
    # --quick: N = 1, 3; the comparison takes N = 3 on precision.FRAMES = 4 frames
    assert (p["low"], p["boxes"], p["frames"], p["instances"], p["unmatched"]) == ("bf16", 3, 4, 12, 0)
    assert 0 < p["mask_iou_min"] <= 1 and 0 < p["embedding_cos_min"] <= 1 + 1e-6 and p["speedup"] > 0
    s = report["settings"]
    assert s["segmenter_precision"] == s["classifier_precision"] == "fp32"
    assert "## Precision: bf16 against fp32" in (out / "bench.md").read_text()


@pytest.mark.ros
@pytest.mark.slow
def test_quick_bench_cli_end_to_end_through_dds(tmp_path, capsys):
    from scrap_perception.tools.bench.ros_session import unavailable_reason

    if unavailable_reason():
        pytest.skip(unavailable_reason())
    report = run_quick(tmp_path, capsys, "--precision", "fp32")
    for r in report["results"]:
        assert r["ros"]["missed"] == 0 and r["ros"]["instances_equal_core"]
        assert len(r["ros"]["samples_s"]) >= 1 and np.isfinite(r["ratios"]["ros_over_floor"])
    conv = report["ros_conversions"]
    assert conv["array_instances"] == 20 and conv["image_to_rgb_is_view"]
    assert conv["node_latency_ms"]["total.p50_ms"] > 0 and "encode.p50_ms" in conv["node_latency_ms"]
    assert "round_trip_s" in conv, conv.get("round_trip_error")
    assert 0 < conv["round_trip_s"] < 5 and len(conv["samples_s"]) == 20
    from scrap_perception.tools.bench.report import RESIDUAL
    shares = report["results"][0]["overhead_share"]
    assert "ros: round trip without models (transport, pairing, hand-off)" in shares and RESIDUAL in shares
    assert report["memory"]["ros_node"]["peak_rss_mb"] > 0
    assert report["camera_sets"]["sets_node"]["holds"]  # the comparison runs by default (its own test below)


@pytest.mark.ros
@pytest.mark.slow
def test_quick_bench_camera_sets_beside_independent(tmp_path, capsys):
    """The camera-set comparison: the same 4-camera frame sets to a sync.policy independent and a sets node,
    interleaved; each node returns every set, the same instances; every ScrapViewSet holds exactly the 4
    frames sent, and the sets node's own counters account for every set sent. The rows are in bench.json
    and bench.md, also when rendered again."""
    from scrap_perception.tools.bench.ros_session import unavailable_reason

    if unavailable_reason():
        pytest.skip(unavailable_reason())
    out = tmp_path / "bench"
    code = bench.main(["--quick", "--modes", "core,sets", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    report = json.loads((out / "bench.json").read_text())
    cs = report["camera_sets"]
    assert (cs["cameras"], cs["boxes"], cs["warmup"], cs["sent"]) == (4, 3, 1, 6)
    assert set(cs["policies"]) == {"independent", "sets"}
    for r in cs["policies"].values():
        assert r["sets"] == 5 and r["missed"] == 0 and len(r["latency_s"]) == 5
        assert r["instances"] == [[3, 3, 3, 3]] * 5
        assert all(np.isfinite(r[k]) and r[k] > 0 for k in ("sets_per_s", "latency_median_s", "latency_p95_s",
                                                            "first_result_median_s"))
        assert r["latency_p95_s"] >= r["latency_median_s"] >= r["first_result_median_s"]  # orders, not speeds
    sets = cs["policies"]["sets"]
    assert (sets["view_sets"], sets["mismatches"], sets["problems"]) == (5, 0, [])
    assert cs["instances_equal"] and all(np.isfinite(v) and v > 0 for v in cs["ratios"].values())
    acc = cs["sets_node"]
    assert acc["holds"], acc["differences"]
    assert acc["counters"]["node"]["sets.complete"] == acc["counters"]["node"]["sets.published"] == 6
    assert acc["counters"]["node"]["sets.expired"] == acc["counters"]["node"]["sets.superseded"] == 0
    assert sorted(acc["counters"]["cameras"]) == [f"bench_cam{i}" for i in range(4)]
    assert all(c["processed"] == c["published"] == 6 and c["dropped"] == 0 for c in acc["counters"]["cameras"].values())
    assert report["memory"]["ros_sets_node"]["peak_rss_mb"] > 0 and "ros" not in report["results"][0]
    assert report["ros_conversions"] and "round_trip_s" not in report["ros_conversions"]  # no ros mode: no probe
    (out / "bench.md").unlink()
    assert bench.main(["--render", str(out)]) == 0
    md = (out / "bench.md").read_text()
    assert "| sync.policy | sets | sets/s | latency median | latency p95 |" in md
    assert "\n| independent | 5 |" in md and "\n| sets | 5 |" in md and "6 sets sent" in md and "holds." in md


def answer(set_s, problems=(), views=4, missed=False):
    """A driver answer to one frame set (RosSession.frame_set), of the sets node when ``views``."""
    out = {"missed": missed, "set_s": float("nan") if missed else set_s, "latency_s": [] if missed else
           [set_s / 2, set_s, set_s, set_s], "instances": [] if missed else [2, 2, 2, 2]}
    if views and not missed:
        out["view_set"] = {"latency_s": set_s, "views": views, "problems": list(problems), "stale_camera_infos": 0}
    return out


def test_camera_set_rows_count_missed_sets_and_mismatched_view_sets():
    """The comparison's figures and its accounting from the driver's answers and the node's counters: a set
    that never came back is missed, a ScrapViewSet of other frames a mismatch, a counter off the sets sent
    a difference."""
    from scrap_perception.tools.bench import sets_mode

    wrong_stamp = ["set stamp is not the frames' stamp"]
    res = sets_mode.result({"independent": [answer(1.0, views=0), answer(3.0, views=0), answer(2.0, views=0)],
                            "sets": [answer(1.0), answer(0, missed=True), answer(2.0, wrong_stamp),
                                     answer(2.0, views=3)]}, cameras=4)
    ind, sets = res["policies"]["independent"], res["policies"]["sets"]
    assert (ind["sets"], ind["missed"], ind["latency_median_s"], ind["sets_per_s"]) == (3, 0, 2.0, 0.5)
    assert ind["latency_p95_s"] == pytest.approx(2.9) and ind["first_result_median_s"] == 1.0
    assert "view_sets" not in ind
    assert (sets["sets"], sets["missed"], sets["view_sets"], sets["mismatches"]) == (4, 1, 3, 2)
    assert sets["problems"] == wrong_stamp
    assert res["ratios"]["sets_per_s"] == pytest.approx(0.6 / 0.5) and res["instances_equal"]
    cams = {"paired": 6, "processed": 6, "dropped": 0, "published": 6, "failed": 0, "set.expired": 0, "set.late": 0,
            "set.missing": 0, "camera_info_missing": 2}
    node = {"sets.complete": 6, "sets.partial": 0, "sets.expired": 0, "sets.superseded": 0, "sets.published": 6,
            "sets.waiting": 0}
    ok = sets_mode.accounting({"node": node, "cameras": {"c0": cams, "c1": cams}}, sent=6)
    assert ok["holds"] and ok["differences"] == []  # camera_info_missing is reported only
    bad = sets_mode.accounting({"node": dict(node, **{"sets.superseded": 1, "sets.published": 5}),
                                "cameras": {"c0": cams, "c1": dict(cams, dropped=1, processed=5)}}, sent=6)
    assert not bad["holds"] and bad["differences"] == [
        "sets.superseded 1 (expected 0)", "sets.published 5 (expected 6)", "c1 processed 5 (expected 6)",
        "c1 dropped 1 (expected 0)"]


@pytest.mark.ros
def test_view_set_check_finds_every_difference_from_the_frames_sent():
    """bench_driver's ScrapViewSet check on real messages: the set the node should publish passes; a wrong
    stamp, a partial set, views in another order or short of one, a view that is not its camera's array
    (the fields that differ), or a missing CameraInfo is named."""
    from sensor_msgs.msg import CameraInfo

    from scrap_perception.msg import ScrapInstance, ScrapInstanceArray, ScrapViewSet
    from scrap_perception.ros.bench_driver import _view_set_problems

    stamp, cams = (12, 345), ["a", "b"]

    def array(cam, n=1):
        msg = ScrapInstanceArray(camera_name=cam, instances=[ScrapInstance(id=f"d{i}") for i in range(n)])
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
        return msg

    def view_set(views, infos=2, partial=False):
        msg = ScrapViewSet(views=views, camera_infos=[CameraInfo() for _ in range(infos)], partial=partial)
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
        return msg

    arrays = [array("a"), array("b")]
    assert _view_set_problems(view_set([array("a"), array("b")]), arrays, cams, stamp) == []
    assert _view_set_problems(view_set([array("a"), array("b")]), arrays, cams, (12, 346)) == [
        "set stamp is not the frames' stamp"]
    assert _view_set_problems(view_set([array("b"), array("a")]), arrays, cams, stamp) == [
        "views of ['b', 'a'], not ['a', 'b']", "b: view differs from its scrap_instances array in camera_name",
        "a: view differs from its scrap_instances array in camera_name"]
    short = view_set([array("a")], infos=1, partial=True)
    short.missing_cameras = ["b"]
    assert _view_set_problems(short, arrays, cams, stamp) == ["partial, missing ['b']",
                                                              "views of ['a'], not ['a', 'b']"]
    assert _view_set_problems(view_set([array("a"), array("b", 2)], infos=1), arrays, cams, stamp) == [
        "b: view differs from its scrap_instances array in instances", "1 camera_infos for 2 views"]


@pytest.mark.ros
def test_quick_capacity_accounts_for_every_frame(tmp_path, capsys):
    """The capacity mode: the real perception node without models (bench_node) fed 4 cameras at a rate, then
    closed loop; every frame sent is answered or counted by the node. Accounting only, not speed."""
    from scrap_perception.tools.bench.ros_session import unavailable_reason

    if unavailable_reason():
        pytest.skip(unavailable_reason())
    out = tmp_path / "bench"
    code = bench.main(["--quick", "--modes", "core,capacity", "--capacity-rate", "10", "--capacity-seconds", "1",
                       "--out", str(out)])
    assert code == 0, capsys.readouterr().err[-3000:]
    report = json.loads((out / "bench.json").read_text())
    cap = report["capacity"]
    assert "phases" in cap, cap
    assert (cap["cameras"], cap["boxes"], cap["image_hw"]) == (4, 20, [240, 320])
    for name in ("rate", "closed_loop"):
        phase, acc = cap["phases"][name], cap["phases"][name]["accounting"]
        node = phase["node"]
        assert phase["sent"] >= 4 and 0 < phase["answered"] <= phase["sent"]
        assert phase["sent"] == phase["answered"] + acc["counted"] and acc["holds"], phase
        assert node["published"] == phase["answered"] and acc["lost_on_return"] == 0
        assert node["images_in"] == node["detections_in"] == phase["sent"] - acc["never_reached"]
        assert phase["latency_median_s"] > 0 and phase["arrays_per_s"] > 0
    assert cap["phases"]["rate"]["sent"] == 4 * 10  # 10 ticks of 4 cameras
    conv = report["ros_conversions"]  # the driver's conversion costs, box-sized at 1280x720
    assert conv["array_instances"] == 20 and conv["image_hw"] == [720, 1280] and conv["image_to_rgb_is_view"]
    assert set(cap["verdict"]) == {"every_frame_answered", "arrays_per_s", "image_receive_s", "array_build_publish_s"}
    md = (out / "bench.md").read_text()
    assert "| capacity | sent |" in md and "| 4 x 10 Hz |" in md and "| closed loop |" in md
    assert "image receive + convert + pair" in md


@pytest.mark.ros
def test_a_node_that_cannot_start_leaves_the_in_process_results(tmp_path, capsys, monkeypatch):
    """The node refuses its parameters (it stays up, unconfigured): the report says why ros is missing, the
    rest stands."""
    from scrap_perception.tools.bench.ros_session import unavailable_reason

    if unavailable_reason():
        pytest.skip(unavailable_reason())
    params = bench_modes.node_params
    monkeypatch.setattr(bench_modes, "node_params",
                        lambda *a: dict(params(*a), **{"segmenter.checkpoint": str(tmp_path / "missing.pth")}))
    out = tmp_path / "bench"
    assert bench.main(["--quick", "--modes", "core,ros", "--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["ros_skipped"].startswith("failed: bench ros driver: the perception node (independent) refused to "
                                            "configure")
    assert "segmenter.checkpoint" in report["ros_skipped"] and "missing.pth" in report["ros_skipped"]
    assert all("ros" not in r and r["core"]["median_s"] > 0 for r in report["results"])
    assert "ROS part skipped: failed" in (out / "bench.md").read_text()


@pytest.mark.ros
@pytest.mark.slow
def test_a_failed_round_trip_leaves_the_frame_set_results(tmp_path, capsys, monkeypatch):
    """The driver answers a round trip that cannot run (its probe node is gone) and keeps serving."""
    import subprocess
    import sys

    from scrap_perception.tools.bench import ros_session as bench_ros

    if bench_ros.unavailable_reason():
        pytest.skip(bench_ros.unavailable_reason())
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    monkeypatch.setattr(bench_ros.RosSession, "round_trip", lambda self: self._request(
        {"cmd": "round_trip", "namespace": "/bench_gone", "camera": "cam", "repeats": 1, "node_pid": gone.pid}, 60.0))
    out = tmp_path / "bench"
    assert bench.main(["--quick", "--modes", "core,ros", "--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["ros_skipped"] is None
    assert all(r["ros"]["missed"] == 0 and r["ros"]["instances_equal_core"] for r in report["results"])
    conv = report["ros_conversions"]
    assert "round_trip_s" not in conv and "exited before it was ready" in conv["round_trip_error"]
    assert conv["array_instances"] == 20  # the driver went on to the conversion costs
    assert "round trip not measured" in (out / "bench.md").read_text()
