"""Model types -> SAM-family architectures, built from the reference packages' own modules.

A model type names a family and a variant: ``vit_b``/``sam:vit_b`` (segment_anything), ``vit_t``/
``mobile_sam:vit_t`` (mobile_sam), ``hq:vit_b``/``sam_hq:vit_tiny`` (segment_anything_hq). The modules
(encoder, prompt encoder, mask decoder, ``Sam``) are the packages' classes, so a checkpoint written for
the package loads here unchanged. ``arch`` overrides the encoder size for small test/fine-tuning models.

``edge_sam`` / ``edge_sam_3x`` (EdgeSAM, not on PyPI): our own RepViT-m1 encoder (``edge_sam.py``) in
segment_anything's ``Sam``, with the official files' key layout. Other SAM-compatible packages plug in
through ``register_model_type``.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Mapping, Optional

import torch

PROMPT_DIM = 256
PATCH = 16
PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]

VIT_ARCH = {
    "vit_b": {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": [2, 5, 8, 11],
              "image_size": 1024},
    "vit_l": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "global_attn_indexes": [5, 11, 17, 23],
              "image_size": 1024},
    "vit_h": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "global_attn_indexes": [7, 15, 23, 31],
              "image_size": 1024},
}
# TinyViT reshapes to a fixed 64x64 grid internally, so its input size is fixed at 1024.
TINY_VIT_ARCH = {"embed_dims": [64, 128, 160, 320], "depths": [2, 2, 6, 2], "num_heads": [2, 4, 5, 10],
                 "window_sizes": [7, 7, 14, 7], "image_size": 1024}


@dataclass(frozen=True)
class ModelSpec:
    """family: 'sam' | 'mobile_sam' | 'sam_hq' | 'edge_sam'; package: the module whose classes are used;
    hq: the decoder is MaskDecoderHQ (needs the encoder's intermediate features);
    official_file: the released checkpoint, for messages; meta_init: the builder works under
    ``torch.device("meta")`` and every tensor it leaves there is in the checkpoint, so a checkpoint's
    tensors can become the model's without random initialisation (see loading.py); auto_multimask: the
    output ``multimask: auto`` takes for every prompt ('' : SAM's rule, see SamSegmenter); channels_last:
    the encoder's default memory format is NHWC (SegmenterConfig.channels_last)."""

    family: str
    variant: str
    package: str
    builder: Callable[["ModelSpec", Mapping], torch.nn.Module]
    default_arch: Mapping = field(default_factory=dict)
    hq: bool = False
    official_file: str = ""
    meta_init: bool = False
    auto_multimask: str = ""
    channels_last: bool = False

    @property
    def name(self) -> str:
        return f"{self.family}:{self.variant}"


def _module(spec: ModelSpec, sub: str = "modeling"):
    try:
        return importlib.import_module(f"{spec.package}.{sub}" if sub else spec.package)
    except ImportError as e:
        raise ImportError(f"model type {spec.name!r} needs the Python package {spec.package!r}: {e}") from None


def _arch(spec: ModelSpec, arch: Optional[Mapping]) -> dict:
    cfg = dict(spec.default_arch)
    unknown = set(arch or {}) - set(cfg)
    if unknown:
        raise ValueError(f"arch for {spec.name}: unknown keys {sorted(unknown)}; allowed {sorted(cfg)}")
    cfg.update(arch or {})
    if cfg["image_size"] % PATCH:
        raise ValueError(f"arch for {spec.name}: image_size {cfg['image_size']} is not a multiple of {PATCH}")
    return cfg


def _vit_encoder(m, cfg: Mapping) -> torch.nn.Module:
    if not all(0 <= i < cfg["depth"] for i in cfg["global_attn_indexes"]):
        raise ValueError(f"arch: global_attn_indexes {cfg['global_attn_indexes']} outside depth {cfg['depth']}")
    return m.ImageEncoderViT(
        depth=cfg["depth"], embed_dim=cfg["embed_dim"], img_size=cfg["image_size"], mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=cfg["num_heads"], patch_size=PATCH,
        qkv_bias=True, use_rel_pos=True, global_attn_indexes=list(cfg["global_attn_indexes"]), window_size=14,
        out_chans=PROMPT_DIM)


def _tiny_vit_encoder(m, cfg: Mapping) -> torch.nn.Module:
    if cfg["image_size"] != 1024:
        raise ValueError("arch: the TinyViT encoder only supports image_size 1024")
    return m.TinyViT(
        img_size=1024, in_chans=3, num_classes=1000, embed_dims=list(cfg["embed_dims"]), depths=list(cfg["depths"]),
        num_heads=list(cfg["num_heads"]), window_sizes=list(cfg["window_sizes"]), mlp_ratio=4.0, drop_rate=0.0,
        drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8)


def _assemble(spec: ModelSpec, arch: Optional[Mapping]) -> torch.nn.Module:
    """Sam(encoder, PromptEncoder, MaskDecoder[HQ]) with the packages' build_sam hyper-parameters."""
    m = _module(spec)
    cfg = _arch(spec, arch)
    tiny = "embed_dims" in cfg
    encoder = _tiny_vit_encoder(m, cfg) if tiny else _vit_encoder(m, cfg)
    size = cfg["image_size"]
    decoder_kw = dict(num_multimask_outputs=3, transformer_dim=PROMPT_DIM, iou_head_depth=3, iou_head_hidden_dim=256,
                      transformer=m.TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=2048, num_heads=8))
    if spec.hq:
        # HQ fuses the encoder's early features: the first global-attention block (ViT) or stage 1 (TinyViT).
        decoder = m.MaskDecoderHQ(vit_dim=cfg["embed_dims"][2] if tiny else cfg["embed_dim"], **decoder_kw)
    else:
        decoder = m.MaskDecoder(**decoder_kw)
    sam = m.Sam(
        image_encoder=encoder,
        prompt_encoder=m.PromptEncoder(embed_dim=PROMPT_DIM, image_embedding_size=(size // PATCH, size // PATCH),
                                       input_image_size=(size, size), mask_in_chans=16),
        mask_decoder=decoder, pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD)
    return sam.eval()


def _edge_sam(spec: ModelSpec, arch: Optional[Mapping]) -> torch.nn.Module:
    if arch:
        raise ValueError(f"arch overrides are not supported for {spec.name}")
    _module(spec)  # segment_anything provides the prompt encoder, mask decoder and Sam
    from .edge_sam import build_edge_sam
    return build_edge_sam()


MODEL_TYPES: dict[str, ModelSpec] = {}
ALIASES = {"sam": "sam", "hq": "sam_hq", "sam_hq": "sam_hq", "mobile_sam": "mobile_sam", "mobilesam": "mobile_sam",
           "edge_sam": "edge_sam", "edgesam": "edge_sam"}


def register_model_type(spec: ModelSpec) -> None:
    """Adds a model type (the seam for EdgeSAM or other SAM-compatible packages)."""
    MODEL_TYPES[spec.name] = spec


SAM_FILES = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_h": "sam_vit_h_4b8939.pth"}
# ViT models build on the meta device: Sam's pixel mean/std, the only buffers checkpoints lack, are made by
# torch.Tensor(list), which the device context leaves on the CPU. TinyViT's __init__ reads a tensor (.item()).
for _v in ("vit_b", "vit_l", "vit_h"):
    register_model_type(ModelSpec("sam", _v, "segment_anything", _assemble, VIT_ARCH[_v],
                                  official_file=SAM_FILES[_v], meta_init=True))
    register_model_type(ModelSpec("sam_hq", _v, "segment_anything_hq", _assemble, VIT_ARCH[_v], hq=True,
                                  official_file=f"sam_hq_{_v}.pth", meta_init=True))
# TinyViT's convolutions run faster on NHWC tensors on the CPU (README, Performance: measured).
register_model_type(ModelSpec("mobile_sam", "vit_t", "mobile_sam", _assemble, TINY_VIT_ARCH,
                              official_file="mobile_sam.pt", channels_last=True))
register_model_type(ModelSpec("sam_hq", "vit_tiny", "segment_anything_hq", _assemble, TINY_VIT_ARCH, hq=True,
                              official_file="sam_hq_vit_tiny.pth", channels_last=True))
# EdgeSAM's IoU head was not distilled (its authors rank masks by stability score): 'auto' -> 'stability'.
for _v in ("edge_sam", "edge_sam_3x"):
    register_model_type(ModelSpec("edge_sam", _v, "segment_anything", _edge_sam, official_file=f"{_v}.pth",
                                  meta_init=True, auto_multimask="stability"))


def resolve_model_type(model_type: str) -> ModelSpec:
    """'vit_b' -> sam:vit_b, 'vit_t' -> mobile_sam:vit_t, 'hq:vit_tiny' -> sam_hq:vit_tiny, ..."""
    text = model_type.strip().lower()
    family, _, variant = text.rpartition(":")
    if not family:
        family = {"vit_t": "mobile_sam", "vit_tiny": "sam_hq", "edge_sam": "edge_sam",
                  "edge_sam_3x": "edge_sam"}.get(variant, "sam")
    spec = MODEL_TYPES.get(f"{ALIASES.get(family, family)}:{variant}")
    if spec is None:
        known = sorted(MODEL_TYPES) + ["vit_b", "vit_l", "vit_h", "vit_t", "edge_sam", "edge_sam_3x", "hq:<variant>",
                                       "grabcut"]
        raise ValueError(f"unknown segmenter model type {model_type!r}; known: {', '.join(known)}")
    return spec


def build_sam_model(model_type: str, arch: Optional[Mapping] = None) -> torch.nn.Module:
    """The package's ``Sam`` module for ``model_type`` with random weights, in eval mode, on the CPU."""
    spec = resolve_model_type(model_type)
    return spec.builder(spec, arch)


def describe_state(state: Mapping[str, torch.Tensor]) -> str:
    """A guess of which model a state dict belongs to, from its key names and shapes (for error messages)."""
    keys = list(state)
    hq = any("hf_token" in k for k in keys)
    kind = "SAM-HQ" if hq else "SAM"
    if "image_encoder.patch_embed.proj.weight" in state:
        dim = int(state["image_encoder.patch_embed.proj.weight"].shape[0])
        depth = len({m.group(1) for k in keys if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
        variant = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}.get(dim, "ViT")
        return f"a full {kind} {variant} checkpoint (ViT encoder, embed dim {dim}, depth {depth})"
    if any(k.startswith("image_encoder.layers.") for k in keys):
        what = "SAM-HQ vit_tiny" if hq else "MobileSAM vit_t"
        return f"a full {what} checkpoint (TinyViT encoder)"
    if "image_encoder.fuse_stage2.weight" in state or any(k.startswith("image_encoder.features.") for k in keys):
        blocks = len({m.group(1) for k in keys if (m := re.match(r"image_encoder\.features\.(\d+)\.", k))})
        stem = state.get("image_encoder.features.0.0.c.weight")
        width = f", stem width {int(stem.shape[0]) * 2}" if stem is not None and stem.dim() == 4 else ""
        what = "EdgeSAM (edge_sam / edge_sam_3x)" if "image_encoder.fuse_stage2.weight" in state else "RepViT SAM"
        return f"a full {what} checkpoint (RepViT encoder, {blocks - 1} blocks{width})"
    if any(k.startswith("image_encoder.") for k in keys):
        return "a full SAM-like checkpoint with an unknown image encoder"
    if "iou_token.weight" in state or "mask_tokens.weight" in state:
        if hq and "compress_vit_feat.0.weight" in state:
            vit_dim = int(state["compress_vit_feat.0.weight"].shape[0])
            variant = {768: "vit_b", 1024: "vit_l", 1280: "vit_h", 160: "vit_tiny"}.get(vit_dim, f"vit_dim {vit_dim}")
            return f"a SAM-HQ {variant} mask-decoder-only checkpoint"
        return f"a {kind} mask-decoder-only checkpoint"
    if any(k.startswith("mask_decoder.") for k in keys):
        return f"a partial {kind} checkpoint (mask decoder without image encoder)"
    if any(k.startswith(("visual.", "bert.")) for k in keys):
        return "a CN-CLIP checkpoint, not a SAM-family one"
    return f"no SAM-family model (first keys: {keys[:3]})"
