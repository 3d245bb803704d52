"""The benchmark's capacity mode (``--modes capacity``): how many frames the perception node's ROS side
answers per second when the models cost nothing, the ceiling a GPU's model time must fit under.

Two processes beside the benchmark: the real perception node (``scrap_perception.ros.bench_node``:
PerceptionNode with its subscriptions, pairing, worker hand-off, publishing and diagnostics; its pipeline
returns precomputed results, ``--capacity-boxes`` instances per frame with box-sized masks, 7 class
probabilities and 512-float embeddings) and the driver (bench_driver.capacity). The driver sends each of
``--capacity-cameras`` cameras a ``--capacity-image-size`` rgb8 image and its Detection2DArray (same stamp)
at ``--capacity-rate`` Hz for ``--capacity-seconds``, then each camera's next frame as soon as its previous
one is answered (closed loop) for as long again. Per phase: arrays answered per second, frames sent,
answered and counted by the node (dropped for a newer frame, expired unpaired, failed), latency from
sending to the array's receipt (median, p95), and the accounting: every frame sent is answered or counted
(``accounting``). The goal: the 30 Hz phase answers every frame and the node answers >= cameras x rate
arrays/s. The driver also times the node's per-frame conversions alone (bench_driver._conversion_costs),
against their goals (CONVERSION_GOALS).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Mapping

from ...ros.processes import NodeProcess
from .frames import make_frames, save_frames
from .ros_session import LOGS, NAMESPACES, DriverSession, camera_names, node_args, unavailable_reason

BENCH_NODE_MODULE = "scrap_perception.ros.bench_node"
# Seconds (medians, each alone) the node's per-frame ROS work may take on this CPU at 1280x720.
CONVERSION_GOALS = {"image_receive_s": 0.001, "array_build_publish_s": 0.002}
PAIRING_MAX_AGE = 1.0  # the node's pairing.max_age here: an unpaired frame is counted 1 s after it came
PHASES = ("rate", "closed_loop")


class CapacitySession(DriverSession):
    """The model-free node (bench_node, ``cameras`` cameras) and the driver; see the module docstring."""

    def __init__(self, frames_path: Path, cameras: int, out_dir: Path, seed: int = 0,
                 startup_timeout: float = 120.0) -> None:
        super().__init__(out_dir)
        params = {"camera_names": camera_names(cameras), "autostart": False, "publish_overlay": False,
                  "log_throttle": 60.0, "diagnostics_period": 0.5, "pairing.max_age": PAIRING_MAX_AGE}
        try:
            args = ["--seed", str(seed), *node_args(params, "capacity")]
            self.nodes["capacity"] = NodeProcess(BENCH_NODE_MODULE, args, out_dir / LOGS["capacity"])
            self._start_driver(frames_path, [{"name": "capacity", "namespace": NAMESPACES["capacity"],
                                              "cameras": camera_names(cameras), "raw": True,
                                              "node_pid": self.nodes["capacity"].pid}],
                               startup_timeout, "capacity_spec.json")
        except BaseException:
            self.close()
            raise

    def capacity(self, rate_hz: float, seconds: float, boxes: int, warmup: int = 3) -> dict[str, Any]:
        """The driver's phases (bench_driver.capacity)."""
        drain = PAIRING_MAX_AGE + 1.5
        return self._request({"cmd": "capacity", "rate_hz": rate_hz, "seconds": seconds, "boxes": boxes,
                              "warmup": warmup, "drain_s": drain}, 2 * seconds + 2 * drain + 60.0 + 5.0 * warmup)


def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The capacity mode's results ({"skipped": why} when ROS is not here, {"error": why} when it failed)."""
    reason = unavailable_reason()
    if reason:
        return {"skipped": reason}
    h, w = args.capacity_image_size
    frames = make_frames(args.capacity_cameras, args.capacity_boxes, (h, w), args.seed)
    try:
        with tempfile.TemporaryDirectory(dir=out, prefix="capacity-") as tmp:
            path = save_frames(Path(tmp) / "frames.npz", frames)
            with CapacitySession(path, args.capacity_cameras, out, args.seed) as session:
                res = session.capacity(args.capacity_rate, args.capacity_seconds, args.capacity_boxes)
                end = session.finish()
    except RuntimeError as e:
        return {"error": str(e)}
    res.update(rate_hz=args.capacity_rate, conversions=end["conversions"],
               node_peak_rss_mb=end["nodes"]["capacity"]["peak_rss_mb"])
    for phase in res["phases"].values():
        phase["accounting"] = accounting(phase)
    res["verdict"] = verdict(res)
    return res


def accounting(phase: Mapping[str, Any]) -> dict[str, Any]:
    """Every frame sent is answered or counted by the node (dropped, expired unpaired, failed, not
    published): ``unaccounted`` = sent - answered - counted, 0 when it ``holds``; ``never_reached`` =
    images the node never received (best-effort transport), ``lost_on_return`` = arrays published but
    not received."""
    n = phase["node"]
    counted = n["dropped"] + n["expired.total"] + n["failed"] + n["publish_error"]
    unaccounted = phase["sent"] - phase["answered"] - counted
    return {"counted": counted, "unaccounted": unaccounted, "never_reached": phase["sent"] - n["images_in"],
            "lost_on_return": n["published"] - phase["answered"], "holds": unaccounted == 0}


def verdict(res: Mapping[str, Any]) -> dict[str, str]:
    """Goals: the rate phase answers every frame, the node answers >= cameras x rate arrays/s (closed
    loop); the conversions within CONVERSION_GOALS."""
    rate, closed = res["phases"]["rate"], res["phases"]["closed_loop"]
    out = {"every_frame_answered": "met" if rate["answered"] == rate["sent"] else "missed",
           "arrays_per_s": "met" if closed["arrays_per_s"] >= res["cameras"] * res["rate_hz"] else "missed"}
    out.update({k: "met" if v <= CONVERSION_GOALS[k] else "missed"
                for k, v in conversion_costs(res["conversions"]).items()})
    return out


def conversion_costs(conv: Mapping[str, Any]) -> dict[str, float]:
    """The driver's conversion timings (bench_driver._conversion_costs) as the goals name them."""
    return {"image_receive_s": conv["image_receive_s"],
            "array_build_publish_s": conv["array_build_s"] + conv["array_publish_s"]}


def markdown(cap: Mapping[str, Any]) -> list[str]:
    """bench.md's lines of the capacity mode: a row per phase, the accounting and the goals."""
    if "phases" not in cap:
        return ["", f"Capacity not measured: {cap.get('skipped') or cap.get('error')}."]

    def f(v: float, digits: int = 3) -> str:
        return "—" if v is None or v != v else f"{v:.{digits}f}"

    h, w = cap["image_hw"]
    lines = ["", f"Capacity: the perception node without models (precomputed results of {cap['boxes']} instances, "
             f"box-sized masks, embeddings) fed {cap['cameras']} cameras of {w}x{h} rgb8 + detections, "
             f"{cap['seconds']:g} s per phase; latency = send -> array received, seconds.", "",
             "| capacity | sent | sent/s | answered | arrays/s | dropped | expired | unaccounted | latency median "
             "| latency p95 |", "|" + "---|" * 10]
    for name in PHASES:
        p = cap["phases"][name]
        label = f"{cap['cameras']} x {p['rate_hz']:g} Hz" if name == "rate" else "closed loop"
        lines.append(f"| {label} | {p['sent']} | {f(p['sent_per_s'], 1)} | {p['answered']} | "
                     f"{f(p['arrays_per_s'], 1)} | {p['node']['dropped']} | {p['node']['expired.total']} | "
                     f"{p['accounting']['unaccounted']} | {f(p['latency_median_s'])} | {f(p['latency_p95_s'])} |")
    v, closed = cap["verdict"], cap["phases"]["closed_loop"]
    books = [f"{name} {'holds' if acc['holds'] else 'differs'} ({acc['unaccounted']} unaccounted, "
             f"{acc['never_reached']} never reached the node)"
             for name, acc in ((n, cap["phases"][n]["accounting"]) for n in PHASES)]
    stages = [f"{s} {f(closed['node_latency_ms'][f'{s}.p50'], 2)}/{f(closed['node_latency_ms'][f'{s}.p95'], 2)}"
              for s in ("convert", "publish", "total")]
    lines += ["", f"Goals: every frame at {cap['cameras']} x {cap['rate_hz']:g} Hz answered: "
              f"{v['every_frame_answered']}; >= {cap['cameras'] * cap['rate_hz']:g} arrays/s: "
              f"{f(closed['arrays_per_s'], 1)} ({v['arrays_per_s']}). Accounting (sent = answered + counted by the "
              f"node): {'; '.join(books)}. Node stages (its last 512 frames, ms p50/p95): {', '.join(stages)}; node "
              f"peak RSS {f(cap['node_peak_rss_mb'], 0)} MiB.", conversion_goals_line(cap["conversions"])]
    return lines


def conversion_goals_line(conv: Mapping[str, Any]) -> str:
    """The conversion costs against CONVERSION_GOALS, one sentence for bench.md."""
    cost = conversion_costs(conv)
    ok = {k: "met" if v <= CONVERSION_GOALS[k] else "missed" for k, v in cost.items()}
    return (f"Goals: image receive + convert + pair {1000 * cost['image_receive_s']:.2f} ms (<= "
            f"{1000 * CONVERSION_GOALS['image_receive_s']:g} ms: {ok['image_receive_s']}), build + publish of the "
            f"{conv['array_instances']}-instance box-sized array {1000 * cost['array_build_publish_s']:.2f} ms (<= "
            f"{1000 * CONVERSION_GOALS['array_build_publish_s']:g} ms: {ok['array_build_publish_s']}).")
