"""SAM / MobileSAM / SAM-HQ behind the Segmenter interface: batched encoding, chunked decoding.

Numerically this is ``SamPredictor`` of the model's own package (same resize, normalisation, prompt
transform and decoder), reorganised for throughput: several images in one encoder call, all prompts
of a frame decoded in chunks from one image embedding, and masks upsampled only inside their ROI.

Mask choice (as the paper and the reference predictors): boxes, box+point and multi-point prompts take
the single-mask output; a lone point takes the multimask output with the highest predicted IoU;
``segment_candidates`` gives the three multimask outputs. ``multimask`` overrides the choice for every
prompt: 'single' (always the single-mask output), 'best' (always the best of the three) or 'stability'
(the one of the three with the highest stability score, which is then its score: EdgeSAM's predictor
with ``use_stability_score``; EdgeSAM's 'auto', as its IoU head is not distilled). SAM-HQ adds
its HQ-token mask to the chosen SAM mask (or uses it alone with ``hq_token_only``), exactly as
``MaskDecoderHQ.forward``. Everything mode (strategy S1) is ``automatic.AutomaticMaskGenerator``, a
user of this segmenter.
"""
from __future__ import annotations

import copy
import importlib
import time
from collections import OrderedDict, defaultdict
from typing import Optional, Sequence

import numpy as np
import torch

from ..lowprec import low_precision_copy
from ..masks import InstanceMask
from ..prompts import Prompt, box_point_prompt
from .base import EncodedImage, Segmenter
from .checks import check_image, check_prompts
from .config import MULTIMASK_CHOICES
from .devices import autocast, default_chunk_size, default_encoder_batch, precision_of
from .postprocess import RoiUpsampler, instance_masks
from .registry import ModelSpec

MULTIMASK = slice(1, 4)  # tokens 1..3 are the multimask outputs, token 0 the single-mask output
STABILITY_OFFSET = 1.0  # EdgeSAM's SamPredictor.stability_score_offset


def stability_score(logits: torch.Tensor, threshold: float = 0.0, offset: float = STABILITY_OFFSET) -> torch.Tensor:
    """IoU of mask logits thresholded at ``threshold + offset`` with them thresholded at ``threshold -
    offset``, over the last two dims (segment_anything's ``amg.calculate_stability_score``; EdgeSAM's
    predictor uses offset 1.0 on the low-res logits)."""
    inner = (logits > threshold + offset).sum((-1, -2), dtype=torch.int32)
    outer = (logits > threshold - offset).sum((-1, -2), dtype=torch.int32)
    return inner / outer


class SamSegmenter(Segmenter):
    """model: the package's ``Sam`` (on ``device``); dtype: float32, or bf16/fp16 run under autocast;
    chunk_size: prompts per decoder call (None: the device's default); encoder_batch: images per
    image-encoder call (None: the device's default); hq_token_only: SAM-HQ only. Images are encoded by
    ``image_encoder``: with cast_weights at bf16 / fp16 a copy of the model's with its matmul weights cast
    once (lowprec.py: bitwise the autocast outputs, faster; ``model`` stays fp32); with channels_last (None:
    the spec's default) its convolutions run on NHWC tensors (faster on CPUs for TinyViT; outputs within
    rounding, tested). Either makes ``image_encoder`` a copy, taken here, of ``model.image_encoder``."""

    def __init__(self, model: torch.nn.Module, spec: ModelSpec, device: torch.device,
                 dtype: torch.dtype = torch.float32, chunk_size: Optional[int] = None,
                 hq_token_only: bool = False, multimask: str = "auto",
                 encoder_batch: Optional[int] = None, cast_weights: bool = True,
                 channels_last: Optional[bool] = None) -> None:
        super().__init__()
        if multimask not in MULTIMASK_CHOICES:
            raise ValueError(f"multimask must be one of {MULTIMASK_CHOICES}, not {multimask!r}")
        self.multimask = multimask
        self.model = model.eval()
        self.spec = spec
        self.name = spec.name
        self.device = device
        self.dtype = dtype
        self.precision = precision_of(dtype)
        self.image_encoder = low_precision_copy(model.image_encoder, dtype) if cast_weights else model.image_encoder
        channels_last = spec.channels_last if channels_last is None else channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:  # NHWC conv weights (values unchanged) on a copy: the model's tensors keep their layout
            if self.image_encoder is model.image_encoder:
                self.image_encoder = copy.deepcopy(model.image_encoder)
            self.image_encoder.to(memory_format=torch.channels_last)
        self.chunk_size = int(chunk_size or default_chunk_size(device))
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, not {chunk_size}")
        self.encoder_batch = int(encoder_batch or default_encoder_batch(device))
        if self.encoder_batch < 1:
            raise ValueError(f"encoder_batch must be >= 1, not {encoder_batch}")
        self.hq = spec.hq
        if hq_token_only and not self.hq:
            raise ValueError(f"hq_token_only applies to SAM-HQ model types, not {spec.name}")
        self.hq_token_only = hq_token_only
        self.image_size = int(model.prompt_encoder.input_image_size[0])
        self.mask_threshold = float(model.mask_threshold)
        transforms = importlib.import_module(f"{spec.package}.utils.transforms")
        self.transform = transforms.ResizeLongestSide(self.image_size)
        with torch.inference_mode():
            self.dense_pe = model.prompt_encoder.get_dense_pe()
        self._upsamplers: OrderedDict[tuple, RoiUpsampler] = OrderedDict()

    # ---------------------------------------------------------------- encoding
    def encode(self, images: Sequence[np.ndarray]) -> list[EncodedImage]:
        """RGB uint8 (H, W, 3) images -> one EncodedImage each, ``encoder_batch`` images per encoder call.

        Each image is resized (long side = image_size, as ResizeLongestSide), normalised and padded to
        a square; features: (1, 256, S/16, S/16); SAM-HQ keeps the early features in extra['interm'].
        """
        s = self.image_size
        for i, rgb in enumerate(images):  # every image checked before any is encoded
            check_image(rgb, i)
            if min(self.transform.get_preprocess_shape(rgb.shape[0], rgb.shape[1], s)) < 1:
                raise ValueError(f"image {i}: {rgb.shape[1]}x{rgb.shape[0]} is too elongated for the model's "
                                 f"{s}-pixel input (its short side would shrink to 0 pixels)")
        out: list[EncodedImage] = []
        for start in range(0, len(images), self.encoder_batch):
            out += self._encode_batch(images[start:start + self.encoder_batch])
        return out

    def _encode_batch(self, images: Sequence[np.ndarray]) -> list[EncodedImage]:
        s = self.image_size
        batch = torch.zeros((len(images), 3, s, s), dtype=torch.float32, device=self.device)
        sizes = []
        for i, rgb in enumerate(images):
            resized = self.transform.apply_image(rgb)
            h, w = resized.shape[:2]
            batch[i, :, :h, :w] = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)
            sizes.append(((int(rgb.shape[0]), int(rgb.shape[1])), (h, w)))
        batch = (batch - self.model.pixel_mean) / self.model.pixel_std
        for i, (_, (h, w)) in enumerate(sizes):
            batch[i, :, h:, :] = 0  # Sam.preprocess pads after normalising
            batch[i, :, :, w:] = 0
        with torch.inference_mode(), autocast(self.device, self.dtype):
            out = self.image_encoder(batch.contiguous(memory_format=self.memory_format))
        feats, interm = (out[0], out[1][0]) if self.hq else (out, None)
        feats = feats.contiguous()  # NCHW again: the decoder runs as without channels_last
        return [EncodedImage(orig, inp, feats[i:i + 1],
                             {} if interm is None else {"interm": interm[i:i + 1]})
                for i, (orig, inp) in enumerate(sizes)]

    # ---------------------------------------------------------------- decoding
    def segment(self, prompts: Sequence[Prompt], encoded: Optional[EncodedImage] = None,
                return_logits: bool = False) -> list[InstanceMask]:
        """One InstanceMask per prompt, the output chosen per prompt kind (or ``multimask``) as the module says.

        Every prompt goes through ``checks.check_prompts`` (the sanitize policy); a rejected one raises
        PromptError naming its index. Prompts with the same structure are decoded together in chunks of
        ``chunk_size``; all masks are then upsampled in one batch.
        """
        return self._decode(prompts, encoded, None, return_logits)

    def segment_candidates(self, prompts: Sequence[Prompt], encoded: Optional[EncodedImage] = None,
                           return_logits: bool = False) -> list[list[InstanceMask]]:
        """The three multimask outputs per prompt, in token order (SAM-HQ: each plus the HQ-token mask);
        checks and batching as ``segment``."""
        masks = self._decode(prompts, encoded, "all", return_logits)
        return [masks[k:k + 3] for k in range(0, len(masks), 3)]

    def _decode(self, prompts: Sequence[Prompt], encoded: Optional[EncodedImage], mode: Optional[str],
                return_logits: bool) -> list[InstanceMask]:
        """Masks of every prompt, flat in prompt order (C per prompt, C as ``predict_logits``); mode:
        ``predict_logits``' mode for all prompts, None: each prompt's own choice."""
        enc = encoded if encoded is not None else self.encoded
        clean = check_prompts(prompts, enc.original_hw)
        if not clean:
            return []
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, p in enumerate(clean):
            groups[(p.box is not None, len(p.points))].append(i)
        logits = [None] * len(clean)
        ious = [None] * len(clean)
        with torch.inference_mode():
            for (has_box, n_points), idx in groups.items():
                group_mode = mode or self._mode(has_box, n_points)
                for start in range(0, len(idx), self.chunk_size):
                    chunk = idx[start:start + self.chunk_size]
                    coords, labels, boxes = self.prompt_tensors([clean[i] for i in chunk], enc)
                    lr, iou = self.predict_logits(enc, coords, labels, boxes, group_mode)
                    for j, i in enumerate(chunk):
                        logits[i], ious[i] = lr[j], iou[j]
            flat_lr = torch.stack(logits).flatten(0, 1)  # (P * C, L, L)
            flat_iou = torch.stack(ious).flatten()
            return self.masks_from_logits(enc, flat_lr, flat_iou, return_logits)

    def _mode(self, has_box: bool, n_points: int) -> str:
        """The output ``segment`` takes for a prompt structure: 'single', 'best' or 'stability'."""
        if self.multimask != "auto":
            return self.multimask
        if self.spec.auto_multimask:
            return self.spec.auto_multimask
        return "single" if has_box or n_points > 1 else "best"

    def masks_from_logits(self, enc: EncodedImage, low_res: torch.Tensor, ious: torch.Tensor,
                          return_logits: bool = False) -> list[InstanceMask]:
        """(N, L, L) low-res logits -> N InstanceMasks of the original image, upsampled inside their ROI."""
        up = self.upsampler(enc)
        out: list[InstanceMask] = []
        start = 0
        for win in up.windows(low_res, self.mask_threshold):
            n = len(win.h)
            out += instance_masks(win, self.mask_threshold, ious[start:start + n],
                                  low_res[start:start + n] if return_logits else None)
            start += n
        return out

    def predict_logits(self, enc: EncodedImage, coords: Optional[torch.Tensor], labels: Optional[torch.Tensor],
                       boxes: Optional[torch.Tensor], mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Decodes B prompts already in the model's input frame (coords (B, N, 2), labels (B, N), boxes (B, 4)).

        mode: 'single' (token 0), 'best' (the multimask output of highest predicted IoU), 'stability' (the
        multimask output of highest stability score, returned in place of its IoU) or 'all' (the three
        multimask outputs). Returns float32 low-res logits (B, C, L, L) and predicted IoUs (B, C), C = 3 for
        'all' else 1: the reference predictors' low_res_masks and iou_predictions.
        """
        pe, dec = self.model.prompt_encoder, self.model.mask_decoder
        with torch.inference_mode(), autocast(self.device, self.dtype):
            sparse, dense = pe(points=None if coords is None else (coords, labels), boxes=boxes, masks=None)
            kw = dict(image_embeddings=enc.features, image_pe=self.dense_pe, sparse_prompt_embeddings=sparse,
                      dense_prompt_embeddings=dense)
            if self.hq:
                kw["hq_features"] = self._hq_features(enc)
            masks, iou = dec.predict_masks(**kw)
        masks, iou = masks.float(), iou.float()
        hq_mask = masks[:, 4:5] if self.hq else None
        if mode == "single":
            masks, iou = masks[:, 0:1], iou[:, 0:1]
        elif mode == "best":
            iou, best = iou[:, MULTIMASK].max(1, keepdim=True)
            masks = masks[:, MULTIMASK][torch.arange(len(best), device=best.device), best[:, 0]][:, None]
        elif mode in ("all", "stability"):
            masks, iou = masks[:, MULTIMASK], iou[:, MULTIMASK]
        else:
            raise ValueError(f"mode must be 'single', 'best', 'stability' or 'all', not {mode!r}")
        if hq_mask is not None:
            masks = hq_mask.expand_as(masks) if self.hq_token_only else masks + hq_mask
        if mode == "stability":  # on the masks given out (SAM-HQ: with its HQ-token mask)
            iou, best = stability_score(masks, self.mask_threshold).max(1, keepdim=True)
            masks = masks[torch.arange(len(best), device=best.device), best[:, 0]][:, None]
        return masks, iou

    def _hq_features(self, enc: EncodedImage) -> torch.Tensor:
        """SAM-HQ's fused high-resolution features of an image, computed once per image and decoder."""
        dec = self.model.mask_decoder
        key = ("hq_features", id(dec))
        if key not in enc.extra:
            vit = enc.extra["interm"].permute(0, 3, 1, 2)
            enc.extra[key] = dec.embedding_encoder(enc.features) + dec.compress_vit_feat(vit)
        return enc.extra[key]

    def prompt_tensors(self, prompts: Sequence[Prompt], enc: EncodedImage
                       ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Prompts of one structure (same kind, same point count) in the model's input frame: point
        coords (B, N, 2), labels (B, N), boxes (B, 4), each None when absent; scaled from the original
        image to the resized one like ResizeLongestSide.apply_coords (only ``enc``'s geometry is used)."""
        (oh, ow), (ih, iw) = enc.original_hw, enc.input_hw
        scale = np.array([iw / ow, ih / oh])
        coords = labels = boxes = None
        if len(prompts[0].points):
            pts = np.stack([p.points for p in prompts]).astype(np.float64) * scale
            coords = torch.as_tensor(pts, dtype=torch.float32, device=self.device)
            labels = torch.as_tensor(np.stack([p.point_labels for p in prompts]), dtype=torch.int32,
                                     device=self.device)
        if prompts[0].box is not None:
            bxs = np.stack([p.box for p in prompts]).astype(np.float64).reshape(-1, 2, 2) * scale
            boxes = torch.as_tensor(bxs.reshape(-1, 4), dtype=torch.float32, device=self.device)
        return coords, labels, boxes

    def upsampler(self, enc: EncodedImage) -> RoiUpsampler:
        """The (cached) ROI upsampler of an image geometry."""
        key = (enc.input_hw, enc.original_hw)
        up = self._upsamplers.get(key)
        if up is None:
            low_res = self.image_size // 4
            up = RoiUpsampler(low_res, self.image_size, enc.input_hw, enc.original_hw, self.device)
            self._upsamplers[key] = up
            while len(self._upsamplers) > 8:
                self._upsamplers.popitem(last=False)
        return up

    def tune_chunk_size(self, enc: EncodedImage, n_prompts: int = 20, candidates: Sequence[int] = (1, 4, 16, 64),
                        repeats: int = 2) -> dict[int, float]:
        """Times decoding ``n_prompts`` box+point prompts per candidate chunk size on this device, keeps the
        fastest as ``chunk_size`` and returns {chunk size: seconds} (median of ``repeats``)."""
        h, w = enc.original_hw
        rng = np.random.default_rng(0)
        corners = rng.uniform(0, 1, (n_prompts, 2)) * [w * 0.8, h * 0.8]
        prompts = [box_point_prompt([x, y, x + 0.2 * w, y + 0.2 * h]) for x, y in corners]
        timings = {}
        saved = self.chunk_size
        for size in candidates:
            self.chunk_size = size
            runs = []
            for _ in range(repeats + 1):  # the first run warms up
                t0 = time.perf_counter()
                self.segment(prompts, enc)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                runs.append(time.perf_counter() - t0)
            timings[size] = float(np.median(runs[1:]))
        self.chunk_size = min(timings, key=timings.get) if timings else saved
        return timings
