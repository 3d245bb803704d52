"""EdgeSAM (Zhou et al., 2023): a RepViT-m1 image encoder distilled from SAM, with SAM's prompt encoder and
mask decoder. Our own implementation of the released architecture; nothing of upstream's code is used.

The official ``edge_sam.pth`` / ``edge_sam_3x.pth`` hold the state dict of
``Sam(image_encoder=RepViT("m1", fuse=True, upsample_mode="bicubic"), PromptEncoder, MaskDecoder)``. The
module names here are upstream's, so those files load strictly (upstream itself loads them with
``strict=False``). Upstream's prompt encoder, mask decoder and two-way transformer compute what
segment_anything's do for SAM's prompts (labels 1 / 0 / -1; its extras are for training: LoRA, KD
targets, label -2), and its preprocessing is SAM's (ResizeLongestSide to 1024, ImageNet mean/std in
0..255, zero padding to a square after normalising): the model is segment_anything's ``Sam`` around
the encoder below. ``test/test_segmentation_edge_sam.py`` checks all of this against upstream's files.

Encoder ("fuse" means upstream's feature fusion, not re-parameterisation): a stride-4 stem, 26 RepViT
blocks in four stages (48, 96, 192, 384 channels at strides 4, 8, 16, 32), then
``neck(conv1x1(stage 3) + upsample2x_bicubic(conv1x1(stage 4)))``: (B, 256, 64, 64) for a 1024 input.
timm's RepViT pieces are used where they are exactly upstream's (``ConvNorm`` = Conv2d_BN,
``RepVggDw(legacy=True)`` = RepVGGDW, ``SqueezeExcite``); the block and stage layout are ours, with
upstream's module names.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

PROMPT_DIM = 256
IMAGE_SIZE = 1024

# One row per block: (kernel, expansion, channels, squeeze-excite, stride). Upstream's "HS" column picks
# GELU either way, so it is left out.
M1_BLOCKS: tuple[tuple[int, int, int, bool, int], ...] = (
    (3, 2, 48, True, 1), (3, 2, 48, False, 1), (3, 2, 48, False, 1),
    (3, 2, 96, False, 2), (3, 2, 96, True, 1), (3, 2, 96, False, 1), (3, 2, 96, False, 1),
    (3, 2, 192, False, 2),
    *((3, 2, 192, i % 2 == 0, 1) for i in range(14)),
    (3, 2, 192, False, 1),
    (3, 2, 384, False, 2), (3, 2, 384, True, 1), (3, 2, 384, False, 1),
)


def _divisible(v: float, divisor: int = 8) -> int:
    """Rounds a channel count to a multiple of ``divisor`` (never more than 10 % below ``v``)."""
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


def _timm_parts():
    from timm.layers import SqueezeExcite
    from timm.models.repvit import ConvNorm, RepVggDw
    return ConvNorm, RepVggDw, SqueezeExcite


class _Residual(nn.Module):
    """x + m(x) (upstream's ``Residual``; its drop path is training-only and unused at inference)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


class RepViTBlock(nn.Module):
    """token_mixer (depthwise 3x3 RepVGG branch or a stride-2 depthwise conv + 1x1 projection, optional SE),
    then channel_mixer (residual 1x1 - GELU - 1x1 MLP of ratio ``expansion``)."""

    def __init__(self, inp: int, hidden: int, oup: int, kernel: int, stride: int, use_se: bool) -> None:
        super().__init__()
        conv_norm, rep_vgg_dw, squeeze_excite = _timm_parts()
        se = squeeze_excite(inp, 0.25) if use_se else nn.Identity()
        if stride == 2:
            self.token_mixer = nn.Sequential(
                conv_norm(inp, inp, kernel, 2, (kernel - 1) // 2, groups=inp), se, conv_norm(inp, oup, 1, 1, 0))
            mlp_in, mlp_hidden = oup, 2 * oup
        elif stride == 1 and inp == oup:
            self.token_mixer = nn.Sequential(rep_vgg_dw(inp, kernel, legacy=True), se)
            mlp_in, mlp_hidden = inp, hidden
        else:
            raise ValueError(f"RepViT block: stride {stride} with {inp} -> {oup} channels")
        self.channel_mixer = _Residual(nn.Sequential(
            conv_norm(mlp_in, mlp_hidden, 1, 1, 0), nn.GELU(), conv_norm(mlp_hidden, oup, 1, 1, 0, bn_weight_init=0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of (B, C, H, W) (SAM's neck norm, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - mean) / torch.sqrt(var + self.eps)) + self.bias[:, None, None]


class _Upsample(nn.Module):
    def __init__(self, factor: int = 2, mode: str = "bicubic") -> None:
        super().__init__()
        self.factor, self.mode = factor, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode in ("bilinear", "bicubic"):
            return F.interpolate(x, scale_factor=self.factor, mode=self.mode, align_corners=False)
        return F.interpolate(x, scale_factor=self.factor, mode=self.mode)


class _OpSequential(nn.Module):
    """A Sequential whose modules sit under ``op_list`` (upstream's key layout)."""

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class RepViTEncoder(nn.Module):
    """EdgeSAM's image encoder: RepViT-m1 with stage 3/4 fusion; (B, 3, S, S) -> (B, 256, S/16, S/16)."""

    def __init__(self, img_size: int = IMAGE_SIZE, blocks: Sequence[tuple] = M1_BLOCKS,
                 upsample_mode: str = "bicubic") -> None:
        super().__init__()
        conv_norm = _timm_parts()[0]
        self.img_size = img_size
        width = blocks[0][2]
        layers: list[nn.Module] = [nn.Sequential(conv_norm(3, width // 2, 3, 2, 1), nn.GELU(),
                                                 conv_norm(width // 2, width, 3, 2, 1))]
        self.stage_ends: list[int] = []  # indices into ``features`` of each stage's last block
        for i, (k, t, c, se, s) in enumerate(blocks):
            out = _divisible(c)
            if i and c != blocks[i - 1][2]:
                self.stage_ends.append(i)  # features[i] is block i-1
            layers.append(RepViTBlock(width, _divisible(width * t), out, k, s, se))
            width = out
        self.stage_ends.append(len(blocks))
        if len(self.stage_ends) != 4:
            raise ValueError(f"RepViT encoder: {len(self.stage_ends)} stages, the fusion needs 4")
        self.features = nn.ModuleList(layers)
        c3, c4 = (layers[j].channel_mixer.m[2].c.out_channels for j in self.stage_ends[2:])
        self.fuse_stage2 = nn.Conv2d(c3, PROMPT_DIM, 1, bias=False)
        self.fuse_stage3 = _OpSequential([nn.Conv2d(c4, PROMPT_DIM, 1, bias=False), _Upsample(2, upsample_mode)])
        self.neck = nn.Sequential(nn.Conv2d(PROMPT_DIM, PROMPT_DIM, 1, bias=False), LayerNorm2d(PROMPT_DIM),
                                  nn.Conv2d(PROMPT_DIM, PROMPT_DIM, 3, padding=1, bias=False),
                                  LayerNorm2d(PROMPT_DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s3_end, s4_end = self.stage_ends[2:]
        for layer in self.features[:s3_end + 1]:
            x = layer(x)
        stage3 = x
        for layer in self.features[s3_end + 1:s4_end + 1]:
            x = layer(x)
        return self.neck(self.fuse_stage2(stage3) + self.fuse_stage3(x))


def build_edge_sam(image_size: int = IMAGE_SIZE) -> nn.Module:
    """segment_anything's ``Sam`` around the RepViT encoder, with EdgeSAM's (= SAM's) prompt encoder, mask
    decoder and pixel statistics; random weights, eval mode. Builds on the meta device too."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    grid = image_size // 16
    sam = Sam(
        image_encoder=RepViTEncoder(image_size),
        prompt_encoder=PromptEncoder(embed_dim=PROMPT_DIM, image_embedding_size=(grid, grid),
                                     input_image_size=(image_size, image_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=PROMPT_DIM, iou_head_depth=3,
                                 iou_head_hidden_dim=256,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=2048,
                                                               num_heads=8)),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    return sam.eval()
