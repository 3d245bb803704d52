"""``scrap-tools``: one entry point, one sub-command per tool module.

Each module exposes ``register(subparsers)``, which adds its parser and sets ``func`` (``run(args) ->
int``). A module that cannot be imported or registered (e.g. a missing optional dependency) still gets
its command listed; using it prints why it is unavailable.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# module name -> command name, in the order --help lists them.
COMMANDS: dict[str, str] = {
    "synth_cmd": "synth",
    "split": "split",
    "eval_seg": "eval-seg",
    "eval_cls": "eval-cls",
    "eval_assoc": "eval-assoc",
    "eval_system": "eval-system",
    "export": "export",
    "prelabel": "prelabel",
    "finetune_decoder": "finetune-decoder",
    "finetune_clip": "finetune-clip",
    "bench.cli": "bench",
}


def _unavailable(subparsers: argparse._SubParsersAction, command: str, error: Exception) -> None:
    reason = f"{type(error).__name__}: {error}"
    p = subparsers.add_parser(command, help=f"(unavailable: {reason})", description=f"unavailable: {reason}")

    def run(args: argparse.Namespace) -> int:
        print(f"scrap-tools: {command} is unavailable: {reason}", file=sys.stderr)
        return 2

    p.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scrap-tools", description="Scrap perception offline tools: data, evaluation, fine-tuning.")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for module, command in COMMANDS.items():
        try:
            mod = importlib.import_module(f"{__package__}.{module}")
            # A trial registration first: register() itself may import what is missing, and a half-added
            # parser cannot be taken back.
            mod.register(argparse.ArgumentParser().add_subparsers())
        except ImportError as e:
            _unavailable(subparsers, command, e)
            continue
        mod.register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
