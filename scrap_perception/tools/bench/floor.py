"""The floor of a frame: the bare model forwards and nothing else.

- encoder: ``image_encoder`` on already normalised, padded (B, 3, S, S) tensors, the C cameras' images
  B at a time, B the fastest of one at a time and all at once (measured);
- decoder: ``prompt_encoder`` + ``mask_decoder.predict_masks`` for N box+point prompts already in the
  model's input frame, in chunks of the best chunk size for this device and N (measured by the
  segmenter's own tuner, ``best_chunk``);
- CN-CLIP: ``encode_image`` of K (B, 3, R, R) crops already resized and normalised, in batches of the
  classifier's batch size. K = the masks the pipeline classified (empty masks are not classified).

The modules are the pipeline's own (same weights, device and precision), so core - floor is exactly
what the code around the models costs. Inputs are random: on these models time does not depend on
values. Text features are excluded: the pipeline computes them once, not per frame.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ...prompts import box_point_prompt
from ...segmentation.base import EncodedImage
from ...segmentation.devices import autocast
from .timing import Clock, measure


def chunk_candidates(n: int) -> list[int]:
    """Chunk sizes worth trying for n prompts: powers of two below n, and n."""
    return sorted({c for c in (1, 2, 4, 8, 16, 32, 64) if c < n} | {n})


def best_chunk(segmenter: Any, features: torch.Tensor, image_hw: tuple[int, int], n: int,
               repeats: int = 1) -> tuple[int, dict[int, float]]:
    """The fastest of ``chunk_candidates(n)`` for n prompts and {chunk size: median seconds}, timed by
    ``SamSegmenter.tune_chunk_size`` on ``features`` (the (1, C, h, w) embedding of an (H, W) image).

    The tuner times ``segment``: the decoder calls plus one ROI upsampling of all n masks, which does
    not depend on the chunk size, so its fastest is the decoder's. It keeps the fastest as the
    segmenter's chunk size: restored here, the core runs at the configured size."""
    input_hw = segmenter.transform.get_preprocess_shape(image_hw[0], image_hw[1], segmenter.image_size)
    saved = segmenter.chunk_size
    try:
        timings = segmenter.tune_chunk_size(EncodedImage(image_hw, input_hw, features), n, chunk_candidates(n),
                                            repeats)
    finally:
        segmenter.chunk_size = saved
    return min(timings, key=timings.get), timings


class Floor:
    """Model-only callables on the pipeline's modules. sam: the segmenter's ``Sam``; clip: the
    classifier's cn_clip ``CLIP``; batch_size: crops per CN-CLIP call; encoder / visual: the image
    encoders the engines run (their ``image_encoder`` / ``visual``, low-precision copies at bf16 / fp16;
    default: sam's and clip's own); memory_format: of the encoder's input (SamSegmenter.memory_format)."""

    def __init__(self, sam: torch.nn.Module, clip: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                 clip_dtype: torch.dtype, batch_size: int, clock: Clock, seed: int = 0,
                 encoder: Optional[torch.nn.Module] = None, visual: Optional[torch.nn.Module] = None,
                 memory_format: torch.memory_format = torch.contiguous_format) -> None:
        self.sam, self.clip = sam, clip
        self.image_encoder = sam.image_encoder if encoder is None else encoder
        self.visual = clip.visual if visual is None else visual
        self.memory_format = memory_format
        self.device, self.dtype, self.clip_dtype = device, dtype, clip_dtype
        self.batch_size = int(batch_size)
        self.clock = clock
        self.gen = torch.Generator().manual_seed(seed)
        self.image_size = int(sam.image_encoder.img_size)
        self.crop_size = int(clip.visual.input_resolution)
        with torch.inference_mode():
            self.dense_pe = sam.prompt_encoder.get_dense_pe()
            self.embedding = self.encoder(1)()  # (1, 256, 64, 64)-like, for the decoder runs

    def _randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen).to(self.device)

    def encoder(self, images: int, batch: Optional[int] = None) -> Callable[[], torch.Tensor]:
        """Encodes ``images`` images ``batch`` per call (default all in one); returns the last call's features."""
        x = self._randn(images, 3, self.image_size, self.image_size)
        x = x.contiguous(memory_format=self.memory_format)  # as SamSegmenter feeds it
        batch = batch or images

        def run() -> torch.Tensor:
            with torch.inference_mode(), autocast(self.device, self.dtype):
                for s in range(0, images, batch):
                    out = self.image_encoder(x[s:s + batch])
            return (out[0] if isinstance(out, (tuple, list)) else out).contiguous()  # as SamSegmenter's features

        return run

    def best_encoder_batch(self, images: int, repeats: int = 1) -> tuple[int, dict[int, float]]:
        """The faster of encoding ``images`` images one per call and all in one call (median of
        ``repeats`` after one warm-up each)."""
        timings = {b: measure(self.encoder(images, b), self.clock, repeats, warmup=1).median
                   for b in sorted({1, images})}
        return min(timings, key=timings.get), timings

    def prompt_tensors(self, boxes: np.ndarray, image_hw: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """Box+point (S6) prompts of pixel ``boxes`` (N, 4) scaled to the model's input frame."""
        scale = self.image_size / max(image_hw)
        prompts = [box_point_prompt(b) for b in boxes]
        coords = torch.as_tensor(np.stack([p.points for p in prompts]) * scale, dtype=torch.float32)
        labels = torch.ones(coords.shape[:2], dtype=torch.int32)
        box_t = torch.as_tensor(np.asarray(boxes, np.float64) * scale, dtype=torch.float32)
        return coords.to(self.device), labels.to(self.device), box_t.to(self.device)

    def decoder(self, prompts: Sequence[torch.Tensor], chunk: int,
                embedding: torch.Tensor | None = None) -> Callable[[], list[tuple[torch.Tensor, torch.Tensor]]]:
        """Decodes (coords, labels, boxes) ``chunk`` prompts per call; the callable returns each call's
        (low-res masks (B, T, L, L), predicted IoUs (B, T)) for all T mask tokens."""
        coords, labels, boxes = prompts
        pe, dec = self.sam.prompt_encoder, self.sam.mask_decoder
        emb = self.embedding if embedding is None else embedding

        def run() -> list[tuple[torch.Tensor, torch.Tensor]]:
            out = []
            with torch.inference_mode(), autocast(self.device, self.dtype):
                for s in range(0, len(boxes), chunk):
                    sl = slice(s, s + chunk)
                    sparse, dense = pe(points=(coords[sl], labels[sl]), boxes=boxes[sl], masks=None)
                    out.append(dec.predict_masks(image_embeddings=emb, image_pe=self.dense_pe,
                                                 sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense))
            return out

        return run

    def crops(self, count: Callable[[], int], most: int) -> Callable[[], None]:
        """CN-CLIP on ``count()`` crops (read at each call, at most ``most``), ``batch_size`` per call."""
        x = self._randn(most, 3, self.crop_size, self.crop_size)

        def run() -> None:
            n = count()
            with torch.inference_mode(), autocast(self.device, self.clip_dtype):
                for s in range(0, n, self.batch_size):
                    self.visual(x[s:min(s + self.batch_size, n)])  # = clip.encode_image under autocast

        return run

    def frame(self, images: int, prompts: Sequence[Sequence[torch.Tensor]], chunk: int, crops: Callable[[], int],
              encoder_batch: Optional[int] = None) -> Callable[[], dict[str, float]]:
        """The floor of a frame set: encoder on ``images`` images (``encoder_batch`` per call), the decoder
        on each camera's prompts, CN-CLIP on ``crops()`` crops (at most one per prompt; read at each call:
        as many as the pipeline's last call classified). The callable returns the seconds of each part."""
        most = sum(len(p[0]) for p in prompts)
        enc, clip = self.encoder(images, encoder_batch), self.crops(crops, most)
        decs = [self.decoder(p, chunk) for p in prompts]

        def run() -> dict[str, float]:
            t0 = self.clock.now()
            enc()
            t1 = self.clock.now()
            for d in decs:
                d()
            t2 = self.clock.now()
            clip()
            t3 = self.clock.now()
            return {"encoder": t1 - t0, "decoder": t2 - t1, "clip_image": t3 - t2}

        return run
