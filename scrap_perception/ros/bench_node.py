"""The benchmark's model-free perception node (``scrap-tools bench --modes capacity``): the real
PerceptionNode, its subscriptions, pairing, worker hand-off, publishing and diagnostics, with a pipeline
that returns precomputed results instead of running models, so what is measured is the ROS side alone.

    python -m scrap_perception.ros.bench_node [--seed S] --ros-args ...   (started by the benchmark)

A bench-only entry point, not a parameter of the product node: nobody can switch a deployed node to fake
results by mistake. ``PrecomputedPipeline`` answers every frame with one instance per prompt: a random
mask filling the prompt's box (box-sized, as trained weights give), 7 class probabilities and a 512-float
L2-normalised embedding; they are computed once per distinct list of boxes (the first frame of each
camera, in the benchmark's warm-up) and then returned as they are.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Sequence

import numpy as np

from ..classification.base import Classification
from ..masks import InstanceMask
from ..pipeline import FrameResult, Instance
from ..prompts import Prompt, box_point_prompt

CLASSES = 7
EMBEDDING = 512


def synthetic_instances(boxes: Sequence[Sequence[float]], image_hw: tuple[int, int],
                        rng: np.random.Generator, ids: Optional[Sequence[str]] = None) -> list[Instance]:
    """One instance per (x0, y0, x1, y1) pixel box: a random mask (70 % set) filling the box clipped to
    the image, random class probabilities and a random unit embedding."""
    h, w = image_hw
    out = []
    ids = list(ids) if ids is not None else [f"d{i}" for i in range(len(boxes))]
    for i, box in enumerate(boxes):
        x0, y0 = (int(np.clip(np.floor(v), 0, lim - 1)) for v, lim in zip(box[:2], (w, h)))
        x1, y1 = (int(np.clip(np.ceil(v), lo + 1, lim)) for v, lo, lim in zip(box[2:], (x0, y0), (w, h)))
        mask = rng.random((y1 - y0, x1 - x0)) > 0.3
        probs = rng.dirichlet(np.ones(CLASSES)).astype(np.float32)
        emb = rng.normal(size=EMBEDDING).astype(np.float32)
        out.append(Instance(ids[i], box_point_prompt(box, id=ids[i], score=0.9),
                            InstanceMask((x0, y0, x1 - x0, y1 - y0), mask, 0.9),
                            Classification(int(probs.argmax()), f"class{int(probs.argmax())}", float(probs.max()),
                                           probs, emb / np.linalg.norm(emb))))
    return out


class _Named:
    """The segmenter / classifier stand-in: the node reads only what it reports (name, device, precision)."""

    def __init__(self, name: str) -> None:
        self.name, self.device, self.precision = name, "cpu", "none"


class PrecomputedPipeline:
    """What the node needs of a Pipeline (``process_frames``, segmenter / classifier names, prompt_mode and
    the thresholds it may set), answering from ``synthetic_instances`` cached per list of boxes."""

    def __init__(self, seed: int = 0) -> None:
        self.segmenter, self.classifier = _Named("precomputed"), _Named("precomputed")
        self.prompt_mode, self.min_mask_score, self.min_area, self.max_detections = "box_point", 0.0, 0, 0
        self._seed = seed
        self._results: dict[tuple, FrameResult] = {}

    def process_frames(self, items: Sequence[tuple[np.ndarray, list[Prompt]]]) -> list[FrameResult]:
        return [self._result(rgb.shape[:2], prompts) for rgb, prompts in items]

    def _result(self, image_hw: tuple[int, int], prompts: Sequence[Prompt]) -> FrameResult:
        # Boxes rounded: the detection message's centre and size give the corners back up to rounding.
        key = (tuple(image_hw), tuple((p.id, *np.round(np.asarray(p.box, float), 2)) for p in prompts))
        if key not in self._results:
            rng = np.random.default_rng([self._seed, len(self._results)])
            self._results[key] = FrameResult(synthetic_instances([p.box for p in prompts], image_hw, rng,
                                                                 [p.id for p in prompts]))
        return self._results[key]


def main(args: Optional[list[str]] = None) -> None:
    """The perception node's main (perception_node.main) with PrecomputedPipeline as its pipeline."""
    from rclpy.utilities import remove_ros_args

    from .perception_node import CONFIG_ERRORS, NODE_NAME, PerceptionNode, run_inference
    from .runner import exit_process, spin_node

    argv = list(sys.argv if args is None else args)
    parser = argparse.ArgumentParser(prog="python -m scrap_perception.ros.bench_node", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed of the precomputed results")
    seed = parser.parse_args(remove_ros_args(argv)[1:]).seed

    def make() -> Any:
        return PerceptionNode(pipeline_factory=lambda p: PrecomputedPipeline(seed))

    code = spin_node(NODE_NAME, make, CONFIG_ERRORS, lambda node: node.shutdown(), argv, main_loop=run_inference)
    exit_process(code)


if __name__ == "__main__":
    main()
