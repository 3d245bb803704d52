"""End-to-end demo without ros2 launch: synthetic 2-camera dataset -> replay -> perception node -> recorder.

    python -m scrap_perception.ros.demo [--frames 3] [--out out/demo]

1. generates scrap-like scenes (scrap_perception.synth) and splits them over the cameras;
2. starts the perception node, the recorder and the replay as separate processes (the replay publishes
   images + jittered ground-truth boxes as Detection2DArray, in lockstep with the node's results);
3. prints and writes a summary: frames, instances, latency p50/p95 (end to end and per stage, from
   /diagnostics), mean DICE of the published masks against the replayed ground truth.
Outputs under --out: demo.mcap (every topic: open it in Foxglove or `ros2 bag info`), overlays/*.png,
summary.json, logs/. Real checkpoints are used when given (--sam-checkpoint / SCRAP_SAM_CHECKPOINT,
--clip-checkpoint / SCRAP_CLIP_CHECKPOINT); otherwise the weight-free GrabCut segmenter and no classifier.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .processes import ROOT, NodeProcess, ros_args
from .stats import STAGES as NODE_STAGES


def config_file() -> Path:
    """config/scrap_perception.yaml of the source tree, else of the installed package."""
    src = ROOT / "config" / "scrap_perception.yaml"
    if src.is_file():
        return src
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("scrap_perception")) / "config" / "scrap_perception.yaml"


def fastdds_profile() -> Optional[Path]:
    """config/fastdds_large_images.xml: lets best-effort images bigger than 512 KB through Fast DDS."""
    path = config_file().parent / "fastdds_large_images.xml"
    return path if path.is_file() else None


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    env = os.environ.get
    ap = argparse.ArgumentParser(prog="python -m scrap_perception.ros.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    ap.add_argument("--cameras", nargs="+", default=["cam_left", "cam_right"])
    ap.add_argument("--frames", type=int, default=3, help="frames per camera (default 3)")
    ap.add_argument("--image-size", type=int, nargs=2, default=(720, 1280), metavar=("H", "W"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jitter", type=float, default=8.0, help="detector-like box noise, pixels (default 8)")
    ap.add_argument("--rate", type=float, default=2.0, help="replay frames per second at most (default 2)")
    ap.add_argument("--sam-model-type", default=env("SCRAP_SAM_MODEL_TYPE", "vit_b"))
    ap.add_argument("--sam-checkpoint", default=env("SCRAP_SAM_CHECKPOINT", ""),
                    help="SAM-family checkpoint; none = the weight-free GrabCut segmenter")
    ap.add_argument("--decoder-checkpoint", default=env("SCRAP_DECODER_CHECKPOINT", ""))
    ap.add_argument("--clip-model", default=env("SCRAP_CLIP_MODEL", "ViT-B-16"))
    ap.add_argument("--clip-checkpoint", default=env("SCRAP_CLIP_CHECKPOINT", ""),
                    help="CN-CLIP checkpoint; none = no classification")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    args = ap.parse_args(argv)
    if args.frames < 1:
        ap.error("--frames must be >= 1")
    return args


def node_params(args: argparse.Namespace) -> dict[str, Any]:
    """Parameter overrides of the perception node: real checkpoints when configured, else GrabCut."""
    p: dict[str, Any] = {"camera_names": list(args.cameras), "publish_overlay": True}
    if args.sam_checkpoint:
        p.update({"segmenter.model_type": args.sam_model_type, "segmenter.checkpoint": args.sam_checkpoint,
                  "segmenter.decoder_checkpoint": args.decoder_checkpoint})
    else:
        p["segmenter.model_type"] = "grabcut"
    if args.clip_checkpoint:
        p.update({"classifier.model": args.clip_model, "classifier.checkpoint": args.clip_checkpoint})
    else:
        p.update({"classifier.model": "none"})
    return p


def start(name: str, module: str, args: list[str], logs: Path) -> NodeProcess:
    """``scrap_perception.ros.<module>`` with ``args``, logging to ``logs/<name>.log``."""
    return NodeProcess(f"scrap_perception.ros.{module}", args, logs / f"{name}.log", name=name)


class Monitor:
    """Follows the node's /diagnostics from this process."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        from .diagnostics import parse

        self._rclpy, self._parse = rclpy, parse
        rclpy.init(args=[])
        self.node = rclpy.create_node("scrap_demo_monitor")
        self.latest: dict = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self.latest.update(parse(m)), 10)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._rclpy.spin_once(self.node, timeout_sec=max(0.0, min(0.1, end - time.monotonic())))

    def camera(self, cam: str) -> dict:
        return next((v for k, v in self.latest.items() if k.endswith(f"camera {cam}")), {})

    def pipeline(self) -> dict:
        return next((v for k, v in self.latest.items() if k.endswith(": pipeline")), {})

    def close(self) -> None:
        self.node.destroy_node()
        self._rclpy.try_shutdown()


def evaluate(mcap: Path, ann_file: Path, cameras: Sequence[str]) -> tuple[dict, list[float]]:
    """Mean DICE (and class accuracy when classified) of every published instance vs its ground truth
    (the replay's Detection2D.id is the annotation id); and the list of per-instance DICE."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    from ..data import CocoDataset
    from ..metrics import dice
    from .conversions import mask_from_msg

    ds = CocoDataset(ann_file)
    gt = {}
    for i in range(len(ds)):
        for inst in ds[i].instances:
            gt[str(inst.ann_id)] = inst
    per_cam = {c: {"frames": 0, "instances": 0, "dice": [], "correct": 0, "classified": 0} for c in cameras}
    with open(mcap, "rb") as f:
        topics = [f"/{c}/scrap_instances" for c in cameras]
        for _, channel, _, msg in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages(topics):
            s = per_cam[channel.topic.split("/")[1]]
            s["frames"] += 1
            for inst in msg.instances:
                s["instances"] += 1
                g = gt.get(inst.id)
                if g is None:
                    continue
                s["dice"].append(dice(mask_from_msg(inst, (msg.image_height, msg.image_width)), g.mask))
                if inst.class_id != 255:
                    s["classified"] += 1
                    s["correct"] += int(inst.class_id == g.class_id)
    out = {}
    for c, s in per_cam.items():
        out[c] = {"frames": s["frames"], "instances": s["instances"],
                  "mean_dice": float(np.mean(s["dice"])) if s["dice"] else None,
                  "class_accuracy": s["correct"] / s["classified"] if s["classified"] else None}
    all_dice = [d for s in per_cam.values() for d in s["dice"]]
    out["all"] = {"frames": sum(s["frames"] for s in per_cam.values()),
                  "instances": sum(s["instances"] for s in per_cam.values()),
                  "mean_dice": float(np.mean(all_dice)) if all_dice else None}
    return out, all_dice


def run(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from ..synth import generate_dataset

    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    logs, overlays = out / "logs", out / "overlays"
    logs.mkdir(parents=True)
    cams, n_frames = list(args.cameras), args.frames
    ann = generate_dataset(out / "data", n_frames * len(cams), seed=args.seed, image_size=tuple(args.image_size))
    # In this process's environment: the monitor here and the node processes (node_env) share them.
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random().randint(1, 100)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if fastdds_profile():  # the installed package's share directory too, not only the source tree's
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(fastdds_profile()))
    mcap = out / "demo.mcap"
    topics = [f"/{c}/{t}" for c in cams for t in ("image_raw", "detections", "scrap_instances", "scrap_overlay")]
    print(f"[demo] ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}; segmenter "
          f"{args.sam_model_type if args.sam_checkpoint else 'grabcut (weight-free, NOT SAM)'}; classifier "
          f"{args.clip_model if args.clip_checkpoint else 'none'}; logs in {logs}", flush=True)
    monitor = Monitor()
    procs: list[NodeProcess] = []
    t_start = time.monotonic()
    try:
        node = start("perception_node", "perception_node", ros_args(config_file(), node_params(args)), logs)
        procs.append(node)
        recorder = start("recorder", "recorder_node", ros_args(None, {
            "output": mcap, "topics": topics + ["/diagnostics"], "overlay_dir": overlays,
            "summary": out / "recorder_summary.json"}), logs)
        procs.append(recorder)
        # The replay waits for the node's subscriptions (its models load first): meanwhile the recorder
        # discovers the replay's topics, so it records from the first frame on.
        replay = start("replay", "replay_node", ros_args(None, {
            "source": ann, "camera_names": cams, "rate": args.rate, "jitter_px": args.jitter, "lockstep": True,
            "wait_for_subscribers": 300.0, "min_subscribers": 2, "seed": args.seed, "linger": 1.0}), logs)
        procs.append(replay)
        bar = tqdm(total=n_frames * len(cams), desc="frames published", unit="frame")
        while replay.alive():
            monitor.spin(0.5)
            done = sum(int(monitor.camera(c).get("published", 0)) for c in cams)
            if done != bar.n:
                bar.update(done - bar.n)
            for p in (node, recorder):
                if not p.alive():
                    raise RuntimeError(f"{p.name} exited with {p.poll()}:\n{p.tail()}")
            if time.monotonic() - t_start > args.timeout:
                raise TimeoutError(f"demo did not finish in {args.timeout} s; see {logs}")
        if replay.poll() != 0:
            raise RuntimeError(f"replay exited with {replay.poll()}:\n{replay.tail()}")
        monitor.spin(2.5)  # the last results reach the recorder, one more diagnostics round
        bar.update(sum(int(monitor.camera(c).get("published", 0)) for c in cams) - bar.n)
        bar.close()
    finally:
        codes = {p.name: p.stop() for p in reversed(procs)}
        diag = {"pipeline": monitor.pipeline(), **{c: monitor.camera(c) for c in cams}}
        monitor.close()
    bad = {k: v for k, v in codes.items() if v not in (0, None)}
    if bad:
        raise RuntimeError(f"processes ended with errors {bad}; see {logs}")
    return summarize(args, out, ann, mcap, diag, time.monotonic() - t_start)


STAGES = tuple(s for s in NODE_STAGES if s != "batch")  # per frame; "batch" is per batch
COUNTERS = ("images_in", "paired", "processed", "published", "dropped", "expired.total", "rejected.total", "instances")


def summarize(args: argparse.Namespace, out: Path, ann: Path, mcap: Path, diag: dict, seconds: float) -> dict:
    """summary.json, summary.png and the printed table."""
    cams = list(args.cameras)
    scores, dices = evaluate(mcap, ann, cams)
    rec = json.loads((out / "recorder_summary.json").read_text())
    pngs = sorted((out / "overlays").glob("*.png"))
    if pngs:
        shutil.copy(pngs[0], out / "overlay_example.png")
    pipe = diag["pipeline"]
    summary = {
        "segmenter": pipe.get("segmenter"), "classifier": pipe.get("classifier"), "device": pipe.get("device"),
        "seconds": round(seconds, 1), "frames_replayed": args.frames * len(cams), "scores": scores,
        "end_to_end_latency_s": {c: {k: rec["cameras"].get(c, {}).get(k) for k in ("latency_p50_s", "latency_p95_s")}
                                 for c in cams},
        "stage_latency_ms": {s: {q: pipe.get(f"latency.{s}.{q}_ms") for q in ("p50", "p95")} for s in STAGES},
        "node_counters": {c: {k: diag[c].get(k) for k in COUNTERS} for c in cams},
        "outputs": {"mcap": str(mcap), "overlays": [str(p) for p in pngs], "figure": str(out / "summary.png")},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    plot(summary, cams, dices, pngs, out / "summary.png")
    print_summary(summary, cams)
    return summary


def plot(summary: dict, cams: Sequence[str], dices: Sequence[float], pngs: Sequence[Path], path: Path) -> None:
    """One overlay per camera and the histogram of per-instance DICE."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    firsts = [next((p for p in pngs if p.name.startswith(f"{c}_")), None) for c in cams]
    fig, axes = plt.subplots(1, len(cams) + 1, figsize=(6 * len(cams) + 4, 4.2),
                             gridspec_kw={"width_ratios": [16] * len(cams) + [7]})
    for ax, cam, png in zip(axes, cams, firsts):
        if png is not None:
            ax.imshow(cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB))
        ax.set_title(f"{cam}/scrap_overlay")
        ax.axis("off")
    ax = axes[-1]
    ax.hist(dices, bins=np.linspace(0, 1, 21), color="tab:blue")
    mean = summary["scores"]["all"]["mean_dice"]
    ax.set_title(f"DICE per instance (mean {mean:.3f})" if mean is not None else "DICE per instance")
    ax.set_xlabel("DICE vs ground truth")
    ax.set_ylabel("instances")
    fig.suptitle(f"{summary['segmenter']} + {summary['classifier']} on {summary['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(v: Optional[float], spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def print_summary(s: dict, cams: Sequence[str]) -> None:
    print(f"\n[demo] segmenter {s['segmenter']}, classifier {s['classifier']}, device {s['device']}, "
          f"{s['seconds']} s in all")
    cols = ("camera", "frames", "instances", "mean DICE", "class acc", "e2e p50 s", "e2e p95 s")
    print(f"{cols[0]:<12}" + "".join(f"{c:>11}" for c in cols[1:]))
    for c in cams:
        sc, e2e = s["scores"][c], s["end_to_end_latency_s"][c]
        row = (sc["frames"], sc["instances"], _fmt(sc["mean_dice"]), _fmt(sc["class_accuracy"]),
               _fmt(e2e["latency_p50_s"], ".2f"), _fmt(e2e["latency_p95_s"], ".2f"))
        print(f"{c:<12}" + "".join(f"{v:>11}" for v in row))
    a = s["scores"]["all"]
    print(f"{'all':<12}{a['frames']:>11}{a['instances']:>11}{_fmt(a['mean_dice']):>11}")
    print("stage latency p50/p95 ms: "
          + ", ".join(f"{k} {v['p50']}/{v['p95']}" for k, v in s["stage_latency_ms"].items()))
    print(f"outputs: {s['outputs']['mcap']}, {len(s['outputs']['overlays'])} overlay PNGs, {s['outputs']['figure']}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except KeyboardInterrupt:
        print("[demo] interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError) as e:
        print(f"[demo] failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
