"""CN-CLIP models by name or JSON config, and their checkpoints; never downloads anything.

A named model merges the vision and text JSON configs shipped in ``cn_clip/clip/model_configs``, as
cn_clip's own ``create_model`` does, but keeps the weights fp32 (cn_clip converts them to fp16).
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import cn_clip.clip
import torch
from cn_clip.clip.model import CLIP

from ..checkpoints import CheckpointError, assign_into, check_state, load_state_dict

# name -> (vision config, text config), the structures cn_clip publishes its pretrained weights for.
MODELS: dict[str, tuple[str, str]] = {
    "ViT-B-16": ("ViT-B-16", "RoBERTa-wwm-ext-base-chinese"),
    "ViT-L-14": ("ViT-L-14", "RoBERTa-wwm-ext-base-chinese"),
    "ViT-L-14-336": ("ViT-L-14-336", "RoBERTa-wwm-ext-base-chinese"),
    "ViT-H-14": ("ViT-H-14", "RoBERTa-wwm-ext-large-chinese"),
    "RN50": ("RN50", "RBT3-chinese"),
}
# name -> the file cn_clip releases for it (README, Checkpoints), named in error messages.
OFFICIAL_FILES: dict[str, str] = {name: f"clip_cn_{name.lower()}.pt" for name in MODELS}
CONFIG_DIR = Path(cn_clip.clip.__file__).parent / "model_configs"

_CLIP_ARGS = inspect.signature(CLIP.__init__).parameters
_REQUIRED = {k for k, p in _CLIP_ARGS.items() if k != "self" and p.default is inspect.Parameter.empty}
_OPTIONAL = {"vision_head_width"}  # tokenizer / use_flash_attention are not configuration


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _check_config(cfg: Mapping[str, Any], source: str) -> dict[str, Any]:
    missing = sorted(_REQUIRED - set(cfg))
    unknown = sorted(set(cfg) - _REQUIRED - _OPTIONAL)
    if missing or unknown:
        raise ValueError(f"CN-CLIP config {source}: missing keys {missing}, unknown keys {unknown}; expected the "
                         f"merged vision + text fields of cn_clip/clip/model_configs (e.g. ViT-B-16.json + "
                         f"RoBERTa-wwm-ext-base-chinese.json)")
    cfg = dict(cfg)
    if isinstance(cfg["vision_layers"], str):  # cn_clip writes the ResNet layers as a string "[3,4,6,3]"
        cfg["vision_layers"] = json.loads(cfg["vision_layers"])
    if cfg["text_max_position_embeddings"] < 52:
        raise ValueError(f"CN-CLIP config {source}: text_max_position_embeddings must be >= 52 (the context length)")
    return cfg


def model_config(model_name: str) -> dict[str, Any]:
    """The merged config ``CLIP(**cfg)`` takes: a name of ``MODELS`` or a path to a JSON file."""
    if model_name in MODELS:
        vision, text = MODELS[model_name]
        cfg = _read_json(CONFIG_DIR / f"{vision}.json")
        cfg.update(_read_json(CONFIG_DIR / f"{text}.json"))
        return _check_config(cfg, model_name)
    if model_name.endswith(".json") or os.path.sep in model_name:
        if not os.path.isfile(model_name):
            raise ValueError(f"model_name={model_name!r}: no such CN-CLIP config file")
        try:
            cfg = _read_json(Path(model_name))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"model_name={model_name!r}: not a JSON config: {e}") from None
        if not isinstance(cfg, dict):
            raise ValueError(f"model_name={model_name!r}: the JSON must be an object of CLIP fields")
        return _check_config(cfg, repr(model_name))
    raise ValueError(f"model_name={model_name!r}: expected one of {sorted(MODELS)} or a path to a JSON config")


def small_clip_config() -> dict[str, Any]:
    """A tiny CN-CLIP (ViT 2 layers x 64 wide, 64 px; RoBERTa 2 layers x 64 with the real vocabulary)
    for fast tests; write it to a .json file to pass it as ``model_name``."""
    return {
        "embed_dim": 64, "image_resolution": 64, "vision_layers": 2, "vision_width": 64, "vision_patch_size": 16,
        "vision_head_width": 32,
        "vocab_size": 21128, "text_attention_probs_dropout_prob": 0.1, "text_hidden_act": "gelu",
        "text_hidden_dropout_prob": 0.1, "text_hidden_size": 64, "text_initializer_range": 0.02,
        "text_intermediate_size": 128, "text_max_position_embeddings": 64, "text_num_attention_heads": 2,
        "text_num_hidden_layers": 2, "text_type_vocab_size": 2,
    }


def build_clip_model(model_name: str) -> CLIP:
    """cn_clip's CLIP for ``model_name`` (see ``model_config``) with random fp32 weights, in eval mode."""
    return CLIP(**model_config(model_name)).eval()


def describe(state: Mapping[str, torch.Tensor]) -> str:
    """What a CN-CLIP state dict looks like from its shapes, naming the model when it is a known one."""
    if not any(k.startswith(("visual.", "bert.")) for k in state):
        return f"no CN-CLIP checkpoint (keys like {sorted(state)[:3]})"
    parts = []
    if "visual.conv1.weight" in state and "visual.transformer.resblocks.0.ln_1.weight" in state:
        layers = len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")})
        width, _, patch, _ = state["visual.conv1.weight"].shape
        grid = int(round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5))
        parts.append(f"ViT width {width}, {layers} layers, patch {patch}, {grid * patch} px")
    elif any(k.startswith("visual.layer1.") for k in state):
        parts.append("ModifiedResNet vision encoder")
    if "bert.embeddings.word_embeddings.weight" in state:
        layers = len({k.split(".")[3] for k in state if k.startswith("bert.encoder.layer.")})
        parts.append(f"text width {state['bert.embeddings.word_embeddings.weight'].shape[1]}, {layers} layers")
    if "text_projection" in state:
        parts.append(f"embedding {state['text_projection'].shape[1]}")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for name in MODELS:
        if all(shapes.get(k) == s for k, s in _shapes_of(name).items()):
            return f"a CN-CLIP {name} checkpoint ({'; '.join(parts)})"
    return f"a CN-CLIP checkpoint with {'; '.join(parts)}"


@functools.lru_cache(maxsize=None)
def _shapes_of(model_name: str) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of a named model, without allocating its weights."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in CLIP(**model_config(model_name)).state_dict().items()}


_FLASH_BERT = re.compile(r"^(bert\.encoder\.layer\.\d+\.attention\.)self\.(Wqkv|out_proj)\.(weight|bias)$")


def from_flash_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames the keys of a checkpoint trained with cn_clip's ``--use-flash-attention`` to the
    standard layout (fused Wqkv split into query/key/value; out_proj back to output.dense)."""
    out = {}
    for k, v in state.items():
        m = _FLASH_BERT.match(k)
        if m and m.group(2) == "Wqkv":
            for name, part in zip(("query", "key", "value"), torch.chunk(v, 3)):
                out[f"{m.group(1)}self.{name}.{m.group(3)}"] = part
        elif m:
            out[f"{m.group(1)}output.dense.{m.group(3)}"] = v
        else:
            out[k.replace("attn.Wqkv.weight", "attn.in_proj_weight").replace("attn.Wqkv.bias", "attn.in_proj_bias")] = v
    return out


def read_clip_state(path: str | os.PathLike, model_name: str, param: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict of a CN-CLIP checkpoint in the standard layout: cn_clip's own format ``{"epoch",
    "step", "name", "state_dict"}`` or a bare state dict, with or without ``module.``, in the standard or
    the flash-attention layout. Only tensors are read (weights_only); the file is checked first."""
    state = load_state_dict(path, param=param, expected=_expected(model_name))
    if any(".Wqkv." in k for k in state):
        state = from_flash_layout(state)
    # Pretrained cn_clip weights carry the unused BERT pooler, which cn_clip drops when loading as well.
    return {k: v for k, v in state.items() if not k.startswith("bert.pooler.")}


def _expected(model_name: str) -> str:
    official = f", e.g. {OFFICIAL_FILES[model_name]}" if model_name in OFFICIAL_FILES else ""
    return f"a CN-CLIP {model_name} checkpoint (cn_clip's {{'state_dict': ...}} format or a state dict{official})"


def _check_clip_state(model: CLIP, state: Mapping[str, torch.Tensor], path: str, model_name: str,
                      param: str) -> None:
    words = state.get("bert.embeddings.word_embeddings.weight")
    width = model.bert_config.hidden_size
    if words is not None and words.ndim == 2 and words.shape[1] != width:
        raise CheckpointError(
            f"{param}={path!r}: holds {describe(state)}, whose text encoder is {words.shape[1]} wide but "
            f"{model_name}'s is {width}: set the classifier model to the one the checkpoint was trained with; "
            f"expected {_expected(model_name)}")
    check_state(model.state_dict(), state, param=param, path=path, expected=_expected(model_name),
                target=f"the classifier model is {model_name}", describe=describe)


def load_clip_checkpoint(model: CLIP, path: str | os.PathLike, model_name: str, param: str = "checkpoint") -> None:
    """Copies a CN-CLIP checkpoint (see ``read_clip_state``) into ``model`` (built for ``model_name``).
    Raises CheckpointError with what the file holds when it does not fit the model exactly; ``param``
    names the option that gave the path in messages."""
    path = os.fspath(path)
    state = read_clip_state(path, model_name, param)
    _check_clip_state(model, state, path, model_name, param)
    model.load_state_dict(state, strict=True)


def load_clip_model(model_name: str, checkpoint: Optional[str | os.PathLike], param: str = "checkpoint") -> CLIP:
    """cn_clip's CLIP for ``model_name`` in eval mode, its weights those of ``checkpoint`` (random fp32 ones
    when None). The file is read and checked against the architecture, built on the meta device, before
    any weight is allocated; its tensors then become the model's own (no random init, no second copy)."""
    cfg = model_config(model_name)
    if checkpoint is None:
        return CLIP(**cfg).eval()
    path = os.fspath(checkpoint)
    state = read_clip_state(path, model_name, param)
    with torch.device("meta"):
        model = CLIP(**cfg)
    _check_clip_state(model, state, path, model_name, param)
    assign_into(model, state)
    return model.eval()
