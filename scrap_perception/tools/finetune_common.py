"""What both fine-tuning tools share: their options, resumable run folders and training state, the
schedule, curves.

A run folder holds ``config.json`` (the options that define the run), ``state_last.pt`` (everything
needed to continue after the last finished epoch: weights, optimizer, scheduler, epoch, RNG states,
history) and the outputs. The state file holds tensors and plain containers only, so it is read back
with ``torch.load(weights_only=True)``; it is written to a temporary name and renamed, so a run killed
while saving keeps the previous epoch's state.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

from . import ToolError, add_run_options, run_folder

STATE_FILE = "state_last.pt"
CONFIG_FILE = "config.json"


def add_training_options(p: argparse.ArgumentParser, tool: str) -> None:
    """The data, device and run options of both tools (the run resumable)."""
    p.add_argument("--data", type=Path, required=True, help="COCO instance-segmentation json (training set)")
    p.add_argument("--val", type=Path, default=None,
                   help="validation COCO json (default: a seeded 85/15 split of --data in the run folder)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="validation share when splitting --data")
    p.add_argument("--image-root", type=Path, default=None, help="folder of the images (default: the json's)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    add_run_options(p, tool, resume=True)


def open_run(args: argparse.Namespace, tool: str) -> Path:
    """The run folder: with --resume the existing --out (it must hold a finished epoch), else a new
    ``run_folder`` that must not hold a run already."""
    if args.resume:
        if args.out is None:
            raise ToolError("--resume needs --out, the folder of the run to continue")
        if not (args.out / STATE_FILE).is_file():
            raise ToolError(f"--resume: {args.out / STATE_FILE} does not exist: that run never finished an epoch")
        return args.out
    if args.out is not None and (args.out / STATE_FILE).exists():
        raise ToolError(f"--out {args.out} already holds a run; pass --resume to continue it or choose another folder")
    return run_folder(args.out, tool)


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The options that define a run (everything but where it lives and how it was started)."""
    return {k: v for k, v in vars(args).items() if k not in ("out", "resume") and not callable(v)}


def check_config(out: Path, config: Mapping[str, Any], resume: bool,
                 may_change: Iterable[str] = ("epochs", "device")) -> None:
    """Writes the run's config, or on resume checks the new options agree with the saved ones."""
    path = out / CONFIG_FILE
    config = json.loads(json.dumps(config, default=str))
    if resume and path.is_file():
        saved = json.loads(path.read_text())
        keep = set(may_change)
        differ = sorted(k for k in set(saved) | set(config)
                        if k not in keep and saved.get(k) != config.get(k))
        if differ:
            detail = "; ".join(f"{k}: run {saved.get(k)!r}, now {config.get(k)!r}" for k in differ)
            raise ToolError(f"--resume: options differ from the run in {out}: {detail}")
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(rng: np.random.Generator) -> dict:
    """RNG states of the tool's numpy Generator, Python, numpy's global and torch (CPU + CUDA)."""
    state = {
        "numpy_generator": rng.bit_generator.state,
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
    }
    np_global = np.random.get_state()
    state["numpy_global"] = (np_global[0], torch.from_numpy(np_global[1].astype(np.int64)), *np_global[2:])
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(rng: np.random.Generator, state: Mapping[str, Any]) -> None:
    rng.bit_generator.state = state["numpy_generator"]
    version, keys, *rest = state["python"]
    random.setstate((version, tuple(keys), *rest))
    name, keys, *rest = state["numpy_global"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


def cosine_factor(step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Learning-rate multiplier: linear warm-up, then half a cosine from 1 to 0 over the rest."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))


def cosine_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                     warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine schedule over ``total_steps`` optimizer steps. A closed form of the step, so a resumed
    run whose --epochs was raised continues on the longer cosine from the same step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_factor(step, total_steps, warmup_steps))


def restart_schedule(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """After loading a scheduler's state into a new cosine (maybe longer): sets the learning rates of
    the step it stands at, which the saved optimizer still holds from the old schedule."""
    for group, base, fn in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * fn(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def save_state(out: Path, state: Mapping[str, Any]) -> None:
    """Atomically writes the training state (tensors and plain containers only)."""
    tmp = out / (STATE_FILE + ".tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, out / STATE_FILE)


def save_epoch(out: Path, state: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
    """End of an epoch: the training state (``save_state``) and ``history.json`` (``summary``)."""
    save_state(out, state)
    (out / "history.json").write_text(json.dumps(dict(summary), indent=2) + "\n")


def load_state(out: Path) -> dict:
    path = out / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file: say which and why, no deep traceback
        raise ToolError(f"--resume: cannot read {path}: {str(e).splitlines()[0]}") from None


def plot_curves(path: Path, title: str, panels: Sequence[tuple[str, Mapping[str, Sequence[float]]]],
                xs: Optional[Mapping[str, Sequence[float]]] = None) -> None:
    """One PNG with a panel per (y label, {series name: values}); x = epoch (1-based unless ``xs``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (ylabel, series) in zip(axes[0], panels):
        for name, values in series.items():
            x = (xs or {}).get(name, range(1, len(values) + 1))
            ax.plot(list(x), list(values), marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
