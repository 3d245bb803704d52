"""Offline command-line tools (``scrap-tools <command>``): synthetic data, dataset split, evaluation
and fine-tuning. Each command is a module with ``register(subparsers)``; ``cli`` gathers them.

What the commands share lives here: the run folder, its options and the error convention (a
``ToolError`` is printed as one line and exits with status 2, never as a traceback). The fine-tuning
tools add resumable runs on top (``finetune_common``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional


class ToolError(RuntimeError):
    """Bad input to a tool; the message says what and where."""


def input_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean bad input to any tool (a dataset, checkpoint, label set or prompt that
    does not check out): ``fail`` prints them as one line."""
    from ..checkpoints import CheckpointError
    from ..data import DatasetError
    from ..labels import LabelError
    from ..prompts import PromptError

    return (ToolError, CheckpointError, DatasetError, LabelError, PromptError)


def fail(tool: str, error: Exception) -> int:
    """Prints ``<tool>: error: <message>`` to stderr; returns the bad-input exit status 2."""
    print(f"{tool}: error: {error}", file=sys.stderr)
    return 2


def interrupted(tool: str, out: Optional[Path]) -> int:
    """What a resumable tool prints on Ctrl-C (the run folder keeps its last finished epoch); status 130."""
    where = f" --out {out}" if out else ""
    print(f"{tool}: interrupted; the run folder keeps the last finished epoch: continue with --resume{where}",
          file=sys.stderr)
    return 130


def seed_models(seed: int) -> None:
    """Seeds torch's generator (random-weight models are drawn from it) and OpenCV's; call right before
    building each model so a model's weights depend on the seed alone."""
    import cv2
    import torch

    torch.manual_seed(seed)
    cv2.setRNGSeed(seed)


def seed_call(*keys: int) -> None:
    """Seeds OpenCV's generator (GrabCut's colour-model initialisation) from non-negative ``keys``, so a
    decoder call gives the same masks whatever ran before it."""
    import cv2
    import numpy as np

    cv2.setRNGSeed(int(np.random.default_rng(list(keys)).integers(2 ** 31 - 1)))


def add_run_options(p: argparse.ArgumentParser, tool: str, resume: bool = False) -> None:
    """--out (results folder) and --seed; with ``resume`` (a tool whose runs can be continued) --resume."""
    p.add_argument("--out", type=Path, default=None,
                   help=f"results folder (default out/{tool}/<timestamp>)"
                        + ("; with --resume, the run to continue" if resume else ""))
    if resume:
        p.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last finished epoch (--epochs may be raised)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")


def run_folder(out: Optional[Path], tool: str) -> Path:
    """``out``, or a new ``out/<tool>/<timestamp>`` (suffixed when that exists), created."""
    if out is None:
        base = Path("out") / tool / time.strftime("%Y%m%d-%H%M%S")
        out, k = base, 1
        while out.exists():
            out, k = base.with_name(f"{base.name}-{k}"), k + 1
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_config(out: Path, args: argparse.Namespace) -> None:
    """Writes the options of the run as ``config.json`` (so a results folder says how it was made)."""
    config: dict[str, Any] = {k: v for k, v in vars(args).items() if not callable(v)}
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str, ensure_ascii=False) + "\n")


def write_table(stem: Path, header: list[str], rows: list[list[Any]], title: str = "", digits: int = 4) -> None:
    """Writes ``stem.csv`` (full precision) and ``stem.md`` (a Markdown table, floats to ``digits``)."""
    import csv

    with open(stem.with_suffix(".csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "—" if v != v else f"{v:.{digits}f}"  # NaN: not applicable
        return str(v)

    lines = ([f"### {title}", ""] if title else []) + [
        "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def parse_json_arg(value: str) -> dict:
    """An argparse type: a JSON object given inline or as the path of a JSON file."""
    text = Path(value).read_text(encoding="utf-8") if Path(value).is_file() else value
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not a JSON object or a JSON file: {e}") from None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return obj


def parse_mapping(items: Optional[list[str]], option: str) -> dict[str, str]:
    """``["LABEL=VALUE", ...]`` -> {LABEL: VALUE}; ToolError naming ``option`` on a malformed item."""
    out: dict[str, str] = {}
    for item in items or []:
        label, sep, value = item.partition("=")
        if not sep or not label or not value:
            raise ToolError(f"{option} {item!r}: expected LABEL=VALUE")
        out[label] = value
    return out
