"""What a segmenter is built from: one configuration object instead of a long keyword list.

No torch here: the node's parameter checks and the tools' option parsers read these choices cheaply.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

#: Which decoder output becomes the mask (see SamSegmenter).
MULTIMASK_CHOICES = ("auto", "single", "best", "stability")
#: A SAM ViT-B narrowed to 2 blocks at a 256-pixel input (``arch`` of vit_b): random-weight tests and
#: ``scrap-tools bench --quick``, where the real architecture matters but its size does not.
SMALL_VIT_ARCH = {"embed_dim": 96, "depth": 2, "num_heads": 2, "global_attn_indexes": [1], "image_size": 256}


@dataclass(frozen=True)
class SegmenterConfig:
    """model_type: 'vit_b' | 'vit_l' | 'vit_h' (SAM), 'vit_t' | 'mobile_sam:vit_t' (MobileSAM), 'hq:vit_b' |
    'hq:vit_l' | 'hq:vit_h' | 'hq:vit_tiny' (SAM-HQ), 'edge_sam' | 'edge_sam_3x' (EdgeSAM), or 'grabcut'.

    checkpoint: a full model checkpoint (None: random weights, with a warning); decoder_checkpoint: a
    fine-tuned mask decoder replacing the stock one; device: 'auto' | 'cpu' | 'cuda[:n]'; precision:
    'auto' (bf16 where the device runs it natively, else fp32: scrap_perception.devices) | 'fp32' | 'bf16' |
    'fp16'; chunk_size: prompts per decoder call (None: the device's default);
    encoder_batch: images per image-encoder call when several are encoded (None: the device's default);
    multimask: 'auto' (SAM: single mask for boxes and point sets, best of three for one point; EdgeSAM:
    'stability'), 'single', 'best' (highest predicted IoU of three) or 'stability' (highest stability
    score of three, EdgeSAM's advice: its IoU head is not distilled); hq_token_only: SAM-HQ returns its
    HQ-token mask alone instead of adding it to SAM's mask;
    arch: encoder size overrides for small models (registry.VIT_ARCH / TINY_VIT_ARCH keys).
    """

    model_type: str = "vit_b"
    checkpoint: Optional[str | os.PathLike] = None
    decoder_checkpoint: Optional[str | os.PathLike] = None
    device: str = "auto"
    precision: str = "auto"
    chunk_size: Optional[int] = None
    encoder_batch: Optional[int] = None
    multimask: str = "auto"
    hq_token_only: bool = False
    arch: Optional[Mapping[str, Any]] = field(default=None, hash=False)
    #: bf16 / fp16: the image encoder's matmul weights cast once, not per call (bitwise equal; SamSegmenter).
    cast_weights: bool = True
    #: the image encoder's convolutions on NHWC tensors (outputs within rounding); None: the model family's
    #: default (on for TinyViT encoders, measured faster on CPUs).
    channels_last: Optional[bool] = None

    @property
    def weight_free(self) -> bool:
        """True for the GrabCut fallback, which takes no checkpoint."""
        return self.model_type.strip().lower() == "grabcut"
