"""Training losses of the two fine-tuning recipes.

- Mask decoder: binary cross-entropy + soft DICE on mask logits (the paper's BCE + DICE), computed on
  the logits upsampled to the ground-truth resolution.
- CN-CLIP: CLIP's image-to-text contrastive term where the candidate texts are the class texts, i.e.
  cross-entropy of ``logit_scale * cosine(image, class text)`` against the class index. CLIP's
  text-to-image term is left out: with several images of one class in a batch it has no single target.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _flat(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.shape != target.shape:
        raise ValueError(f"mask logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    if logits.dim() < 2:
        raise ValueError(f"mask logits need a batch and at least one spatial dim, got {tuple(logits.shape)}")
    return logits.reshape(logits.shape[0], -1).float(), target.reshape(target.shape[0], -1).float()


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel binary cross-entropy. logits: (B, ...) float; target: same shape, {0, 1}."""
    x, t = _flat(logits, target)
    return F.binary_cross_entropy_with_logits(x, t)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft DICE of sigmoid(logits) and target, per mask, averaged over the batch.

    ``smooth`` keeps the ratio defined (and the loss 0) for an empty prediction of an empty target.
    """
    x, t = _flat(logits, target)
    p = torch.sigmoid(x)
    dice = (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return (1 - dice).mean()


def mask_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 1.0,
              dice_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE + DICE of mask logits (B, ...) against a {0, 1} target of the same shape.

    Returns the weighted sum (a scalar with grad) and its parts as floats for logging.
    """
    bce = bce_loss(logits, target)
    dice = soft_dice_loss(logits, target)
    total = bce_weight * bce + dice_weight * dice
    return total, {"bce": float(bce.detach()), "dice": float(dice.detach())}


def class_logits(image_features: torch.Tensor, text_features: torch.Tensor,
                 logit_scale: torch.Tensor | float) -> torch.Tensor:
    """``logit_scale * cosine`` of (N, D) image and (K, D) class text features -> (N, K).

    The features are L2-normalised here, as CN-CLIP does before comparing; ``logit_scale`` is the
    already exponentiated scale (``model.logit_scale.exp()``).
    """
    img = F.normalize(image_features.float(), dim=-1)
    txt = F.normalize(text_features.float(), dim=-1)
    return logit_scale * img @ txt.t()


def clip_class_loss(image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
                    logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Cross-entropy of each image against the K class texts. labels: (N,) int64 in 0..K-1."""
    labels = labels.to(image_features.device, torch.long)
    k = text_features.shape[0]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"class labels must lie in 0..{k - 1}, got {labels.min().item()}..{labels.max().item()}")
    return F.cross_entropy(class_logits(image_features, text_features, logit_scale), labels)
