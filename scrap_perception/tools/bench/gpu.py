"""``make bench-gpu``: the benchmark on one CUDA device, in a bounded time, for setting the CUDA defaults.

Two bench runs, one per precision (``auto``: bf16 where the GPU runs it natively, and fp32), each over
N = 1, 20, 50 boxes and 1 and 4 cameras with the floor, core and naive modes. The floor measures the
decoder chunk sizes (1 .. 64) per N and the encoder batch (1 or all 4 cameras) per C: the measured
candidates the CUDA defaults (segmentation/devices.py) are set from. Each run gets a wall-clock share of
``TOTAL_S`` and ``--budget`` seconds per measurement. Output: ``out/bench-gpu/<timestamp>/`` with each
run's bench.json / bench.md in a sub-folder and bench-gpu.json / bench-gpu.md summing them up.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

TOTAL_S = 480  # the target's limit: 8 minutes on one GPU
RUN_PRECISIONS = ("auto", "fp32")  # one bench run each
SETUP_S = 30  # interpreter start and model loading outside the runs' share


def bench_args(precision: str, out: Path, device: str = "cuda", budget: float = 5.0) -> list[str]:
    """The ``scrap-tools bench`` arguments of one run."""
    return ["--device", device, "--precision", precision, "--boxes", "1,20,50", "--cameras", "1,4",
            "--modes", "floor,core,naive", "--naive-cameras", "1", "--repeats", "10", "--min-repeats", "3",
            "--warmup", "2", "--budget", str(budget), "--out", str(out)]


def cuda_problem(device: str) -> Optional[str]:
    """Why ``device`` cannot run the GPU benchmark, or None."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device: make bench-gpu needs a machine with an NVIDIA GPU (use make bench on the CPU)"
    index = torch.device(device).index or 0
    if index >= torch.cuda.device_count():
        return f"{device}: only {torch.cuda.device_count()} CUDA device(s) present"
    return None


def run(out: Path, device: str = "cuda", budget: float = 5.0) -> int:
    """The runs, one after another, each killed at its share of TOTAL_S; 0 when all finished."""
    out.mkdir(parents=True, exist_ok=True)
    share = (TOTAL_S - SETUP_S) / len(RUN_PRECISIONS)
    runs, lines = [], ["# scrap_perception GPU benchmark", ""]
    for precision in RUN_PRECISIONS:
        folder = out / precision
        cmd = [sys.executable, "-m", "scrap_perception.tools.bench.cli", *bench_args(precision, folder, device, budget)]
        print(f"bench-gpu: {' '.join(cmd[1:])}", file=sys.stderr)
        t0 = time.monotonic()
        try:
            code: Optional[int] = subprocess.run(cmd, timeout=share).returncode
        except subprocess.TimeoutExpired:
            code = None
        runs.append({"precision": precision, "args": cmd[3:], "returncode": code, "seconds": time.monotonic() - t0,
                     "folder": str(folder)})
        md = folder / "bench.md"
        lines += [f"## --precision {precision}", ""]
        missing = "timed out" if code is None else f"exit {code}"
        lines += [md.read_text()] if md.exists() else [f"No result: {missing}.", ""]
    (out / "bench-gpu.json").write_text(json.dumps({"device": device, "limit_s": TOTAL_S, "runs": runs}, indent=1))
    (out / "bench-gpu.md").write_text("\n".join(lines))
    print(f"bench-gpu: results in {out}", file=sys.stderr)
    return 0 if all(r["returncode"] == 0 for r in runs) else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scrap_perception.tools.bench.gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda | cuda:N (default cuda)")
    p.add_argument("--budget", type=float, default=5.0, help="seconds per measurement (bench --budget, default 5)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default out/bench-gpu/<timestamp>)")
    args = p.parse_args(argv)
    problem = cuda_problem(args.device)
    if problem:
        print(f"bench-gpu: error: {problem}", file=sys.stderr)
        return 2
    return run(args.out or Path("out") / "bench-gpu" / time.strftime("%Y%m%d-%H%M%S"), args.device, args.budget)


if __name__ == "__main__":
    sys.exit(main())
