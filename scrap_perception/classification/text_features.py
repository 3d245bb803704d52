"""Class text features: each label's prompts encoded, normalised, averaged and normalised again (the
zero-shot classifier of cn_clip's evaluation), computed once per label set."""
from __future__ import annotations

from typing import Sequence

import torch
from cn_clip.clip import _tokenizer, tokenize
from cn_clip.clip.model import CLIP

from ..labels import Label

CONTEXT_LENGTH = 52  # cn_clip's default; its pretrained and fine-tuned models use it
PAD_ID = _tokenizer.vocab["[PAD]"]  # what cn_clip's encode_text masks out


def preprocess_text(text: str) -> str:
    """cn_clip's text normalisation for its Chinese BERT vocabulary (lower case, ASCII quotes)."""
    return text.lower().replace("\u201c", '"').replace("\u201d", '"')


def tokenize_labels(labels: Sequence[Label],
                    context_length: int = CONTEXT_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """Every prompt of every label: tokens (T, L) int64 and owner (T,) int64, the index in ``labels``
    of the label each prompt belongs to.

    Tokenised as cn_clip does to ``context_length``, then cut after the longest prompt: the trailing
    columns are padding that the attention mask hides, so encode_text gives the same features for a
    fraction of the cost (L is ~13 for the default labels instead of 52).
    """
    prompts = [preprocess_text(p) for label in labels for p in label.prompts()]
    owner = [k for k, label in enumerate(labels) for _ in label.prompts()]
    tokens = tokenize(prompts, context_length=context_length)
    used = int((tokens != PAD_ID).sum(dim=1).max())
    return tokens[:, :used].contiguous(), torch.tensor(owner, dtype=torch.int64)


def pool_prompts(features: torch.Tensor, owner: torch.Tensor, k: int) -> torch.Tensor:
    """(T, D) prompt features -> (K, D) float32 class features: per label, the mean of its normalised
    prompt features, normalised again. No grad mode of its own: fine-tuning trains through it."""
    feats = features.float()
    feats = feats / feats.norm(dim=-1, keepdim=True)
    owner = owner.to(feats.device)
    out = []
    for label in range(k):
        mean = feats[owner == label].mean(dim=0)
        out.append(mean / mean.norm())
    return torch.stack(out)


def encode_labels(model: CLIP, labels: Sequence[Label], device: torch.device,
                  context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """(K, D) float32 L2-normalised text features, row k for ``labels[k]``; all prompts in one batch."""
    tokens, owner = tokenize_labels(labels, context_length)
    with torch.inference_mode():
        feats = model.encode_text(tokens.to(device))
    return pool_prompts(feats, owner, len(labels))  # outside inference_mode: an ordinary tensor, as callers had


class TextFeatureCache:
    """Keeps the text features of the last label set; recomputes only when the labels change."""

    def __init__(self, model: CLIP, device: torch.device, context_length: int = CONTEXT_LENGTH) -> None:
        self.model = model
        self.device = device
        self.context_length = context_length
        self.computed = 0  # how many times features were encoded (for diagnostics and tests)
        self._key: tuple[Label, ...] | None = None
        self._features: torch.Tensor | None = None

    def get(self, labels: Sequence[Label]) -> torch.Tensor:
        key = tuple(labels)
        if key != self._key or self._features is None:
            self._features = encode_labels(self.model, key, self.device, self.context_length)
            self._key = key
            self.computed += 1
        return self._features
