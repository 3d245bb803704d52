"""End-to-end demo without ros2 launch: a generated camera rig -> replay -> perception -> association -> recorder.

    python -m scrap_perception.ros.demo [--cameras 3] [--frames 5] [--out out/demo]

1. generates a multi-view dataset (``scrap-tools synth --cameras N``: rig.yaml, images of one scrap pile
   from N cameras per frame, COCO annotations with ``object_id``, objects.json with the true 3D positions);
2. starts as separate processes the perception node (``sync.policy: sets``: one ScrapViewSet per camera
   set on ``scrap_views``, beside each camera's ScrapInstanceArray), the association node (ScrapObjects on
   ``scrap_objects``), the recorder and the replay (images, CameraInfo from the rig, ground-truth boxes,
   jittered, as Detection2DArray; in lockstep with the node's results);
3. prints and writes a summary: per camera frames, instances, mean DICE of the published masks, class
   accuracy, latency; and the association of the recorded ScrapObjects against the ground truth
   (``scrap-tools eval-assoc``'s metrics: pairwise P/R/F1, objects recovered, 3D position error).
Outputs under --out: demo.mcap (every topic: open it in Foxglove or `ros2 bag info`), overlays/*.png,
summary.json, summary.png, association.jpg (the views of one set, masks coloured by ScrapObject id), data/,
logs/. Real checkpoints are used when given (--sam-checkpoint / SCRAP_SAM_CHECKPOINT, --clip-checkpoint /
SCRAP_CLIP_CHECKPOINT); otherwise the weight-free GrabCut segmenter and no classifier.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

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
    ap.add_argument("--cameras", type=int, default=3, help="cameras on a ring around the pile (default 3)")
    ap.add_argument("--frames", type=int, default=5, help="camera sets; the pile moves 5 cm per set (default 5)")
    ap.add_argument("--image-size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    ap.add_argument("--objects", type=int, nargs=2, default=(8, 14), metavar=("MIN", "MAX"),
                    help="pieces in the pile (default 8 14)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jitter", type=float, default=8.0, help="detector-like box noise, pixels (default 8)")
    ap.add_argument("--rate", type=float, default=2.0, help="replay camera sets per second at most (default 2)")
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
    if args.cameras < 2:
        ap.error("--cameras must be >= 2 (the association needs two views)")
    if not 1 <= args.objects[0] <= args.objects[1]:
        ap.error("--objects needs 1 <= MIN <= MAX")
    return args


def node_params(args: argparse.Namespace, cameras: Sequence[str], frame_id: str) -> dict[str, Any]:
    """Parameter overrides of the perception node: camera sets; real checkpoints when configured, else GrabCut."""
    p: dict[str, Any] = {"camera_names": list(cameras), "publish_overlay": True, "sync.policy": "sets",
                         "sync.frame_id": frame_id}
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
    """Follows the nodes' /diagnostics and the ROS graph from this process."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        from .diagnostics import parse

        self._rclpy = rclpy
        rclpy.init(args=[])
        self.node = rclpy.create_node("scrap_demo_monitor")
        self.latest: dict = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self.latest.update(parse(m)), 10)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._rclpy.spin_once(self.node, timeout_sec=max(0.0, min(0.1, end - time.monotonic())))

    def spin_until(self, done: Callable[[], bool], timeout: float, check: Callable[[], None]) -> bool:
        """Spins until ``done()`` (True) or ``timeout`` s (False); ``check()`` raises to give up early."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if done():
                return True
            check()
            self.spin(0.25)
        return done()

    def chain_connected(self) -> bool:
        """The association node and the recorder read the node's scrap_views; the recorder the objects."""
        n = self.node
        return (n.count_publishers("/scrap_views") >= 1 and n.count_subscribers("/scrap_views") >= 2
                and n.count_publishers("/scrap_objects") >= 1 and n.count_subscribers("/scrap_objects") >= 1)

    def status(self, suffix: str) -> dict:
        return next((v for k, v in self.latest.items() if k.endswith(suffix)), {})

    def camera(self, cam: str) -> dict:
        return self.status(f"camera {cam}")

    def close(self) -> None:
        self.node.destroy_node()
        self._rclpy.try_shutdown()


def run(args: argparse.Namespace) -> dict:
    """Generates the data, runs the chain as processes, returns (and prints, writes) the summary."""
    from tqdm import tqdm

    from ..multiview.rig import load_rig
    from ..tools.synth_cmd import generate_multiview

    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    logs, overlays, data = out / "logs", out / "overlays", out / "data"
    logs.mkdir(parents=True)
    ann = generate_multiview(data, args.cameras, args.frames, seed=args.seed, image_size=tuple(args.image_size),
                             objects=tuple(args.objects), preview=0)
    rig = load_rig(data / "rig.yaml")
    cams, n_sets = rig.names, args.frames
    # In this process's environment: the monitor here and the node processes (node_env) share them.
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random().randint(1, 100)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if fastdds_profile():  # the installed package's share directory too, not only the source tree's
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(fastdds_profile()))
    mcap = out / "demo.mcap"
    per_cam = ("image_raw", "camera_info", "detections", "scrap_instances", "scrap_overlay")
    topics = [f"/{c}/{t}" for c in cams for t in per_cam]
    topics += ["/scrap_views", "/scrap_objects", "/scrap_object_markers", "/diagnostics"]
    print(f"[demo] ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}; cameras {cams}; segmenter "
          f"{args.sam_model_type if args.sam_checkpoint else 'grabcut (weight-free, NOT SAM)'}; classifier "
          f"{args.clip_model if args.clip_checkpoint else 'none'}; logs in {logs}", flush=True)
    monitor = Monitor()
    procs: list[NodeProcess] = []
    t_start = time.monotonic()

    def check() -> None:
        for p in procs:
            if p.name != "replay" and not p.alive():
                raise RuntimeError(f"{p.name} exited with {p.poll()}:\n{p.tail()}")
        if time.monotonic() - t_start > args.timeout:
            raise TimeoutError(f"demo did not finish in {args.timeout} s; see {logs}")

    try:
        procs.append(start("perception_node", "perception_node",
                           ros_args(config_file(), node_params(args, cams, rig.frame_id)), logs))
        procs.append(start("association_node", "association_node", ros_args(None, {"rig_file": data / "rig.yaml"}),
                           logs))
        procs.append(start("recorder", "recorder_node", ros_args(None, {
            "output": mcap, "topics": topics, "overlay_dir": overlays, "summary": out / "recorder_summary.json"}),
            logs))
        # Every set must reach the association node and the recorder: the replay starts once they read the
        # node's sets (and then waits itself for the node and the recorder on every camera topic).
        if not monitor.spin_until(monitor.chain_connected, args.timeout, check):
            raise TimeoutError(f"the nodes did not connect in {args.timeout} s; see {logs}")
        procs.append(start("replay", "replay_node", ros_args(None, {
            "source": ann, "camera_names": cams, "rig_file": data / "rig.yaml", "rate": args.rate,
            "jitter_px": args.jitter, "lockstep": True, "wait_for_subscribers": 300.0, "min_subscribers": 2,
            "seed": args.seed, "linger": 1.0}), logs))
        replay = procs[-1]
        bar = tqdm(total=n_sets, desc="camera sets associated", unit="set")

        def sets_done() -> int:
            return int(monitor.status(": association").get("sets_processed", 0))

        def progress() -> bool:
            if sets_done() > bar.n:
                bar.update(sets_done() - bar.n)
            return not replay.alive()

        monitor.spin_until(progress, args.timeout, check)
        if replay.poll() != 0:
            raise RuntimeError(f"replay exited with {replay.poll()}:\n{replay.tail()}")
        monitor.spin_until(lambda: sets_done() >= n_sets, 30.0, check)
        monitor.spin(2.5)  # the last objects reach the recorder, one more diagnostics round
        bar.update(sets_done() - bar.n)
        bar.close()
    finally:
        codes = {p.name: p.stop() for p in reversed(procs)}
        diag = {"pipeline": monitor.status(": pipeline"), "association": monitor.status(": association"),
                **{c: monitor.camera(c) for c in cams}}
        monitor.close()
    bad = {k: v for k, v in codes.items() if v not in (0, None)}
    if bad:
        raise RuntimeError(f"processes ended with errors {bad}; see {logs}")
    return summarize(args, out, cams, mcap, diag, time.monotonic() - t_start)


# --- evaluation of the recording ------------------------------------------------------------------------
def read_recording(mcap: Path, cameras: Sequence[str]) -> dict[str, Any]:
    """The recorded per-camera arrays ({camera: [msg]}), and the sets and object arrays by header stamp."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    arrays: dict[str, list] = defaultdict(list)
    sets, objects = {}, {}
    topics = [f"/{c}/scrap_instances" for c in cameras] + ["/scrap_views", "/scrap_objects"]
    with open(mcap, "rb") as f:
        for _, channel, _, msg in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages(topics):
            stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            if channel.topic == "/scrap_views":
                sets[stamp] = msg
            elif channel.topic == "/scrap_objects":
                objects[stamp] = msg
            else:
                arrays[channel.topic.split("/")[1]].append(msg)
    return {"arrays": arrays, "sets": sets, "objects": objects}


def segmentation_scores(rec: dict, ann_file: Path, cameras: Sequence[str]) -> tuple[dict, list[float]]:
    """Mean DICE (and class accuracy when classified) of every published instance vs its ground truth
    (the replay's Detection2D.id is the annotation id); and the list of per-instance DICE."""
    from ..data import CocoDataset
    from ..metrics import dice
    from .conversions import mask_from_msg

    ds = CocoDataset(ann_file)
    gt = {str(inst.ann_id): inst for i in range(len(ds)) for inst in ds[i].instances}
    out, all_dice = {}, []
    for c in cameras:
        dices, correct, classified, n = [], 0, 0, 0
        for msg in rec["arrays"].get(c, []):
            for inst in msg.instances:
                n += 1
                g = gt.get(inst.id)
                if g is None:
                    continue
                dices.append(dice(mask_from_msg(inst, (msg.image_height, msg.image_width)), g.mask))
                if inst.class_id != 255:
                    classified += 1
                    correct += int(inst.class_id == g.class_id)
        out[c] = {"frames": len(rec["arrays"].get(c, [])), "instances": n,
                  "mean_dice": float(np.mean(dices)) if dices else None,
                  "class_accuracy": correct / classified if classified else None}
        all_dice += dices
    out["all"] = {"frames": sum(out[c]["frames"] for c in cameras),
                  "instances": sum(out[c]["instances"] for c in cameras),
                  "mean_dice": float(np.mean(all_dice)) if all_dice else None}
    return out, all_dice


def set_truth(ds: Any, frame_of: dict[str, int], view_set: Any) -> tuple[Optional[int], dict[tuple[str, str], int]]:
    """The frame of a recorded ScrapViewSet (from its instance ids, the annotation ids; ``frame_of``:
    annotation id -> frame) and the ground truth of that frame: every annotated view (camera, annotation
    id) -> object_id."""
    frames = [frame_of[i.id] for v in view_set.views for i in v.instances if i.id in frame_of]
    if not frames:
        return None, {}
    frame = max(set(frames), key=frames.count)
    return frame, {(cam, str(a["id"])): int(a["object_id"]) for (f, cam), im in ds.images.items() if f == frame
                   for a in ds.anns.get(im["id"], [])}


def association_scores(rec: dict, data: Path) -> dict:
    """The recorded ScrapObjects against the ground truth, with ``scrap-tools eval-assoc``'s metrics: pairwise
    P/R/F1 over (camera, instance id) views, objects seen by >= 2 cameras recovered, views exactly right,
    3D error (m, % of the scene extent), ID switches."""
    from ..tools.eval_assoc import TABLE_HEADER, Tally, load_set, pair_counts, represented, scene_extent, \
        seen_twice, table_row

    ds = load_set(data)
    frame_of = {str(a["id"]): f for (f, _), im in ds.images.items() for a in ds.anns.get(im["id"], [])}
    tally, extents, exact = Tally(), [], 0
    for stamp in sorted(rec["objects"]):
        arr, view_set = rec["objects"][stamp], rec["sets"].get(stamp)
        frame, truth = set_truth(ds, frame_of, view_set) if view_set is not None else (None, {})
        if frame is None:
            continue
        eligible = seen_twice(truth)
        groups = [[m for m in zip(o.cameras, o.instance_ids) if m in truth] for o in arr.objects]
        pred = {m: k for k, g in enumerate(groups) for m in g}
        tp, n_pred, n_true = pair_counts(pred, truth)
        tally.tp, tally.n_pred, tally.n_true = tally.tp + tp, tally.n_pred + n_pred, tally.n_true + n_true
        tally.sets += 1
        tally.detections += sum(len(v.instances) for v in view_set.views)
        tally.eligible += len(eligible)
        views_of = defaultdict(set)
        for ref, oid in truth.items():
            views_of[oid].add(ref)
        exact += sum(views_of[oid] in [set(g) for g in groups] for oid in eligible)
        extents.append(scene_extent(ds.truth[frame]))
        named = [k for k, g in enumerate(groups) if g]  # (every member id is an annotation id)
        for oid, g in represented([groups[k] for k in named], truth).items():
            obj, true = arr.objects[named[g]], np.asarray(ds.truth[frame][oid]["position"], float)
            tally.recovered += oid in eligible
            tally.errors.append(float(np.linalg.norm([obj.position.x - true[0], obj.position.y - true[1],
                                                      obj.position.z - true[2]])))
            tally.reprojection.append(float(obj.reprojection_error))
            if oid in tally.last_track and tally.last_track[oid] != obj.id:
                tally.switches += 1
            tally.last_track[oid] = obj.id
    extent = float(np.median(extents)) if extents else float("nan")
    row = dict(zip(TABLE_HEADER, table_row("recorded", "node", tally, extent)))
    keep = ("Sets", "Detections", "True pairs", "Precision", "Recall", "F1", "Objects (>=2 views)", "Recovered",
            "3D median (m)", "3D p95 (m)", "3D median (% extent)", "3D p95 (% extent)", "ID switches")
    return {**{k: row[k] for k in keep}, "Exact views": exact, "Scene extent (m)": extent,
            "Object arrays": len(rec["objects"]), "View sets": len(rec["sets"]),
            "Objects published": sum(len(a.objects) for a in rec["objects"].values())}


# --- summary --------------------------------------------------------------------------------------------
STAGES = tuple(s for s in NODE_STAGES if s != "batch")  # per frame; "batch" is per batch
COUNTERS = ("images_in", "paired", "processed", "published", "dropped", "expired.total", "rejected.total", "instances")
ASSOC_COUNTERS = ("sets_in", "sets_processed", "objects", "views", "unassociated_views", "rejected.total",
                  "latency.associate.p50_ms", "latency.associate.p95_ms")


def summarize(args: argparse.Namespace, out: Path, cams: Sequence[str], mcap: Path, diag: dict, seconds: float
              ) -> dict:
    """summary.json, summary.png, association.jpg and the printed tables."""
    rec = read_recording(mcap, cams)
    scores, dices = segmentation_scores(rec, out / "data" / "annotations.json", cams)
    assoc = association_scores(rec, out / "data")
    recorder = json.loads((out / "recorder_summary.json").read_text())
    pngs = sorted((out / "overlays").glob("*.png"))
    if pngs:
        shutil.copy(pngs[0], out / "overlay_example.png")
    pipe = diag["pipeline"]
    summary = {
        "segmenter": pipe.get("segmenter"), "classifier": pipe.get("classifier"), "device": pipe.get("device"),
        "seconds": round(seconds, 1), "cameras": list(cams), "sets_replayed": args.frames,
        "frames_replayed": args.frames * len(cams), "scores": scores, "association": assoc,
        "end_to_end_latency_s": {c: {k: recorder["cameras"].get(c, {}).get(k) for k in ("latency_p50_s",
                                                                                        "latency_p95_s")}
                                 for c in cams},
        "stage_latency_ms": {s: {q: pipe.get(f"latency.{s}.{q}_ms") for q in ("p50", "p95")} for s in STAGES},
        "node_counters": {c: {k: diag[c].get(k) for k in COUNTERS} for c in cams},
        "association_counters": {k: diag["association"].get(k) for k in ASSOC_COUNTERS},
        "outputs": {"mcap": str(mcap), "overlays": [str(p) for p in pngs], "figure": str(out / "summary.png"),
                    "association_figure": str(out / "association.jpg")},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    plot(summary, cams, dices, pngs, out / "summary.png")
    first = min(rec["objects"], default=None)
    if first is not None and first in rec["sets"]:
        association_figure(rec["sets"][first], rec["objects"][first], out / "data", out / "association.jpg")
    print_summary(summary, cams)
    return summary


def plot(summary: dict, cams: Sequence[str], dices: Sequence[float], pngs: Sequence[Path], path: Path) -> None:
    """One overlay per camera and the histogram of per-instance DICE."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    firsts = [next((p for p in pngs if p.name.startswith(f"{c}_")), None) for c in cams]
    fig, axes = plt.subplots(1, len(cams) + 1, figsize=(5 * len(cams) + 4, 4.6),
                             gridspec_kw={"width_ratios": [16] * len(cams) + [9]})
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


def association_figure(view_set: Any, objects: Any, data: Path, path: Path, width: int = 640) -> None:
    """The set's views side by side (each ``width`` px wide), every published mask filled and outlined in the
    colour of its ScrapObject and labelled with the object id; masks of no object: grey outline."""
    import cv2

    from .conversions import mask_from_msg

    coco = json.loads((data / "annotations.json").read_text(encoding="utf-8"))
    image_of = {str(a["id"]): a["image_id"] for a in coco["annotations"]}
    images = {im["id"]: im for im in coco["images"]}
    owner = {m: o.id for o in objects.objects for m in zip(o.cameras, o.instance_ids)}
    ids = sorted({o.id for o in objects.objects})
    hsv = np.uint8([[[(37 * k) % 180, 220, 255] for k in range(len(ids))]])
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0] if ids else []
    colours = {oid: tuple(int(c) for c in v) for oid, v in zip(ids, bgr)}
    panels = []
    for view in view_set.views:
        image_id = next((image_of[i.id] for i in view.instances if i.id in image_of), None)
        hw = (view.image_height, view.image_width)
        img = cv2.imread(str(data / images[image_id]["file_name"])) if image_id is not None else \
            np.zeros((*hw, 3), np.uint8)
        fill, labels = img.copy(), []
        for inst in view.instances:
            mask = mask_from_msg(inst, hw).astype(np.uint8)
            oid = owner.get((view.camera_name, inst.id))
            colour = colours[oid] if oid is not None else (160, 160, 160)
            if oid is not None:
                fill[mask > 0] = colour
                ys, xs = np.nonzero(mask)
                labels.append((str(oid), (int(xs.mean()), int(ys.mean()))))
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(img, contours, -1, colour, 2)
        img = cv2.addWeighted(fill, 0.45, img, 0.55, 0)
        for text, (x, y) in labels:
            for colour, thick in (((0, 0, 0), 4), ((255, 255, 255), 1)):
                cv2.putText(img, text, (x - 8, y + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, thick, cv2.LINE_AA)
        img = cv2.resize(img, (width, round(img.shape[0] * width / img.shape[1])), interpolation=cv2.INTER_AREA)
        caption = (f"{view.camera_name} frame {images[image_id]['frame'] if image_id is not None else '?'}: "
                   f"{len(view.instances)} masks, {len(labels)} in objects")
        img[:30] //= 3
        cv2.putText(img, caption, (8, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        panels.append(img)
    h = max(p.shape[0] for p in panels)
    row = np.hstack([np.pad(p, ((0, h - p.shape[0]), (0, 4), (0, 0)), constant_values=255) for p in panels])
    cv2.imwrite(str(path), row, [cv2.IMWRITE_JPEG_QUALITY, 80])


def _fmt(v: Optional[float], spec: str = ".3f") -> str:
    return "n/a" if v is None or v != v else format(v, spec)


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
    r = s["association"]
    print(f"association ({r['Object arrays']} ScrapObjectArrays for {r['View sets']} ScrapViewSets, "
          f"{r['Objects published']} objects) vs ground truth:")
    print(f"  pairwise precision {_fmt(r['Precision'])}  recall {_fmt(r['Recall'])}  F1 {_fmt(r['F1'])} "
          f"({r['True pairs']} true pairs); objects seen by >= 2 cameras: {r['Objects (>=2 views)']}, recovered "
          f"{_fmt(r['Recovered'])}, with exactly their views {r['Exact views']}; ID switches {r['ID switches']}")
    print(f"  3D position error median {_fmt(r['3D median (m)'])} m ({_fmt(r['3D median (% extent)'], '.2f')} %), "
          f"p95 {_fmt(r['3D p95 (m)'])} m ({_fmt(r['3D p95 (% extent)'], '.2f')} %) of a "
          f"{_fmt(r['Scene extent (m)'], '.2f')} m scene; association p50/p95 "
          f"{s['association_counters']['latency.associate.p50_ms']}/"
          f"{s['association_counters']['latency.associate.p95_ms']} ms per set")
    o = s["outputs"]
    print(f"outputs: {o['mcap']}, {len(o['overlays'])} overlay PNGs, {o['figure']}, {o['association_figure']}")


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
