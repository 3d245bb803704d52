"""The benchmark's report: ratios, frames per second and stage shares from the measurements, the goals
verdict, the machine it ran on, and the Markdown table and PNG people look at."""
from __future__ import annotations

import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from . import capacity, precision, sets_mode
from .modes import GOAL_CONFIG

PLOT_ORDER = ("floor", "core", "ros", "naive")
GOALS = {"core_over_floor": 1.05, "ros_over_floor": 1.15, "stage_share": 0.02}


def summarise(results: Mapping[tuple[int, int], dict], conversions: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """Adds ratios, frames per second and stage shares to each configuration's results (in place);
    returns the goals verdict at GOAL_CONFIG."""
    for (n, c), r in results.items():
        floor, core, ros, naive = (r.get(k, {}).get("median_s", math.nan) for k in ("floor", "core", "ros", "naive"))
        shares = r.get("core_shares", {})
        # Wall time over the model time inside the same calls: the overhead without run-to-run noise.
        over_model = shares.get("wall_over_model", core / sum(shares.get("model_s", {}).values() or [math.nan]))
        r["ratios"] = {"core_over_floor": core / floor, "core_over_model": over_model, "ros_over_floor": ros / floor,
                       "ros_over_core": ros / core, "naive_over_core": naive / core}
        r["fps"] = {"floor": c / floor, "core": c / core, "ros": c / ros}
        r["overhead_share"] = dict(r.get("core_shares", {}).get("overhead_share", {}))
        if "ros" in r:
            r["overhead_share"].update(ros_shares(r, conversions or {}))
    goal = results.get(GOAL_CONFIG, {})
    measured = {
        "core_over_floor": goal.get("ratios", {}).get("core_over_floor", math.nan),
        "core_over_model": goal.get("ratios", {}).get("core_over_model", math.nan),
        "ros_over_floor": goal.get("ratios", {}).get("ros_over_floor", math.nan),
        "max_stage_share": max((v for k, v in goal.get("overhead_share", {}).items() if k != RESIDUAL),
                               default=math.nan),
    }
    limits = {"core_over_floor": GOALS["core_over_floor"], "core_over_model": GOALS["core_over_floor"],
              "ros_over_floor": GOALS["ros_over_floor"], "max_stage_share": GOALS["stage_share"]}
    verdict = {k: "not measured" if v != v else ("met" if v <= limits[k] else "missed") for k, v in measured.items()}
    return {"goal_config": {"boxes": GOAL_CONFIG[0], "cameras": GOAL_CONFIG[1]}, "goals": GOALS,
            "measured": measured, "verdict": verdict}


RESIDUAL = "ros: rest (ros - core - the above; separate calls: carries their noise)"


def ros_shares(r: Mapping[str, Any], conv: Mapping[str, Any]) -> dict[str, float]:
    """ROS-side stages as shares of the ros frame, each measured alone: image receipt, the 20-instance
    array (so only at N = 20), the round trip of a frame through a node without models (transport both
    ways, pairing, hand-off; the cameras' frames travel in parallel); and RESIDUAL, what the difference of
    the ros and core medians leaves (not a stage: two different calls, so it carries their noise)."""
    c, n, ros = r["cameras"], r["boxes"], r["ros"]["median_s"]
    receive = c * (conv.get("image_deserialize_s", 0.0) + conv.get("image_to_rgb_s", 0.0))
    out = {"ros: image receive (deserialise + to RGB)": receive / ros}
    rest = ros - r["core"]["median_s"] - receive
    if n == 20 and "array_build_s" in conv:
        kind = "node_array" if "node_array_build_s" in conv else "array"  # the node's own output where measured
        array = c * (conv[f"{kind}_build_s"] + conv[f"{kind}_publish_s"])
        out["ros: build + publish the array"] = array / ros
        rest -= array
    if "round_trip_s" in conv:
        out["ros: round trip without models (transport, pairing, hand-off)"] = conv["round_trip_s"] / ros
        rest -= conv["round_trip_s"]
    out[RESIDUAL] = rest / ros
    return out


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "python": platform.python_version(), "platform": platform.platform(), "commit": commit,
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def _f(v: float, digits: int = 3) -> str:
    return "—" if v is None or v != v else f"{v:.{digits}f}"


def markdown(report: Mapping[str, Any]) -> str:
    """bench.md: the settings and machine, the main table, stage shares, goals, conversions, the camera-set
    comparison, memory."""
    m, s = report["machine"], report["settings"]
    lines = [f"# scrap_perception benchmark ({report['started']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GiB, torch {m['torch']} "
             f"({m['torch_threads']} threads), device {s['device']}, precision {s['precision']}, "
             f"load average {report['load_average']['start']} -> {report['load_average']['end']}; commit "
             f"{m['commit'] or '?'}.",
             f"Models: {s['segmenter_name']} ({s.get('segmenter_precision', s['precision'])}) + "
             f"{s['classifier_name']} ({s.get('classifier_precision', s['precision'])}) (random weights), frames "
             f"{s['image_hw'][1]}x{s['image_hw'][0]}; seconds per frame set (all cameras), median of "
             f"repeats; K = masks classified.", "",
             "core/model = core time over the model time inside the same calls (no run-to-run noise).", "",
             "| cameras | N | K | floor s | core s | ros s | naive s | core/floor | core/model | ros/floor "
             "| ros/core | naive/core | FPS core | FPS ros |", "|" + "---|" * 14]
    for r in report["results"]:
        ra, fps = r["ratios"], r["fps"]
        cells = [str(r["cameras"]), str(r["boxes"]), str(r.get("instances", "—"))]
        cells += [_f(r.get(mode, {}).get("median_s")) for mode in ("floor", "core", "ros", "naive")]
        cells += [_f(ra[k]) for k in ("core_over_floor", "core_over_model", "ros_over_floor", "ros_over_core",
                                      "naive_over_core")]
        cells += [_f(fps["core"], 2), _f(fps["ros"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    chunks, batches = report.get("decoder_chunks") or {}, report.get("encoder_batches") or {}
    if chunks or batches:
        lines += ["", f"Batching: the core decodes {s.get('segmenter_chunk_size', '?')} prompt(s) per decoder call "
                  f"and encodes {s.get('segmenter_encoder_batch', '?')} image(s) per encoder call; the floor "
                  "uses the fastest measured: decoder chunk "
                  + ", ".join(f"{v['best']} at N={n}" for n, v in chunks.items()) + "; encoder batch "
                  + (", ".join(f"{v['best']} for C={c}" for c, v in batches.items()) or "—") + "."]
    stages = sorted({k for r in report["results"] for k in r["overhead_share"]})
    lines += ["", "Non-model stages, % of the frame (core stages of the core frame, ros stages of the ros frame):",
              "", "| stage | " + " | ".join(f"C={r['cameras']} N={r['boxes']}" for r in report["results"]) + " |",
              "|" + "---|" * (len(report["results"]) + 1)]
    for st in stages:
        lines.append(f"| {st} | " + " | ".join(_f(100 * r["overhead_share"].get(st, math.nan), 2)
                                               for r in report["results"]) + " |")
    g, v = report["summary"]["measured"], report["summary"]["verdict"]
    lines += ["", f"Goals at N={GOAL_CONFIG[0]}, {GOAL_CONFIG[1]} camera: core/floor {_f(g['core_over_floor'])} "
              f"(<= {GOALS['core_over_floor']}: {v['core_over_floor']}; core/model {_f(g['core_over_model'])}: "
              f"{v['core_over_model']}), ros/floor {_f(g['ros_over_floor'])} "
              f"(<= {GOALS['ros_over_floor']}: {v['ros_over_floor']}), largest non-model stage "
              f"{_f(100 * g['max_stage_share'], 2)} % (<= 2 %: {v['max_stage_share']})."]
    conv = report.get("ros_conversions") or {}
    if conv:
        keys = ("image_deserialize_s", "image_to_rgb_s", "array_build_s", "array_publish_s")
        ms = {k: _f(1000 * conv[k], 2) for k in keys}
        lines += [f"ROS conversions: receiving a {conv['image_hw'][1]}x{conv['image_hw'][0]} rgb8 image "
                  f"{ms['image_deserialize_s']} ms to deserialise + {ms['image_to_rgb_s']} ms to RGB (a view, no "
                  f"copy: {conv['image_to_rgb_is_view']}); a {conv['array_instances']}-instance array "
                  f"({conv['array_bytes'] / 1e6:.1f} MB, {conv['array_source']}) {ms['array_build_s']} ms to build "
                  f"+ {ms['array_publish_s']} ms to publish"
                  + (f" (the node's own 20-instance output, {conv['node_array_bytes'] / 1e6:.1f} MB: "
                     f"{_f(1000 * conv['node_array_build_s'], 2)} + {_f(1000 * conv['node_array_publish_s'], 2)} ms)"
                     if "node_array_build_s" in conv else "") + "; "
                  + (f"a frame through a node without models and back {_f(1000 * conv['round_trip_s'], 2)} ms "
                     "(median, empty detections)." if "round_trip_s" in conv else
                     f"round trip not measured: {conv['round_trip_error']}." if "round_trip_error" in conv else
                     f"20 detections {_f(1000 * conv.get('detections_receive_s', math.nan), 2)} ms to receive.")]
        if "image_receive_s" in conv:
            lines.append(capacity.conversion_goals_line(conv))
        if conv.get("node_latency_ms"):
            lat = conv["node_latency_ms"]
            stages = [s for s in ("convert", "encode", "mask_decode", "classify", "publish", "total")
                      if f"{s}.p50_ms" in lat]
            lines.append("The node's own stages over every frame it processed (ms, p50/p95; its /diagnostics): "
                         + ", ".join(f"{s} {_f(lat[f'{s}.p50_ms'], 1)}/{_f(lat.get(f'{s}.p95_ms'), 1)}"
                                     for s in stages) + ".")
    if report.get("model_flops"):
        lines += flops_markdown(report)
    if report.get("camera_sets"):
        lines += sets_mode.markdown(report["camera_sets"])
    if report.get("precision"):
        lines += precision.markdown(report["precision"])
    if report.get("capacity"):
        lines += capacity.markdown(report["capacity"])
    st = report.get("post_model_stages")
    if st:
        lines += ["", f"Post-model stages alone at N={st['masks']} (ms; % of the 1-camera core frame):", "",
                  "| masks | mean area | ROI upsampling | full upsampling (reference) | crop preparation "
                  "| PIL crops (reference) |", "|---|---|---|---|---|---|"]
        for kind in ("frame_sized", "box_sized"):
            k, sh = st[kind], st[kind]["share_of_core_frame"]
            cells = [f"{_f(1000 * k[key], 1)} ({_f(100 * sh[key], 2)} %)" for key in
                     ("roi_upsampling_s", "full_upsampling_reference_s", "crop_preparation_s",
                      "crop_preparation_pil_reference_s")]
            lines.append(f"| {kind.replace('_', ' ')} | {_f(100 * k['mean_mask_area_share'], 1)} % | "
                         + " | ".join(cells) + " |")
        lines.append("")
    mem = report["memory"]
    lines += ["Peak RSS MiB: " + ", ".join(f"{k} {_f(v.get('peak_rss_mb'), 0)}" for k, v in mem.items()) + "."]
    if report.get("ros_skipped"):
        lines += [f"ROS part skipped: {report['ros_skipped']}."]
    return "\n".join(lines) + "\n"


def flops_markdown(report: Mapping[str, Any]) -> list[str]:
    """The floor's FLOPs per frame set, its time per part and the fraction of the GEMM peak reached."""
    mf, s = report["model_flops"], report["settings"]
    peak, unit = mf["peak"], mf["unit"]
    lines = ["", f"Model FLOPs (torch.utils.flop_counter) against the device's GEMM peak: {peak['size']}^2 "
             f"{peak['dtype']} matmul, {peak['threads']} thread(s) on {peak['device']}: "
             f"{peak['flop_per_s'] / 1e9:.1f} GFLOP/s. Per unit: image encoder {unit['encoder'] / 1e9:.2f} GFLOP "
             f"per image, mask decoder {unit['decoder'] / 1e9:.3f} per prompt, CN-CLIP image encoder "
             f"{unit['clip_image'] / 1e9:.2f} per crop (precision {s['precision']}).", "",
             "| cameras | N | K | encoder GFLOP | s | % peak | decoder GFLOP | s | % peak | CLIP GFLOP | s | % peak "
             "| total GFLOP | floor s | % peak | limit s (at peak) |", "|" + "---|" * 16]
    for r in report["results"]:
        f = r.get("floor", {})
        if "flops" not in f:
            continue
        fl, sec, frac = f["flops"], f["parts_median_s"], f["peak_fraction"]
        cells = [str(r["cameras"]), str(r["boxes"]), str(r.get("instances", "—"))]
        for k in ("encoder", "decoder", "clip_image"):
            cells += [_f(fl[k] / 1e9, 1), _f(sec.get(k)), _f(100 * frac.get(k, math.nan), 1)]
        total = sum(fl.values())
        cells += [_f(total / 1e9, 1), _f(sum(sec.values())), _f(100 * frac.get("total", math.nan), 1),
                  _f(total / peak["flop_per_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(report: Mapping[str, Any], path: Path) -> None:
    """bench.png: seconds per frame set of each mode against N, one panel per camera count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cams = sorted({r["cameras"] for r in report["results"]})
    fig, axes = plt.subplots(1, len(cams), figsize=(6 * len(cams), 4), squeeze=False)
    for ax, c in zip(axes[0], cams):
        rows = [r for r in report["results"] if r["cameras"] == c]
        x = np.arange(len(rows))
        for k, mode in enumerate(PLOT_ORDER):
            vals = [r.get(mode, {}).get("median_s", math.nan) for r in rows]
            bars = ax.bar(x + (k - 1.5) * 0.2, vals, 0.2, label=mode)
            if mode in ("core", "ros"):
                ratios = [r["ratios"][f"{mode}_over_floor"] for r in rows]
                ax.bar_label(bars, [f"{v:.2f}x" if v == v else "" for v in ratios], fontsize=7)
        ax.set_xticks(x, [f"N={r['boxes']}" for r in rows])
        ax.set_ylabel("seconds per frame set (labels: / floor)")
        ax.set_title(f"{c} camera(s): {report['settings']['segmenter_name']} + {report['settings']['classifier_name']}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def json_default(v: Any) -> Any:
    """json.dumps default for numpy scalars, paths and tuples."""
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, tuple):
        return list(v)
    return str(v)
