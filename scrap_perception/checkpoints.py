"""Safe checkpoint loading shared by the segmentation and classification engines.

A file is looked at before it is unpickled and before any model is built: its first bytes tell a
PyTorch checkpoint (zip or legacy pickle) from what a failed download leaves (nothing, a cut-off zip,
an HTML page, a git-lfs pointer). Checkpoints are only ever read with ``torch.load(...,
weights_only=True)``, which refuses anything but tensors and plain containers, so code planted in a
file never runs. Every error is one line that names the parameter that pointed at the file, the file,
what the file is and what was expected there; torch's own (multi-line, ANSI-coloured) text never is.
"""
from __future__ import annotations

import itertools
import os
import pickle
import re
import zipfile
from typing import Callable, Mapping, Optional

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, unsafe or for another model."""


HEAD_BYTES = 512
# torch.save's legacy (non-zip) format opens with its magic number pickled as a LONG1 (opcode 0x8a, 10 bytes).
LEGACY_MAGIC = b"\x8a\x0a" + torch.serialization.MAGIC_NUMBER.to_bytes(10, "little")
LFS_POINTER = "version https://git-lfs.github.com/spec/"
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# Bytes no text file has (terminal colours, ESC, are text: saved console output).
CONTROL = frozenset(range(32)) - frozenset(b"\t\n\r\f\x1b") | {127}


def one_line(text: str, limit: int = 100) -> str:
    """``text`` as one short printable line: ANSI codes and control characters dropped, whitespace collapsed."""
    text = " ".join("".join(c if c.isprintable() else " " for c in ANSI.sub("", text)).split())
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _not_torch(head: bytes, size: int) -> str:
    """What a file that is no PyTorch checkpoint is, from its first bytes."""
    if head[8:10] == b'{"' and int.from_bytes(head[:8], "little") < size:
        return "a safetensors file, not a PyTorch checkpoint (torch.save format)"
    if any(b in CONTROL for b in head):
        return f"not a PyTorch checkpoint (unknown binary format, starting {head[:8]!r})"
    text = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    if text.startswith(LFS_POINTER):
        real = re.search(r"^size (\d+)", text, re.MULTILINE)
        return ("download incomplete: this is a git-lfs pointer, not the weights (fetch them with `git lfs pull`"
                + (f"; the weights are {_size(int(real.group(1)))})" if real else ")"))
    if text.lower().startswith("<!doctype") or "<html" in text.lower():
        return "an HTML page, not the weights (the download saved a login, error or redirect page?)"
    return f"a text file, not a PyTorch checkpoint (it starts {one_line(text, 40)!r})"


def check_file(path: str, where: str, expected: str) -> None:
    """CheckpointError unless ``path`` looks like a complete torch.save file: exists, is not empty, and is
    a zip checkpoint with its central directory (so not cut off) or a legacy torch pickle. Reads only the
    first bytes and, for a zip, its directory at the end."""
    def refuse(what: str) -> CheckpointError:
        return CheckpointError(f"{where}: {what}; expected {expected}")

    if os.path.isdir(path):
        raise refuse("is a directory, not a file")
    if not os.path.exists(path):
        raise refuse("no such file")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as e:
        raise refuse(f"cannot be read ({one_line(e.strerror or str(e))})") from None
    if not head:
        raise refuse("empty file (0 bytes: an interrupted download?)")
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):  # the directory that ends a zip is missing
            raise refuse(f"truncated: a PyTorch zip checkpoint that stops after {_size(size)} (an interrupted "
                         "download or copy?)") from None
        if not any(n.rpartition("/")[2] == "data.pkl" for n in names):
            raise refuse("a zip archive but not a PyTorch checkpoint (no data.pkl inside)")
    elif head[:1] == b"\x80":
        if LEGACY_MAGIC not in head[:32]:  # after the protocol and, from protocol 4, a frame header
            raise refuse("refused: a plain Python pickle, not a torch.save checkpoint (not unpickled: that could run "
                         "code)")
    else:
        raise refuse(_not_torch(head, size))


def _unpickling_refusal(message: str) -> str:
    """What torch's weights_only refusal was about, in a few words."""
    name = re.search(r"GLOBAL (\S+) was not an allowed global", message)
    if name:
        return (f"refused to load: besides tensors the file holds Python objects ({one_line(name.group(1), 60)}) "
                "whose unpickling could run code")
    detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", message)
    return f"refused to load: damaged, or holds more than tensors ({one_line(detail[1] if detail else message, 60)})"


def load_state_dict(path: str | os.PathLike, *, param: str, expected: str,
                    map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Reads a state dict from ``path`` (see ``load_checkpoint``)."""
    return load_checkpoint(path, param=param, expected=expected, map_location=map_location)[0]


def load_checkpoint(path: str | os.PathLike, *, param: str, expected: str,
                    map_location: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Reads a state dict and its metadata from ``path`` (after ``check_file``).

    Accepts a bare state dict or a training checkpoint that wraps it under ``state_dict`` / ``model``
    (cn_clip's format and ours); strips the ``module.`` prefix DataParallel/DDP training leaves.
    Metadata: the wrapper's plain entries (str, int, float, bool), e.g. ``model_type``, ``kind``, ``epoch``.
    param: the parameter or option that named the file (for messages); expected: what belongs there.
    """
    path = os.fspath(path)
    where = f"{param}={path!r}"
    check_file(path, where, expected)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        what = (_unpickling_refusal(str(e)) if "weights only" in str(e).lower()
                else f"unreadable: a damaged PyTorch checkpoint ({one_line(str(e))})")
        raise CheckpointError(f"{where}: {what}; expected {expected}") from None
    except Exception as e:  # whatever a damaged file makes torch raise (EOFError, KeyError, ...) is reported
        detail = one_line(str(e)) or type(e).__name__
        raise CheckpointError(f"{where}: unreadable: a damaged or truncated PyTorch checkpoint ({detail}); "
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


def check_state(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], *, param: str, path: str,
                expected: str, target: str, describe: Optional[Callable[[Mapping[str, torch.Tensor]], str]] = None
                ) -> None:
    """CheckpointError unless ``state`` has exactly the keys and shapes of ``own`` (a model's state dict; a
    model built on the meta device serves, so this runs before any weight is allocated).

    target: what the model is, e.g. "the segmenter's model type is sam:vit_b"; describe: a guess of which
    model the keys belong to (e.g. "a full SAM vit_h checkpoint"), so a user who pointed at the wrong file
    sees which model it is for.
    """
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if not (missing or unexpected or wrong_shape):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]!r})")
    if wrong_shape:
        k = wrong_shape[0]
        parts.append(f"{len(wrong_shape)} keys of another shape (e.g. {k}: file {tuple(state[k].shape)} "
                     f"vs model {tuple(own[k].shape)})")
    holds = describe(state) if describe else "a state dict of another model"
    raise CheckpointError(f"{param}={path!r}: holds {holds}; {target} ({'; '.join(parts)}); expected {expected}")


def assign_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Makes the tensors of ``state`` (checked with ``check_state``) the parameters and buffers of ``module``,
    which was built on the meta device: no weight is randomly initialised, or held twice, on the way.

    Dtypes follow the module (an fp16 file fills an fp32 model) and tensors are made contiguous, as copying
    would. Buffers that checkpoints do not hold (non-persistent ones) must have been built for real: a
    tensor still on the meta device afterwards is an error.
    """
    own = module.state_dict()
    module.load_state_dict({k: v.to(own[k].dtype).contiguous() for k, v in state.items()}, strict=True, assign=True)
    left = [n for n, t in itertools.chain(module.named_parameters(), module.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"{type(module).__name__}: {len(left)} tensors (e.g. {left[:2]}) are in no checkpoint "
                           "and were built on the meta device: build this model with real tensors")
