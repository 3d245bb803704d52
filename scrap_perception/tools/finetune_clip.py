"""finetune-clip: fine-tunes CN-CLIP on the instance crops of a COCO dataset against the class texts.

- Crops: every instance of the dataset, cut, resized and normalised by the classifier's own code (same
  margin, background policy and resize as at inference: ``prepare_crops``); resized once and cached in
  the run folder (``cache/crops_<split>.pt``, uint8).
- Objective: cross-entropy of ``logit_scale * cosine(image, class text)`` over the classes, the class
  text feature being the template-averaged, normalised text feature the classifier uses; image and
  text towers both trained; ``logit_scale`` clamped to [0, ln 100] after each step as cn_clip does.
- AdamW (lr 1e-6, no weight decay on norms, biases and logit_scale, like cn_clip), batch 48, cosine
  schedule; validation accuracy each epoch; early stopping after ``--patience`` epochs without a
  better one; the best epoch saved in cn_clip's format ``{"epoch", "step", "name", "state_dict"}`` that
  ``build_classifier(checkpoint=...)`` loads.
- Every epoch ends with a resumable training state (see ``finetune_common``); ``--resume`` continues.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..data import CocoDataset, classification_set, split_coco
from ..labels import DEFAULT_LABELS, Label, labels_from_config
from ..losses import class_logits, clip_class_loss
from . import ToolError, fail, input_errors, interrupted
from . import finetune_common as common

TOOL = "finetune-clip"
LOGIT_SCALE_MAX = math.log(100.0)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- model, texts
def load_base_model(model_name: str, checkpoint: Optional[str]) -> torch.nn.Module:
    """CN-CLIP ``model_name`` (a cn_clip name or a JSON config path) loaded from ``checkpoint``
    (random weights with a warning when None). CheckpointError for a checkpoint of another model."""
    from ..classification import build_clip_model, load_clip_checkpoint

    model = build_clip_model(model_name)
    if checkpoint is None:
        log.warning("%s: no --checkpoint: fine-tuning from RANDOM %s weights (only useful for tests)",
                    TOOL, model_name)
    else:
        load_clip_checkpoint(model, checkpoint, model_name, param="--checkpoint")
    return model.float()


class ClassTexts:
    """The tokenised prompts of every label and the differentiable class text features (the
    classifier's ``encode_labels`` with gradients through the text tower)."""

    def __init__(self, labels: Sequence[Label], device: torch.device) -> None:
        from ..classification.text_features import tokenize_labels

        self.tokens, self.owner = tokenize_labels(labels)
        self.tokens, self.owner = self.tokens.to(device), self.owner.to(device)
        self.k = len(labels)

    def features(self, model: torch.nn.Module) -> torch.Tensor:
        """(K, D): per label, the mean of its normalised prompt features, normalised again."""
        from ..classification.text_features import pool_prompts

        return pool_prompts(model.encode_text(self.tokens), self.owner, self.k)


# ------------------------------------------------------------------------------------------- data
def prepare_crop_set(dataset: CocoDataset, labels: Sequence[Label], resolution: int, margin: float,
                     background: str, min_area: int) -> dict[str, torch.Tensor]:
    """The classification set of ``dataset`` (``data.classification_set``: the classifier's own crops)
    resized as the classifier resizes them: {"images": (N, R, R, 3) uint8, "labels": (N,) class index in
    ``labels``, "refs": (N, 2) image id, annotation id}. ``to_input`` finishes the classifier's
    ``prepare_crops`` (normalisation) per batch, so the crops stay small in memory."""
    from ..classification.resample import resize_crops

    crop_set = classification_set(dataset, min_area=min_area, progress=True, margin=margin, background=background)
    if dataset.skipped:
        print(f"{TOOL}: {dataset.ann_file}: left out {dict(dataset.skipped)} instances (crowd / under --min-area)",
              file=sys.stderr)
    if not len(crop_set):
        raise ToolError(f"{dataset.ann_file}: no instance of at least {min_area} pixels")
    index = {lb.id: k for k, lb in enumerate(labels)}
    return {"images": resize_crops(crop_set.crops, resolution),
            "labels": torch.tensor([index[int(c)] for c in crop_set.class_ids], dtype=torch.int64),
            "refs": torch.tensor(crop_set.refs, dtype=torch.int64)}


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, R, R, 3) uint8 resized crops -> the (N, 3, R, R) float32 CN-CLIP input (as ``prepare_crops``)."""
    from ..classification.crops import normalize

    return normalize(images.to(device))


def cached_crop_set(path: Path, build) -> dict[str, torch.Tensor]:
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    crops = build()
    tmp = path.with_suffix(".tmp")
    torch.save(crops, tmp)
    tmp.replace(path)
    return crops


# --------------------------------------------------------------------------------------- training
def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """cn_clip's grouping: no weight decay on norm layers, biases and logit_scale."""
    def exempt(name: str) -> bool:
        return "bn" in name or "ln" in name or "LayerNorm" in name or "bias" in name or "logit_scale" in name

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if exempt(n)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not exempt(n)], "weight_decay": weight_decay}]


def train_epoch(model: torch.nn.Module, texts: ClassTexts, crops: dict[str, torch.Tensor], rng: np.random.Generator,
                optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                args: argparse.Namespace, device: torch.device, dtype: torch.dtype, epoch: int) -> dict[str, float]:
    from tqdm import tqdm

    from ..devices import autocast

    model.train()
    order = rng.permutation(len(crops["labels"]))
    batches = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    loss_sum, correct = 0.0, 0
    bar = tqdm(batches, desc=f"epoch {epoch}/{args.epochs}", unit="batch", file=sys.stderr)
    for idx in bar:
        idx = torch.from_numpy(idx)
        images, labels = to_input(crops["images"][idx], device), crops["labels"][idx].to(device)
        with autocast(device, dtype):
            image_features = model.encode_image(images)
            text_features = texts.features(model)
        loss = clip_class_loss(image_features.float(), text_features.float(), labels, model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
        loss_sum += float(loss.detach()) * len(idx)
        with torch.no_grad():
            correct += int((class_logits(image_features, text_features, 1.0).argmax(1) == labels).sum())
        bar.set_postfix(loss=f"{float(loss):.4f}")
    n = len(order)
    return {"loss": loss_sum / n, "accuracy": correct / n}


@torch.no_grad()
def evaluate(model: torch.nn.Module, texts: ClassTexts, crops: dict[str, torch.Tensor], batch_size: int,
             device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """Loss and accuracy on ``crops`` as the classifier would predict (argmax of the class scores)."""
    from ..devices import autocast

    model.eval()
    with autocast(device, dtype):
        text_features = texts.features(model).float()
    scale = model.logit_scale.exp()
    loss_sum, correct, n = 0.0, 0, len(crops["labels"])
    for start in range(0, n, batch_size):
        images = to_input(crops["images"][start:start + batch_size], device)
        labels = crops["labels"][start:start + batch_size].to(device)
        with autocast(device, dtype):
            image_features = model.encode_image(images).float()
        loss_sum += float(clip_class_loss(image_features, text_features, labels, scale)) * len(labels)
        correct += int((class_logits(image_features, text_features, scale).argmax(1) == labels).sum())
    return {"loss": loss_sum / n, "accuracy": correct / n}


def save_checkpoint(path: Path, model: torch.nn.Module, name: str, epoch: int, step: int) -> None:
    """cn_clip's checkpoint format: {"epoch", "step", "name", "state_dict"}."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"epoch": epoch, "step": step, "name": name, "state_dict": state}, tmp)
    tmp.replace(path)


def plot(out: Path, history: list[dict], initial: dict) -> None:
    """curves.png: loss and accuracy per epoch; validation starts at epoch 0, the base model."""
    epochs = [h["epoch"] for h in history]
    loss = {"train": [h["train_loss"] for h in history],
            "validation": [initial["loss"]] + [h["val_loss"] for h in history]}
    accuracy = {"train": [h["train_accuracy"] for h in history],
                "validation": [initial["accuracy"]] + [h["val_accuracy"] for h in history]}
    common.plot_curves(out / "curves.png", f"{TOOL}: loss and accuracy",
                       [("cross-entropy vs class texts", loss), ("accuracy", accuracy)],
                       xs={"train": epochs, "validation": [0] + epochs})


def load_labels(path: Optional[Path]) -> tuple[Label, ...]:
    """--labels: a JSON list of {id, name, text[, templates]} (default: the seven shapes)."""
    if path is None:
        return DEFAULT_LABELS
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ToolError(f"--labels {path}: not a readable JSON file: {e}") from None
    return labels_from_config(entries)


def datasets(args: argparse.Namespace, out: Path, labels: Sequence[Label]) -> tuple[CocoDataset, CocoDataset]:
    """--data and --val, or a seeded split of --data made in the run folder."""
    if args.val is not None:
        return (CocoDataset(args.data, args.image_root, labels=labels),
                CocoDataset(args.val, args.image_root, labels=labels))
    split = out / "split"
    if not ((split / "train.json").is_file() and (split / "val.json").is_file()):
        split_coco(args.data, split, val_fraction=args.val_fraction, seed=args.seed, image_root=args.image_root)
    return CocoDataset(split / "train.json", labels=labels), CocoDataset(split / "val.json", labels=labels)


def fit(args: argparse.Namespace) -> Path:
    """The whole run; returns the run folder. Raises ToolError/CheckpointError/DatasetError on bad input."""
    from ..classification.crops import check_margin, parse_background
    from ..segmentation.devices import resolve_device, resolve_precision

    labels = load_labels(args.labels)
    for path in filter(None, (args.data, args.val)):  # every record checked before any work or folder
        CocoDataset(path, args.image_root, labels=labels).validate(progress=True)
    out = args.out = common.open_run(args, TOOL)
    common.check_config(out, common.run_config(args), args.resume)
    try:
        device = resolve_device(args.device)
        dtype = resolve_precision(args.precision, device)
    except ValueError as e:
        raise ToolError(str(e)) from None
    common.seed_everything(args.seed)
    rng = np.random.default_rng(args.seed)
    try:
        parse_background(args.background)
        check_margin(args.crop_margin)
        model = load_base_model(args.model, args.checkpoint).to(device)
    except ValueError as e:  # unknown model name or config, bad crop policy
        raise ToolError(str(e)) from None
    resolution = int(model.visual.input_resolution)
    train_set, val_set = datasets(args, out, labels)
    (out / "cache").mkdir(exist_ok=True)
    crops = {split: cached_crop_set(out / "cache" / f"crops_{split}.pt", lambda ds=ds: prepare_crop_set(
                 ds, labels, resolution, args.crop_margin, args.background, args.min_area))
             for split, ds in (("train", train_set), ("val", val_set))}
    print(f"{TOOL}: {len(crops['train']['labels'])} training and {len(crops['val']['labels'])} validation crops",
          file=sys.stderr)
    texts = ClassTexts(labels, device)

    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr,
                                  betas=(args.beta1, args.beta2), eps=args.eps)
    steps_per_epoch = math.ceil(len(crops["train"]["labels"]) / args.batch_size)
    scheduler = common.cosine_scheduler(optimizer, args.epochs * steps_per_epoch, args.warmup_steps)
    history: list[dict] = []
    best, bad_epochs, step = {"epoch": 0, "val_accuracy": -1.0}, 0, 0
    if args.resume:
        state = common.load_state(out)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        common.restart_schedule(optimizer, scheduler)
        common.set_rng_state(rng, state["rng"])
        history, best, initial = list(state["history"]), dict(state["best"]), dict(state["initial"])
        bad_epochs, step = int(state["bad_epochs"]), int(state["step"])
        print(f"{TOOL}: resuming {out} after epoch {state['epoch']}", file=sys.stderr)
    else:
        initial = evaluate(model, texts, crops["val"], args.batch_size, device, dtype)
    print(f"{TOOL}: base model: validation accuracy {initial['accuracy']:.4f} "
          f"(chance {1 / len(labels):.4f})", file=sys.stderr)

    for epoch in range(len(history) + 1, args.epochs + 1):
        if bad_epochs >= args.patience:
            print(f"{TOOL}: stopped early: no better validation accuracy for {bad_epochs} epochs", file=sys.stderr)
            break
        t0 = time.perf_counter()
        train = train_epoch(model, texts, crops["train"], rng, optimizer, scheduler, args, device, dtype, epoch)
        step += steps_per_epoch
        val = evaluate(model, texts, crops["val"], args.batch_size, device, dtype)
        history.append({"epoch": epoch, "train_loss": train["loss"], "train_accuracy": train["accuracy"],
                        "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                        "lr": optimizer.param_groups[0]["lr"], "logit_scale": float(model.logit_scale.exp()),
                        "seconds": time.perf_counter() - t0})
        if val["accuracy"] > best["val_accuracy"]:
            best, bad_epochs = {"epoch": epoch, "val_accuracy": val["accuracy"]}, 0
            save_checkpoint(out / "clip_best.pt", model, args.model, epoch, step)
        else:
            bad_epochs += 1
        common.save_epoch(out, {"epoch": epoch, "step": step, "model": model.state_dict(),
                                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                "rng": common.rng_state(rng), "history": history, "best": best,
                                "bad_epochs": bad_epochs, "initial": initial},
                          {"initial": initial, "best": best, "history": history})
        plot(out, history, initial)
        print(f"{TOOL}: epoch {epoch}: loss {train['loss']:.4f}, val accuracy {val['accuracy']:.4f} "
              f"(best {best['val_accuracy']:.4f} at epoch {best['epoch']})", file=sys.stderr)
    return out


# -------------------------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..classification import DEFAULT_BACKGROUND, DEFAULT_CROP_MARGIN

    p = subparsers.add_parser(
        TOOL, help="fine-tune CN-CLIP on the instance crops of a COCO dataset against the class texts",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_training_options(p, TOOL)
    p.add_argument("--labels", type=Path, default=None,
                   help="JSON list of {id, name, text[, templates]} (default: the seven shapes)")
    p.add_argument("--model", default="ViT-B-16",
                   help="cn_clip model name (ViT-B-16, ViT-L-14, ViT-L-14-336, ViT-H-14, RN50) or a JSON config")
    p.add_argument("--checkpoint", default=None,
                   help="CN-CLIP checkpoint of --model (e.g. clip_cn_vit-b-16.pt); none = random weights, tests only")
    p.add_argument("--epochs", type=int, default=20, help="maximum epochs (default 20)")
    p.add_argument("--patience", type=int, default=3,
                   help="stop after this many epochs without a better validation accuracy (default 3)")
    p.add_argument("--lr", type=float, default=1e-6, help="AdamW learning rate (default 1e-6)")
    p.add_argument("--weight-decay", type=float, default=0.001, help="AdamW weight decay (default 0.001)")
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.98)
    p.add_argument("--eps", type=float, default=1e-6)
    p.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps before the cosine")
    p.add_argument("--batch-size", type=int, default=48, help="crops per step (default 48)")
    p.add_argument("--crop-margin", type=float, default=DEFAULT_CROP_MARGIN,
                   help=f"crop margin, as the classifier's (default {DEFAULT_CROP_MARGIN})")
    p.add_argument("--background", default=DEFAULT_BACKGROUND,
                   help=f"background outside the mask, as the classifier's (default {DEFAULT_BACKGROUND!r})")
    p.add_argument("--min-area", type=int, default=64, help="instances with fewer pixels are left out")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="autocast precision (weights stay fp32; no fp16: training in it would need loss scaling)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Runs the tool; 0 on success, 2 on bad input (message, no traceback), 130 when interrupted."""
    try:
        for name in ("epochs", "batch_size", "patience"):
            if getattr(args, name) < 1:
                raise ToolError(f"--{name.replace('_', '-')} must be at least 1")
        out = fit(args)
    except input_errors() as e:
        return fail(TOOL, e)
    except KeyboardInterrupt:
        return interrupted(TOOL, args.out)
    print(f"{TOOL}: done: {out / 'clip_best.pt'}, curves {out / 'curves.png'}")
    return 0
