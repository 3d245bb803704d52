"""``scrap-tools bench``: what a frame costs, against what the models alone cost, in one run.

For N boxes per frame and C cameras (synthetic 1280x720 scrap scenes, see frames.py), each the
median of repeats after warm-up:
- floor: the bare model forwards (floor.py): image encoder at the best encoder batch, mask decoder
  at the best chunk size, CN-CLIP encode_image of the crops the pipeline classifies; with each model's
  FLOPs and the fraction of the device's measured GEMM peak it reaches (flops.py);
- core: ``Pipeline.process_frames`` in this process (= ``Pipeline.process`` for one camera);
- naive: the same models driven as a user would from the paper (naive.py);
- ros: end to end through DDS (ros_session.py): a publisher process -> the perception node -> back;
- sets: after the configurations, the camera-set comparison (sets_mode.py): ``--sets-cameras`` cameras
  with ``--sets-boxes`` boxes each, the same frame set (one stamp) to a node with ``sync.policy:
  independent`` and to one with ``sets``, interleaved set by set, ``--sets-repeats`` sets each: frame
  sets per second, latency to the set's last result (median, p95), and the sets node's ScrapViewSets and
  counters checked against the frames sent;
- precision: last, the same frames (N=20, or the largest N) through the same models at fp32 and bf16
  (precision.py): mask IoU, class agreement, embedding cosine and the speed-up;
- capacity: after the model nodes stopped, the perception node without models (capacity.py): arrays per
  second answered for ``--capacity-cameras`` cameras at ``--capacity-rate`` Hz, then closed loop, with
  the node's accounting of every frame sent.
It reports core/floor, ros/floor, naive/core, frames per second, peak memory, the ROS conversion costs
and the share of every non-model stage of the frame, and writes ``bench.json``, ``bench.md`` and
``bench.png`` to ``out/bench/<timestamp>/``. The modes run interleaved, call by call (core, floor,
naive, ros, then ros, naive, floor, core, ...), so a drift of the machine's speed falls on all of them
alike (the node and the driver wait idle while the in-process modes run). core/floor still compares
different calls; core/model (the core's time over the model time inside the same calls,
timed by wrappers on the model forwards) does not.

Weights are random (seeded; model time does not depend on their values) with one change: the IoU head's
output bias is raised by 1 so no mask falls under ``min_mask_score`` and every box is classified, as
with trained weights on real detections. The node gets the very same weights through checkpoint files.
Random-weight masks cover much of the frame: the worst case for the stages whose cost follows the mask's
extent (ROI upsampling, crops), so those two are also measured alone for box-sized masks (stages.py).
Warm-up: ``--warmup`` calls before each mode's first configuration per camera count (later
configurations reuse the warm models). Repeats: up to ``--repeats``; fewer when the next call would take
the measurement past ``--budget`` seconds, but not under ``--min-repeats`` (3 at N=20, 1 camera, the
goals' configuration) unless one call alone exceeds the budget. The naive baseline runs for 1 camera by
default (``--naive-cameras``): naive/core is a per-frame ratio. With the defaults a full run takes about
20 minutes on an idle 2-core CPU (the camera-set comparison about 5 of them).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from ...devices import PRECISION_CHOICES
from ...segmentation.config import SMALL_VIT_ARCH
from .. import ToolError, run_folder
from .frames import make_frames
from .modes import GOAL_CONFIG, MODES, Bench, Models
from .precision import FRAMES as PRECISION_FRAMES
from .precision import compare_precisions
from .report import json_default, machine, markdown, plot, summarise
from .stages import post_model_stages
from .timing import Clock, PeakMemory

TOOL = "bench"


# --------------------------------------------------------------------------------------------- CLI
def _ints(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {value!r}")
    return sorted(set(out))


def _positive(value: str) -> int:
    try:
        out = int(value)
    except ValueError:
        out = 0
    if out < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return out


def _modes(value: str) -> list[str]:
    out = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in out if v not in MODES]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"modes must be among {','.join(MODES)}, got {value!r}")
    return out


def _hw(value: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 1280x720, got {value!r}") from None
    return h, w


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .. import parse_json_arg

    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (CUDA is synchronised around timers)")
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                   help="auto (default): bf16 where the device runs it natively, else fp32 (the report names what "
                        "each model ran at); fp16 needs CUDA")
    p.add_argument("--boxes", type=_ints, default=[1, 5, 20, 50], help="boxes per frame (default 1,5,20,50)")
    p.add_argument("--cameras", type=_ints, default=[1, 4], help="camera counts (default 1,4)")
    p.add_argument("--modes", type=_modes, default=list(MODES),
                   help="what to measure (default floor,core,naive,ros,sets,precision; core always runs)")
    p.add_argument("--naive-cameras", type=_ints, default=[1],
                   help="camera counts the naive baseline runs for (default 1: naive/core is a per-frame ratio)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement, at most (default 5)")
    p.add_argument("--min-repeats", type=int, default=2,
                   help="timed calls per measurement, at least (default 2; 3 at N=20, 1 camera; 1 when a single "
                        "call takes longer than --budget)")
    p.add_argument("--budget", type=float, default=20.0,
                   help="seconds of timed calls per measurement after which no further repeat starts (default 20)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed calls before each mode's first configuration per camera count (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads here and in the node (default: torch's choice, usually the core count)")
    p.add_argument("--segmenter", default="vit_t", help="SAM-family model type (default vit_t = MobileSAM)")
    p.add_argument("--arch", type=parse_json_arg, default=None, help="encoder size override (JSON), small models")
    p.add_argument("--classifier", default="ViT-B-16", help="CN-CLIP model name or JSON config (default ViT-B-16)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="the pipeline's decoder chunk size (default: the segmenter's per-device default)")
    p.add_argument("--image-size", type=_hw, default=(720, 1280), help="frame WIDTHxHEIGHT (default 1280x720)")
    p.add_argument("--sets-cameras", type=_positive, default=4, help="cameras of the camera-set comparison (default 4)")
    p.add_argument("--sets-boxes", type=_positive, default=None,
                   help="boxes per camera in the camera-set comparison (default 5; 3 with --quick)")
    p.add_argument("--sets-repeats", type=_positive, default=None,
                   help="frame sets per node in the camera-set comparison, after warm-up (default 10; 5 with --quick)")
    p.add_argument("--capacity-cameras", type=_positive, default=4, help="cameras of the capacity mode (default 4)")
    p.add_argument("--capacity-rate", type=float, default=30.0, help="frames per second per camera (default 30)")
    p.add_argument("--capacity-seconds", type=float, default=None,
                   help="seconds per capacity phase (default 5; 1.5 with --quick)")
    p.add_argument("--capacity-boxes", type=_positive, default=20,
                   help="detections and precomputed instances per frame (default 20)")
    p.add_argument("--capacity-image-size", type=_hw, default=None,
                   help="capacity frames WIDTHxHEIGHT (default 1280x720; 320x240 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="tiny models and frames, N=1,3, cameras 1,2, one repeat (camera sets: 4 cameras, N=3, "
                        "5 sets): a smoke run for tests and CI")
    p.add_argument("--out", type=Path, default=None, help=f"results folder (default out/{TOOL}/<timestamp>)")
    p.add_argument("--render", type=Path, default=None, metavar="DIR",
                   help="measure nothing: write bench.md and bench.png again from DIR/bench.json")
    p.add_argument("--seed", type=int, default=0, help="seed of the frames and the random weights")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(TOOL, help="performance benchmark: pipeline and node against the bare models",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def _apply_quick(args: argparse.Namespace) -> None:
    """--quick's settings; the camera-set comparison's defaults (smaller with --quick) where not given."""
    args.sets_boxes = args.sets_boxes or (3 if args.quick else 5)
    args.sets_repeats = args.sets_repeats or (5 if args.quick else 10)
    args.capacity_seconds = args.capacity_seconds or (1.5 if args.quick else 5.0)
    args.capacity_image_size = args.capacity_image_size or ((240, 320) if args.quick else (720, 1280))
    if not args.quick:
        return
    args.segmenter, args.arch = "vit_b", args.arch or SMALL_VIT_ARCH
    args.image_size = (120, 160)
    args.boxes, args.cameras, args.naive_cameras = [1, 3], [1, 2], [1, 2]
    args.repeats, args.min_repeats, args.warmup = 1, 1, 1


def _device(args: argparse.Namespace) -> torch.device:
    """Checks the options; sets the thread count; returns the device."""
    from ...segmentation.devices import resolve_device

    if args.repeats < 1 or args.min_repeats < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        raise ToolError("--repeats, --min-repeats and --threads must be at least 1, --warmup at least 0")
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise ToolError(str(e)) from None
    if args.precision == "fp16" and device.type != "cuda":
        raise ToolError("--precision fp16 needs a CUDA device; use bf16 on the CPU")
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the node process
    return device


def _stages(b: Bench, args: argparse.Namespace) -> dict:
    """The post-model stages alone at N=20 (or the largest N), with their share of the core frame."""
    n = GOAL_CONFIG[0] if GOAL_CONFIG[0] in args.boxes else max(args.boxes)
    print(f"bench: post-model stages at N={n}", file=sys.stderr)
    stages = post_model_stages(b.m.segmenter, b.m.classifier, b.frames[0], n, b.clock)
    core = b.results.get((n, 1), {}).get("core", {}).get("median_s", math.nan)
    for kind in ("frame_sized", "box_sized"):
        stages[kind]["share_of_core_frame"] = {k: v / core for k, v in stages[kind].items() if k.endswith("_s")}
    return stages


def render(folder: Path) -> Path:
    """Re-derives the summary, bench.md and bench.png of an earlier run from its bench.json."""
    path = folder / "bench.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ToolError(f"--render: cannot read {path}: {e}") from None
    results = {(r["boxes"], r["cameras"]): r for r in report["results"]}
    report["summary"] = summarise(results, report.get("ros_conversions"))
    write_report(report, folder)
    return folder


def write_report(report: dict, out: Path) -> None:
    (out / "bench.json").write_text(json.dumps(report, indent=1, default=json_default))
    text = markdown(report)
    (out / "bench.md").write_text(text)
    plot(report, out / "bench.png")
    print(text)


def bench(args: argparse.Namespace) -> Path:
    """Runs the benchmark; returns the results folder."""
    if args.render is not None:
        return render(args.render)
    _apply_quick(args)
    device = _device(args)
    out = run_folder(args.out, TOOL)
    started, load_start = time.strftime("%Y-%m-%d %H:%M:%S"), os.getloadavg()
    clock, memory = Clock(device), PeakMemory(device)
    models = Models(args, device, clock, out)
    print(f"bench: {models.segmenter.name} ({models.segmenter.precision}) + {models.classifier.name} "
          f"({models.classifier.precision}) on {device}, "
          f"{max(args.cameras)} frame(s) of {args.image_size[1]}x{args.image_size[0]}", file=sys.stderr)
    cameras, boxes = max(args.cameras), max(args.boxes)
    if "sets" in args.modes:
        cameras, boxes = max(cameras, args.sets_cameras), max(boxes, args.sets_boxes)
    frames = make_frames(cameras, boxes, args.image_size, args.seed)
    rss_models = memory.read()
    b = Bench(args, models, frames, clock, memory)
    later = ("sets", "precision", "capacity")  # not interleaved: each runs after the configurations
    print("bench: " + ", ".join(m for m in MODES if m == "core" or (m in args.modes and m not in later))
          + " (interleaved)"
          + ("; then camera sets" if "sets" in args.modes else ""), file=sys.stderr)
    b.run(args.modes, out)
    if b.ros_skipped:
        print(f"bench: ROS part skipped: {b.ros_skipped}", file=sys.stderr)
    stages = _stages(b, args)
    precision = None
    if "precision" in args.modes:
        n = GOAL_CONFIG[0] if GOAL_CONFIG[0] in args.boxes else max(args.boxes)
        # frames of the same seed: the first ones are the bench's own
        pframes = frames if len(frames) >= PRECISION_FRAMES else make_frames(PRECISION_FRAMES, n, args.image_size,
                                                                             args.seed)
        print(f"bench: fp32 against bf16 at N={n} on {len(pframes)} frames", file=sys.stderr)
        precision = compare_precisions(models.pipeline, pframes, n, clock, warmup=args.warmup)
    settings = {k: v for k, v in vars(args).items() if not callable(v) and k != "out"}
    settings.update(device=str(device), image_hw=list(args.image_size), segmenter_name=models.segmenter.name,
                    classifier_name=models.classifier.name, segmenter_chunk_size=models.segmenter.chunk_size,
                    segmenter_encoder_batch=models.segmenter.encoder_batch,
                    classifier_batch_size=models.classifier.batch_size,
                    segmenter_precision=models.segmenter.precision, classifier_precision=models.classifier.precision,
                    weights="random (seeded); IoU head bias +1 so every box is classified")
    report = {
        "started": started, "machine": machine(),
        "load_average": {"start": [round(v, 2) for v in load_start], "end": [round(v, 2) for v in os.getloadavg()]},
        "settings": settings, "summary": summarise(b.results, b.ros_conversions),
        "results": list(b.results.values()), "decoder_chunks": b.chunks, "encoder_batches": b.encoder_batches,
        "post_model_stages": stages,
        "memory": {"after_model_load": rss_models, **b.memory_by_mode},
        "ros_conversions": b.ros_conversions, "camera_sets": b.camera_sets, "ros_skipped": b.ros_skipped,
        "precision": precision, "capacity": b.capacity,
        "model_flops": b.model_flops,
    }
    write_report(report, out)
    return out


def run(args: argparse.Namespace) -> int:
    """0 on success, 2 on bad options or a failed part (message, no traceback), 130 when interrupted."""
    try:
        out = bench(args)
    except (ToolError, RuntimeError) as e:
        print(f"{TOOL}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{TOOL}: interrupted", file=sys.stderr)
        return 130
    print(f"{TOOL}: results in {out}", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scrap_perception.tools.bench.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
