"""Safe checkpoint loading shared by the segmentation and classification engines.

Checkpoints are pickles: they are only ever read with ``torch.load(..., weights_only=True)``, which
refuses anything but tensors and plain containers, so code planted in a file never runs. Every error
names the parameter that pointed at the file, the file, and what was expected there.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from typing import Callable, Mapping, Optional

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, unsafe or for another model."""


def load_state_dict(path: str | os.PathLike, *, param: str, expected: str,
                    map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Reads a state dict from ``path`` (see ``load_checkpoint``)."""
    return load_checkpoint(path, param=param, expected=expected, map_location=map_location)[0]


def load_checkpoint(path: str | os.PathLike, *, param: str, expected: str,
                    map_location: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Reads a state dict and its metadata from ``path``.

    Accepts a bare state dict or a training checkpoint that wraps it under ``state_dict`` / ``model``
    (cn_clip's format and ours); strips the ``module.`` prefix DataParallel/DDP training leaves.
    Metadata: the wrapper's plain entries (str, int, float, bool), e.g. ``model_type``, ``kind``, ``epoch``.
    param: the parameter or option that named the file (for messages); expected: what belongs there.
    """
    path = os.fspath(path)
    where = f"{param}={path!r}"
    if not os.path.isfile(path):
        raise CheckpointError(f"{where}: no such file; expected {expected}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{where}: refused to load: the file holds Python objects beyond tensors, which could run "
            f"code (weights_only loading). Expected {expected}. Detail: {str(e).splitlines()[0]}") from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, ValueError, OSError) as e:
        raise CheckpointError(
            f"{where}: unreadable (truncated or not a PyTorch checkpoint): {str(e).splitlines()[0]}; "
            f"expected {expected}") from None
    state = unwrap_state_dict(obj)
    if state is None:
        raise CheckpointError(f"{where}: holds no state dict of tensors; expected {expected}")
    meta = {k: v for k, v in obj.items() if isinstance(v, (str, int, float, bool))} if isinstance(obj, Mapping) else {}
    return state, meta


def unwrap_state_dict(obj: object) -> Optional[dict[str, torch.Tensor]]:
    """The tensor dict inside a loaded checkpoint, with ``module.`` prefixes stripped; None if none."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], *, param: str, path: str,
              expected: str, describe: Optional[Callable[[Mapping[str, torch.Tensor]], str]] = None) -> None:
    """Loads ``state`` into ``module`` strictly: every key present, none extra, every shape equal.

    describe: optional guess of what the keys look like (e.g. "a SAM vit_h checkpoint"), added to the
    error so a user who pointed at the wrong file sees which model it belongs to.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if wrong_shape:
            k = wrong_shape[0]
            parts.append(f"{len(wrong_shape)} keys of another shape (e.g. {k}: file {tuple(state[k].shape)} "
                         f"vs model {tuple(own[k].shape)})")
        guess = f" The file looks like {describe(state)}." if describe else ""
        raise CheckpointError(f"{param}={path!r}: does not match {expected}: {'; '.join(parts)}.{guess}")
    module.load_state_dict(state, strict=True)
