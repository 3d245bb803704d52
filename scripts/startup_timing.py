#!/usr/bin/env python3
"""Start-up cost of the models: time from ``build_segmenter`` / ``build_classifier`` to a ready model,
and the process's peak memory, each measured in a fresh Python process.

Random-weight checkpoints (SAM vit_t, vit_b, vit_h; CN-CLIP ViT-B-16) are written to a temporary
folder first; missing-file rows time how long a bad path takes to be reported. ``--source`` runs the
same measurements against other source trees (e.g. an unpacked ``git archive`` of an older commit),
one table row per tree and case:

    source scripts/env.sh && python scripts/startup_timing.py --source . /tmp/orig
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (engine, model, checkpoint file name or None for a missing file)
CASES = [("segmenter", "vit_t", "vit_t.pth"), ("segmenter", "vit_b", "vit_b.pth"), ("segmenter", "vit_h", "vit_h.pth"),
         ("classifier", "ViT-B-16", "clip_vit_b_16.pt"), ("segmenter", "vit_h", None), ("classifier", "ViT-H-14", None)]

# Runs in the fresh process: imports first (not timed as start-up), then the builder alone.
CHILD = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
engine, model, path = sys.argv[1:4]
import torch, segment_anything, mobile_sam, cn_clip.clip.model  # noqa: F401
from scrap_perception.checkpoints import CheckpointError
from scrap_perception.classification import build_classifier
from scrap_perception.segmentation import build_segmenter
torch.set_num_threads(int(sys.argv[4]))
def peak_mb():  # VmHWM: this process's own peak (ru_maxrss would count the parent's memory at fork)
    return int(next(x for x in open("/proc/self/status") if x.startswith("VmHWM")).split()[1]) / 1024
before = peak_mb()
t0 = time.perf_counter()
try:
    (build_segmenter if engine == "segmenter" else build_classifier)(model, checkpoint=path, device="cpu")
    outcome = "ready"
except CheckpointError as e:
    outcome = "refused: " + str(e).split(": ", 1)[1].split(";")[0]
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb(), "growth_mb": peak_mb() - before, "outcome": outcome}))
"""


def write_checkpoints(folder: Path) -> None:
    """Random-weight state dicts in the official files' layout (one model in memory at a time)."""
    sys.path.insert(0, str(ROOT))  # this tree writes them, whichever trees are measured
    import torch

    from scrap_perception.classification.clip_models import build_clip_model
    from scrap_perception.segmentation import build_sam_model

    for engine, model, name in CASES:
        if name is None or (folder / name).exists():
            continue
        print(f"writing a random {model} checkpoint ...", file=sys.stderr)
        net = build_sam_model(model) if engine == "segmenter" else build_clip_model(model)
        torch.save(net.state_dict(), folder / name)
        del net


def measure(source: Path, engine: str, model: str, path: str, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", CHILD, engine, model, path, str(threads)], env=env, check=True,
                         capture_output=True, text=True, cwd=tempfile.gettempdir()).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", nargs="+", type=Path, default=[ROOT], help="source trees to measure")
    parser.add_argument("--repeats", type=int, default=1, help="runs per case (the median is shown)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in the measured process")
    parser.add_argument("--keep", type=Path, help="write (and reuse) the checkpoints here instead of a temp folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="startup_timing_") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        write_checkpoints(folder)
        print("| source | engine | model | checkpoint | time to ready (s) | peak RSS (MB) | RSS growth (MB) "
              "| outcome |")
        print("|---|---|---|---|---:|---:|---:|---|")
        for source in args.source:
            for engine, model, name in CASES:
                path = str(folder / (name or "missing.pth"))
                runs = [measure(source.resolve(), engine, model, path, args.threads) for _ in range(args.repeats)]
                med = {k: statistics.median(r[k] for r in runs) for k in ("seconds", "peak_mb", "growth_mb")}
                print(f"| {source} | {engine} | {model} | {name or 'missing'} | {med['seconds']:.2f} | "
                      f"{med['peak_mb']:.0f} | {med['growth_mb']:.0f} | {runs[-1]['outcome']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
