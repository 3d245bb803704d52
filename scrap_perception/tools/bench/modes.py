"""The benchmark's measurements: the models under test and the floor, core and naive modes in this
process, the ros mode and the camera-set comparison (sets) through ros_session. See ``cli`` for what each
mode is.

For every configuration (N boxes, C cameras) the in-process modes run interleaved, call by call, so a
drift of the shared machine falls on all of them alike; the peak memory of a mode is the highest around
any of its calls. The ros mode takes part through ros_session.RosSession (node and driver processes).
The camera-set comparison runs after the configurations: the same frame set to the ``sync.policy:
independent`` node and to the ``sets`` node, interleaved set by set.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .. import ToolError
from . import capacity, ros_session, sets_mode
from .flops import frame_flops, peak_flops, peak_fractions, unit_flops
from .floor import Floor, best_chunk
from .frames import Frame, save_frames
from .timing import Clock, ModelTime, PeakMemory, Samples, measure_interleaved

MODES = ("floor", "core", "naive", "ros", "sets", "precision", "capacity")
GOAL_CONFIG = (20, 1)  # (boxes, cameras) the goals are stated for: measured at least 3 times


def model_time(segmenter: Any, classifier: Any, clock: Clock) -> ModelTime:
    """Timers on every model forward a SAM segmenter and a CN-CLIP classifier make (until restored)."""
    mt = ModelTime(clock)
    sam, clip = segmenter.model, classifier.model
    mt.wrap(segmenter.image_encoder, "forward", "sam_image_encoder")  # the encoder it runs (see SamSegmenter)
    mt.wrap(sam.prompt_encoder, "forward", "sam_prompt_encoder")
    mt.wrap(sam.mask_decoder, "forward", "sam_mask_decoder")
    mt.wrap(sam.mask_decoder, "predict_masks", "sam_mask_decoder")
    mt.wrap(classifier.visual, "forward", "clip_image")  # the encoder it runs (a low-precision copy at bf16)
    mt.wrap(clip.bert, "forward", "clip_text")
    return mt


def classifier_name(args: argparse.Namespace, out: Path) -> str:
    """--classifier, or with --quick a tiny CN-CLIP config written to ``out``."""
    if not args.quick:
        return args.classifier
    from ...classification import small_clip_config

    path = out / "small_clip.json"
    path.write_text(json.dumps(small_clip_config()))
    return str(path)


class Models:
    """The pipeline under test and everything that measures against it, sharing one set of modules."""

    def __init__(self, args: argparse.Namespace, device: torch.device, clock: Clock, out: Path) -> None:
        from ...classification import build_classifier
        from ...pipeline import Pipeline
        from ...segmentation import build_segmenter
        from .naive import NaivePipeline

        torch.manual_seed(args.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "random weights": said once in the report
            self.segmenter = build_segmenter(args.segmenter, device=str(device), precision=args.precision,
                                             chunk_size=args.chunk_size, arch=args.arch)
            self.classifier_name = classifier_name(args, out)
            self.classifier = build_classifier(self.classifier_name, device=str(device), precision=args.precision)
        sam, clip = self.segmenter.model, self.classifier.model
        if getattr(self.segmenter, "hq", False):
            raise ToolError(f"--segmenter {args.segmenter}: the benchmark supports SAM and MobileSAM model types")
        with torch.no_grad():
            sam.mask_decoder.iou_prediction_head.layers[-1].bias += 1.0
        self.pipeline = Pipeline(self.segmenter, self.classifier)
        self.floor = Floor(sam, clip, device, self.segmenter.dtype, self.classifier.dtype,
                           self.classifier.batch_size, clock, args.seed, encoder=self.segmenter.image_encoder,
                           visual=self.classifier.visual, memory_format=self.segmenter.memory_format)
        self.naive = NaivePipeline(sam, self.segmenter.spec.package, clip, self.classifier.labels,
                                   self.classifier.crop_margin, self.classifier.background, device,
                                   self.segmenter.dtype, self.pipeline.min_mask_score, self.pipeline.min_area)
        self.clock = clock

    def model_time(self) -> ModelTime:
        return model_time(self.segmenter, self.classifier, self.clock)

    def save_weights(self, folder: Path) -> tuple[Path, Path]:
        """The benchmark's weights as checkpoint files the node loads (SAM layout; cn_clip's format)."""
        sam_path, clip_path = folder / "segmenter.pth", folder / "classifier.pt"
        torch.save(self.segmenter.model.state_dict(), sam_path)
        torch.save({"epoch": 0, "step": 0, "name": "bench", "state_dict": self.classifier.model.state_dict()},
                   clip_path)
        return sam_path, clip_path


class Bench:
    """Runs the modes over the configurations; ``results[(boxes, cameras)]`` collects what each measured."""

    def __init__(self, args: argparse.Namespace, models: Models, frames: Sequence[Frame], clock: Clock,
                 memory: PeakMemory) -> None:
        self.args, self.m, self.frames, self.clock, self.memory = args, models, frames, clock, memory
        self.configs = [(n, c) for c in args.cameras for n in args.boxes]
        self.results: dict[tuple[int, int], dict[str, Any]] = {
            cfg: {"boxes": cfg[0], "cameras": cfg[1]} for cfg in self.configs}
        self.memory_by_mode: dict[str, dict[str, float]] = {}
        self.chunks: dict[int, dict[str, Any]] = {}
        self.encoder_batches: dict[int, dict[str, Any]] = {}
        self.ros_conversions: Optional[dict[str, Any]] = None
        self.ros_skipped: Optional[str] = None
        self.camera_sets: Optional[dict[str, Any]] = None
        self.capacity: Optional[dict[str, Any]] = None  # the capacity mode's results (capacity.py)
        self.model_flops: Optional[dict[str, Any]] = None  # with the floor: FLOPs per unit, the GEMM peak

    def _warmup(self, n: int, c: int) -> int:
        """Warm-up calls: before each mode's first configuration of each camera count only."""
        first = next(cfg for cfg in self.configs if cfg[1] == c)
        return self.args.warmup if (n, c) == first else 0

    def _inputs(self, n: int, c: int) -> list[tuple[np.ndarray, list]]:
        return [(f.rgb, f.prompts(n)) for f in self.frames[:c]]

    def run(self, modes: Sequence[str], out: Path) -> None:
        """Measures core and, of ``modes``, floor, naive and ros for every configuration, the modes of a
        configuration interleaved (``measure_interleaved``), then with ``sets`` the camera-set comparison.
        The core's first call comes first: the floor classifies as many crops as it kept, naive is
        compared with its outputs, ros's timeout follows its time. A ROS part that cannot run or fails
        leaves the other modes' results standing (``ros_skipped`` says why)."""
        with contextlib.ExitStack() as stack:
            ros = self._ros_session(stack, out, "sets" in modes) if {"ros", "sets"} & set(modes) else None
            if "floor" in modes:
                self.model_flops = self._model_flops()
            mt = stack.enter_context(self.m.model_time())
            for n, c in tqdm(self.configs, desc="bench configurations", unit="config", file=sys.stderr):
                res = self.results[(n, c)]
                fns = {"core": self._core(n, c, res, mt)}
                if "floor" in modes:
                    fns["floor"] = self._floor(n, c, res)
                if "naive" in modes and c in self.args.naive_cameras:
                    fns["naive"] = self._naive(n, c, res)
                if "ros" in modes and ros is not None and not self.ros_skipped:
                    fns["ros"] = self._ros(n, c, res, ros)
                least = max(self.args.min_repeats, 3) if (n, c) == GOAL_CONFIG else self.args.min_repeats
                samples = measure_interleaved(fns, self.clock, self.args.repeats, self._warmup(n, c), least,
                                              self.args.budget, self.memory)
                self._collect(n, c, res, samples)
            if "sets" in modes and ros is not None and not self.ros_skipped:
                try:
                    self.camera_sets = self._camera_sets(ros)
                except RuntimeError as e:  # the configurations' results stand
                    self.ros_skipped = f"failed in the camera-set comparison: {e}"
            if ros is not None and not self.ros_skipped:
                self._finish_ros(ros, "ros" in modes)
        if "capacity" in modes:  # after the model nodes stopped: the machine is the model-free node's alone
            print("bench: capacity of the perception node without models", file=sys.stderr)
            self.capacity = capacity.run(self.args, out)
            if self.ros_conversions is None and "conversions" in self.capacity:
                self.ros_conversions = self.capacity["conversions"]

    def _finish_ros(self, ros: Any, round_trip: bool) -> None:
        """The model-free round trip (with the ros mode), the conversion costs, each node's peak memory
        and the sets node's accounting; the driver then exits."""
        trip = {}
        if round_trip:
            try:
                trip = ros.round_trip()
            except RuntimeError as e:  # the frame-set results stand
                trip = {"round_trip_error": str(e)}
        end = ros.finish()
        self.ros_conversions = dict(end["conversions"], fastdds_profile=end["fastdds_profile"], **trip)
        # Each node's peak since its start, loading the checkpoints included.
        self.memory_by_mode["ros_node"] = {"peak_rss_mb": end["nodes"]["independent"]["peak_rss_mb"]}
        # The node's own stage latencies over every frame it processed: what of the ros time is inference.
        self.ros_conversions["node_latency_ms"] = end["nodes"]["independent"].get("latency_ms", {})
        if self.camera_sets is not None:
            sets_node = end["nodes"]["sets"]
            self.memory_by_mode["ros_sets_node"] = {"peak_rss_mb": sets_node.pop("peak_rss_mb")}
            self.camera_sets["sets_node"] = sets_mode.accounting(sets_node, self.camera_sets["sent"])

    def _collect(self, n: int, c: int, res: dict, samples: Mapping[str, Samples]) -> None:
        for mode, smp in samples.items():
            if mode == "ros":  # the driver's own timing (this process only waited) and memory (the node's)
                ros = ros_result(smp.extras, res)
                if ros is not None:
                    res["ros"] = ros
                continue
            res[mode] = smp.as_dict()
            peak = self.memory_by_mode.setdefault(mode, {})
            for k, v in smp.peak.items():
                peak[k] = max(peak.get(k, v), v)
        core = samples["core"]
        res["core_shares"] = stage_shares(core.extras)
        res["core_model_calls"] = core.extras[-1]["calls"]
        if "floor" in samples:
            res["floor"]["parts_median_s"] = {k: float(np.median([e[k] for e in samples["floor"].extras]))
                                              for k in samples["floor"].extras[0]}
            res["floor"].update(chunk_size=self.chunks[n]["best"], encoder_batch=self.encoder_batches[c]["best"])
            flops = frame_flops(self.model_flops["unit"], c, n * c, res["instances"])
            res["floor"].update(flops=flops, peak_fraction=peak_fractions(
                flops, res["floor"]["parts_median_s"], self.model_flops["peak"]["flop_per_s"]))
        if "naive" in samples:
            res["naive_vs_core"] = compare(res["_core_results"], res.pop("_naive_results"),
                                           [f.rgb.shape[:2] for f in self.frames[:c]])
        del res["_core_results"], res["_core_last_s"]

    def _model_flops(self) -> dict[str, Any]:
        """FLOPs of one image, prompt and crop through the floor's models, and the device's GEMM peak at
        the models' precision (flops.py); measured before the configurations, outside the model timers."""
        print("bench: model FLOPs and the device's GEMM peak", file=sys.stderr)
        unit = unit_flops(self.m.floor, self.frames[0].rgb.shape[:2])
        return {"unit": unit, "peak": peak_flops(self.m.floor.device, self.m.floor.dtype, self.clock)}

    def _core(self, n: int, c: int, res: dict, mt: ModelTime) -> Callable[[], dict]:
        items = self._inputs(n, c)

        def call() -> dict:
            mt.reset()
            t0 = self.clock.now()
            out = self.m.pipeline.process_frames(items)
            wall = self.clock.now() - t0
            res["_core_results"] = out  # only the last call's results are kept (masks are large)
            res["_core_last_s"] = wall
            res["instances"] = sum(len(r.instances) for r in out)
            stages = {k: sum(r.timings.get(k, 0.0) for r in out) for k in ("encode", "mask_decode", "classify")}
            return {"wall": wall, "stages": stages, "model": dict(mt.seconds), "calls": dict(mt.calls)}

        return call

    def _floor(self, n: int, c: int, res: dict) -> Callable[[], dict]:
        """The floor's callable, its decoder chunk and encoder batch measured first (once per N, per C).
        It classifies as many crops as the core's last call kept masks (the core runs first)."""
        f = self.m.floor
        prompts = [f.prompt_tensors(fr.boxes[:n], fr.rgb.shape[:2]) for fr in self.frames[:c]]
        if n not in self.chunks:
            best, timings = best_chunk(self.m.segmenter, f.embedding, self.frames[0].rgb.shape[:2], n)
            self.chunks[n] = {"best": best, "median_s": {str(k): v for k, v in timings.items()},
                              "segmenter_chunk_size": self.m.segmenter.chunk_size}
        if c not in self.encoder_batches:
            best, timings = f.best_encoder_batch(c) if c > 1 else (1, {})
            self.encoder_batches[c] = {"best": best, "median_s": {str(k): v for k, v in timings.items()},
                                       "segmenter_encoder_batch": self.m.segmenter.encoder_batch}
        return f.frame(c, prompts, self.chunks[n]["best"], lambda: res["instances"], self.encoder_batches[c]["best"])

    def _naive(self, n: int, c: int, res: dict) -> Callable[[], None]:
        frames = self.frames[:c]

        def call() -> None:
            res["_naive_results"] = [self.m.naive.process(f.rgb, f.boxes[:n]) for f in frames]

        return call

    def _ros_session(self, stack: contextlib.ExitStack, out: Path, sets: bool) -> Optional[Any]:
        """The node(s) (with ``sets`` the sets node too) and driver processes (ros_session.RosSession) on
        the benchmark's weights and frames, closed with ``stack``; None (and ``ros_skipped`` set) when the
        ROS part cannot run."""
        self.ros_skipped = ros_session.unavailable_reason()
        if self.ros_skipped:
            return None
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=out, prefix="ros-")))
        frames_path = save_frames(tmp / "frames.npz", self.frames)
        sam_ckpt, clip_ckpt = self.m.save_weights(tmp)
        print(f"bench: starting the perception node{'s' if sets else ''} and the ROS driver", file=sys.stderr)
        try:
            return stack.enter_context(ros_session.RosSession(
                frames_path, node_params(self.args, self.m, sam_ckpt, clip_ckpt), out, len(self.frames),
                self.args.sets_cameras if sets else None))
        except RuntimeError as e:
            self.ros_skipped = f"failed: {e}"
            return None

    def _ros(self, n: int, c: int, res: dict, ros: Any) -> Callable[[], Optional[dict]]:
        def call() -> Optional[dict]:
            if self.ros_skipped:
                return None
            try:
                return ros.frame_set(n, c, timeout_s=60.0 + 10.0 * res["_core_last_s"])
            except RuntimeError as e:  # the in-process results stand; the report says why ros is missing
                self.ros_skipped = f"failed at N={n}, {c} camera(s): {e}"
                return None

        return call

    def _camera_sets(self, ros: Any) -> dict[str, Any]:
        """The camera-set comparison (sets_mode.compare), its timeout from the core's time of the set."""
        n, c = self.args.sets_boxes, self.args.sets_cameras
        print(f"bench: camera sets, {c} cameras x N={n}: independent vs sets node, {self.args.sets_repeats} sets "
              "each (interleaved)", file=sys.stderr)
        core = self.results.get((n, c), {}).get("core", {}).get("median_s")
        return sets_mode.compare(ros, n, c, self.args.sets_repeats, max(1, self.args.warmup), self.clock,
                                 600.0 if core is None else 60.0 + 10.0 * core)


def ros_result(extras: Sequence[Optional[dict]], res: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The ros mode's results from the driver's answers (None when it failed)."""
    if not extras or any(e is None for e in extras):
        return None
    kept = [e for e in extras if not e["missed"]]
    return {"median_s": float(np.median([e["set_s"] for e in kept])) if kept else float("nan"),
            "samples_s": [e["set_s"] for e in kept], "latency_s": [e["latency_s"] for e in kept],
            "missed": len(extras) - len(kept),
            "instances_equal_core": all(sum(e["instances"]) == res["instances"] for e in kept)}


def stage_shares(extras: Sequence[dict]) -> dict[str, Any]:
    """Median seconds of the model and non-model parts of the core frame (from the timed repeats).
    A non-model part = a pipeline stage's time minus the model time inside it."""
    def med(f) -> float:
        return float(np.median([f(e) for e in extras]))

    def outside(e: dict, stage: str, *models: str) -> float:
        return e["stages"][stage] - sum(e["model"].get(k, 0.0) for k in models)

    model = {k: med(lambda e, k=k: e["model"].get(k, 0.0))
             for k in ("sam_image_encoder", "sam_prompt_encoder", "sam_mask_decoder", "clip_image", "clip_text")}
    overhead = {
        "preprocess (resize, normalise, pad)": med(lambda e: outside(e, "encode", "sam_image_encoder")),
        "prompts + ROI mask upsampling": med(
            lambda e: outside(e, "mask_decode", "sam_prompt_encoder", "sam_mask_decoder")),
        "crops + similarity": med(lambda e: outside(e, "classify", "clip_image", "clip_text")),
        "pipeline (sanitize, thresholds, results)": med(lambda e: e["wall"] - sum(e["stages"].values())),
    }
    wall = med(lambda e: e["wall"])
    return {"wall_s": wall, "model_s": model, "overhead_s": overhead,
            "overhead_share": {k: v / wall for k, v in overhead.items()},
            "wall_over_model": med(lambda e: e["wall"] / sum(e["model"].values()))}


def compare(core_results: Sequence[Any], naive_results: Sequence[Sequence[Any]],
            shapes: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """Equality of the core's and the naive pipeline's outputs on the benchmark frames."""
    ious, same_class, cos, missing = [], 0, [], 0
    for res, naive, hw in zip(core_results, naive_results, shapes):
        by_index = {inst.index: inst for inst in naive}
        for inst in res.instances:
            ref = by_index.pop(int(inst.id[1:]), None)
            if ref is None:
                missing += 1
                continue
            full = inst.mask.full(hw)
            union = np.count_nonzero(full | ref.mask)
            ious.append(1.0 if union == 0 else np.count_nonzero(full & ref.mask) / union)
            same_class += int(inst.classification.class_id == ref.class_id)
            cos.append(float(np.dot(inst.classification.embedding, ref.embedding)))
        missing += len(by_index)
    return {"instances": len(ious), "unmatched": missing, "mask_iou_min": min(ious, default=float("nan")),
            "class_agreement": same_class / len(ious) if ious else float("nan"),
            "embedding_cos_min": min(cos, default=float("nan"))}


def node_params(args: argparse.Namespace, m: Models, sam_ckpt: Path, clip_ckpt: Path) -> dict[str, Any]:
    """Perception-node parameters for the benchmark's models, weights and thresholds."""
    from ...classification import BACKGROUNDS

    cls = m.classifier
    background = next((name for name, value in BACKGROUNDS.items() if value == cls.background), None)
    if background is None:
        raise ToolError(f"the classifier's crop background {cls.background!r} has no name the node takes")
    return {
        "segmenter.model_type": args.segmenter, "segmenter.checkpoint": str(sam_ckpt),
        "segmenter.arch": json.dumps(args.arch) if args.arch else "",
        "segmenter.device": str(m.segmenter.device), "segmenter.precision": m.segmenter.precision,
        "segmenter.chunk_size": int(m.segmenter.chunk_size), "segmenter.prompt_mode": m.pipeline.prompt_mode,
        "segmenter.encoder_batch": int(m.segmenter.encoder_batch),
        "classifier.model": m.classifier_name,
        "classifier.checkpoint": str(clip_ckpt), "classifier.device": str(cls.device),
        "classifier.precision": cls.precision, "classifier.batch_size": cls.batch_size,
        "classifier.crop_margin": float(cls.crop_margin), "classifier.background": background,
        "min_mask_score": m.pipeline.min_mask_score, "min_area": m.pipeline.min_area,
        "publish_overlay": True, "pairing.max_age": 600.0, "log_throttle": 60.0,
    }
