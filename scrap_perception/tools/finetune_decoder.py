"""finetune-decoder: fine-tunes a SAM-family mask decoder with the paper's recipe.

- The image encoder and the prompt encoder are frozen; each image's embedding is computed once and
  cached in the run folder (``cache/<split>_<image id>.pt``, read back with weights_only).
- Each iteration takes one ground-truth instance (batch 1) and prompts it with the mask's tight box
  and/or points drawn from the mask, 2 foreground : 1 background by default; each prompt type is
  omitted with probability 0.5, independently, and a draw that would omit both is repeated.
- Loss: BCE + DICE on the mask logits upsampled to the image resolution (single-mask output).
- AdamW (lr 1e-4), cosine schedule over all steps; validation DICE each epoch with the deployed
  prompt (S6: tight box + the distance-transform interior point); the best epoch's decoder is saved
  as a decoder-only checkpoint that ``build_segmenter(..., decoder_checkpoint=...)`` loads.
- Every epoch ends with a resumable training state (see ``finetune_common``); ``--resume`` continues.
"""
from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ..data import CocoDataset, split_coco
from ..losses import mask_loss
from ..masks import InstanceMask, from_full
from ..metrics import dice
from ..prompt_strategies import negative_points, strategy_prompt, tight_box
from ..prompts import Prompt
from ..segmentation.base import EncodedImage
from . import ToolError, fail, input_errors, interrupted
from . import finetune_common as common
from . import parse_json_arg

if TYPE_CHECKING:
    from ..segmentation.sam_backend import SamSegmenter

TOOL = "finetune-decoder"


# ---------------------------------------------------------------------------------------- prompts
def choose_prompt_types(rng: np.random.Generator, p_omit: float = 0.5) -> tuple[bool, bool]:
    """(use_box, use_points): each type omitted with probability ``p_omit``, independently; a draw
    omitting both is repeated, so box only / points only / both come with probability 1/3 each at 0.5."""
    if not 0.0 <= p_omit < 1.0:
        raise ValueError(f"p_omit must be in [0, 1), got {p_omit}")
    while True:
        use_box, use_points = rng.random() >= p_omit, rng.random() >= p_omit
        if use_box or use_points:
            return use_box, use_points


def sample_prompt(mask: np.ndarray, rng: np.random.Generator, fg_points: int = 2, bg_points: int = 1,
                  p_omit: float = 0.5) -> Prompt:
    """A training prompt for one (H, W) bool ground-truth mask (pixel frame of ``prompts``).

    Box: the mask's tight box. Points: ``fg_points`` pixel centres drawn uniformly from the mask and
    ``bg_points`` drawn off the mask near it (``prompt_strategies.negative_points``: the box ring).
    """
    use_box, use_points = choose_prompt_types(rng, p_omit)
    box = tight_box(mask) if use_box else None
    points, labels = np.zeros((0, 2), np.float32), np.zeros(0, np.int32)
    if use_points:
        rows, cols = np.nonzero(mask)
        pick = rng.choice(len(rows), size=fg_points, replace=len(rows) < fg_points)
        fg = np.stack([cols[pick] + 0.5, rows[pick] + 0.5], axis=1)
        bg = negative_points(mask, bg_points, rng) if bg_points else np.zeros((0, 2), np.float32)
        points = np.concatenate([fg, bg]).astype(np.float32)
        labels = np.concatenate([np.ones(len(fg)), np.zeros(len(bg))]).astype(np.int32)
    return Prompt(box=box, points=points, point_labels=labels)


# ----------------------------------------------------------------------------- model and decoding
def build_runner(args: argparse.Namespace) -> DecoderRunner:
    """The engine's segmenter of --model-type (``build_segmenter``: device, precision, checkpoints, arch)
    behind a DecoderRunner. CheckpointError names the file and what it looks like."""
    from ..segmentation import build_segmenter
    from ..segmentation.sam_backend import SamSegmenter

    try:
        segmenter = build_segmenter(args.model_type, checkpoint=args.checkpoint,
                                    decoder_checkpoint=args.decoder_checkpoint, arch=args.arch,
                                    device=args.device, precision=args.precision)
    except ValueError as e:  # unknown model type, arch or device
        raise ToolError(str(e)) from None
    if not isinstance(segmenter, SamSegmenter):
        raise ToolError(f"--model-type {args.model_type}: has no mask decoder to fine-tune")
    return DecoderRunner(segmenter)


class DecoderRunner:
    """The engine's ``SamSegmenter`` with gradients through the mask decoder: images are encoded and
    prompts transformed by the segmenter itself, and the decoder runs as ``SamPredictor``'s
    single-mask forward.

    Features of one image: {"embeddings": (1, C, h, w), "interm": [SAM-HQ's early ViT features],
    "input_hw": (2,) size after the model's resize, "original_hw": (2,) image size}, float32 on CPU.
    """

    def __init__(self, segmenter: SamSegmenter) -> None:
        self.segmenter = segmenter
        self.sam = segmenter.model
        self.device, self.dtype = segmenter.device, segmenter.dtype
        self.hq = segmenter.spec.hq
        for module in (self.sam.image_encoder, self.sam.prompt_encoder):
            module.eval().requires_grad_(False)

    def encode(self, rgb: np.ndarray) -> dict[str, Any]:
        """Features of one RGB uint8 (H, W, 3) image."""
        enc = self.segmenter.encode([rgb])[0]
        interm = [enc.extra["interm"]] if self.hq else []
        # clone: the engine encodes under inference_mode, whose tensors cannot enter the decoder's graph
        return {"embeddings": enc.features.float().cpu().clone(), "interm": [t.float().cpu().clone() for t in interm],
                "input_hw": torch.tensor(enc.input_hw), "original_hw": torch.tensor(enc.original_hw)}

    def logits(self, features: dict[str, Any], prompt: Prompt) -> torch.Tensor:
        """(1, 1, H, W) float32 mask logits of one prompt at the image resolution (single-mask output)."""
        from ..devices import autocast

        original_hw = tuple(int(v) for v in features["original_hw"])
        input_hw = tuple(int(v) for v in features["input_hw"])
        # The segmenter's prompt transform needs only the image geometry.
        coords, labels, boxes = self.segmenter.prompt_tensors([prompt], EncodedImage(original_hw, input_hw, None))
        with torch.no_grad():
            sparse, dense = self.sam.prompt_encoder(points=None if coords is None else (coords, labels),
                                                    boxes=boxes, masks=None)
        extra = {}
        if self.hq:
            extra = {"hq_token_only": False, "interm_embeddings": [t.to(self.device) for t in features["interm"]]}
        with autocast(self.device, self.dtype):
            low_res, _ = self.sam.mask_decoder(
                image_embeddings=features["embeddings"].to(self.device),
                image_pe=self.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                multimask_output=False, **extra)
        return self.sam.postprocess_masks(low_res.float(), input_hw, original_hw)


# ------------------------------------------------------------------------------------------- data
@dataclass
class Item:
    """One ground-truth instance: ``key`` names its image's cached features; mask as roi + crop."""

    key: str
    image_hw: tuple[int, int]
    mask: InstanceMask

    def full(self) -> np.ndarray:
        return self.mask.full(self.image_hw)


class FeatureCache:
    """Image features on disk, one file per image, written atomically; a small in-memory LRU."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.load = functools.lru_cache(maxsize=8)(self._load)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.pt"

    def save(self, key: str, features: dict[str, Any]) -> None:
        tmp = self.path(key).with_suffix(".tmp")
        torch.save(features, tmp)
        tmp.replace(self.path(key))

    def _load(self, key: str) -> dict[str, Any]:
        return torch.load(self.path(key), map_location="cpu", weights_only=True)


def prepare_split(dataset: CocoDataset, split: str, runner: DecoderRunner, cache: FeatureCache,
                  min_area: int) -> list[Item]:
    """Caches every image's features (skipping those already cached) and lists its instances."""
    from tqdm import tqdm

    items, small = [], 0
    for i in tqdm(range(len(dataset)), desc=f"embed {split}", unit="img", file=sys.stderr):
        sample = dataset[i]
        key = f"{split}_{sample.image_id}"
        if not cache.path(key).is_file():
            cache.save(key, runner.encode(dataset.load_image(i)))
        for inst in sample.instances:
            if inst.area >= min_area:
                items.append(Item(key, (sample.height, sample.width), from_full(inst.mask, 1.0)))
            else:
                small += 1
    if small:
        print(f"{TOOL}: {split}: left out {small} instances under --min-area {min_area} px", file=sys.stderr)
    if not items:
        raise ToolError(f"{dataset.ann_file}: no instance of at least {min_area} pixels for {split}")
    return items


def datasets(args: argparse.Namespace, out: Path) -> tuple[CocoDataset, CocoDataset]:
    """Training and validation sets: --data and --val, or a seeded split of --data made in the run
    folder (its file names point at the same images)."""
    if args.val is not None:
        return CocoDataset(args.data, args.image_root), CocoDataset(args.val, args.image_root)
    split = out / "split"
    if not ((split / "train.json").is_file() and (split / "val.json").is_file()):
        split_coco(args.data, split, val_fraction=args.val_fraction, seed=args.seed, image_root=args.image_root)
    return CocoDataset(split / "train.json"), CocoDataset(split / "val.json")


# --------------------------------------------------------------------------------------- training
def train_epoch(runner: DecoderRunner, items: Sequence[Item], cache: FeatureCache, rng: np.random.Generator,
                optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                args: argparse.Namespace, epoch: int) -> dict[str, float]:
    """One pass over ``items`` in random order; an optimizer step every ``args.batch_size`` instances."""
    from tqdm import tqdm

    decoder = runner.sam.mask_decoder.train()
    sums = {"loss": 0.0, "bce": 0.0, "dice": 0.0}
    order = rng.permutation(len(items))
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(order, desc=f"epoch {epoch}/{args.epochs}", unit="inst", file=sys.stderr)
    for n, k in enumerate(bar):
        item = items[k]
        mask = item.full()
        prompt = sample_prompt(mask, rng, args.fg_points, args.bg_points, args.p_omit)
        logits = runner.logits(cache.load(item.key), prompt)
        target = torch.from_numpy(mask).to(runner.device)[None, None]
        loss, parts = mask_loss(logits, target)
        (loss / args.batch_size).backward()
        if (n + 1) % args.batch_size == 0 or n + 1 == len(order):
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(decoder.parameters(), args.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        sums["loss"] += float(loss.detach())
        sums["bce"] += parts["bce"]
        sums["dice"] += parts["dice"]
        bar.set_postfix(loss=f"{sums['loss'] / (n + 1):.4f}")
    return {k: v / len(order) for k, v in sums.items()}


@torch.no_grad()
def validate(runner: DecoderRunner, items: Sequence[Item], cache: FeatureCache) -> float:
    """Mean DICE over ``items`` of the mask decoded from the S6 prompt (box + interior point)."""
    from tqdm import tqdm

    runner.sam.mask_decoder.eval()
    scores = []
    for item in tqdm(items, desc="validate", unit="inst", file=sys.stderr, leave=False):
        mask = item.full()
        logits = runner.logits(cache.load(item.key), strategy_prompt("S6", mask))
        scores.append(dice((logits[0, 0] > runner.sam.mask_threshold).cpu().numpy(), mask))
    return float(np.mean(scores))


def save_decoder(path: Path, decoder: torch.nn.Module, model_type: str, epoch: int, val_dice: float) -> None:
    """The decoder-only checkpoint ``build_segmenter(decoder_checkpoint=...)`` reads (keys unprefixed)."""
    state = {k: v.detach().cpu().clone() for k, v in decoder.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": state, "model_type": model_type, "kind": "sam_mask_decoder",
                "epoch": epoch, "val_dice": val_dice}, tmp)
    tmp.replace(path)


def plot(out: Path, history: list[dict], initial_val_dice: float) -> None:
    epochs = [h["epoch"] for h in history]
    common.plot_curves(
        out / "curves.png", f"{TOOL}: loss and validation DICE",
        [("training loss (BCE + DICE)", {"loss": [h["train_loss"] for h in history],
                                         "BCE": [h["train_bce"] for h in history],
                                         "1 - soft DICE": [h["train_dice_loss"] for h in history]}),
         ("validation DICE (S6 prompt)", {"val DICE": [initial_val_dice] + [h["val_dice"] for h in history]})],
        xs={"loss": epochs, "BCE": epochs, "1 - soft DICE": epochs, "val DICE": [0] + epochs})


def fit(args: argparse.Namespace) -> Path:
    """The whole run; returns the run folder. Raises ToolError/CheckpointError/DatasetError on bad input."""
    for path in filter(None, (args.data, args.val)):  # every record checked before any work or folder
        CocoDataset(path, args.image_root).validate(progress=True)
    out = args.out = common.open_run(args, TOOL)
    common.check_config(out, common.run_config(args), args.resume)
    common.seed_everything(args.seed)  # before the model: random weights (tests) come from the seed
    rng = np.random.default_rng(args.seed)
    runner = build_runner(args)
    decoder = runner.sam.mask_decoder
    train_set, val_set = datasets(args, out)
    cache = FeatureCache(out / "cache")
    train_items = prepare_split(train_set, "train", runner, cache, args.min_area)
    val_items = prepare_split(val_set, "val", runner, cache, args.min_area)
    print(f"{TOOL}: {len(train_items)} training and {len(val_items)} validation instances", file=sys.stderr)

    optimizer = torch.optim.AdamW(decoder.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_items) / args.batch_size)
    scheduler = common.cosine_scheduler(optimizer, args.epochs * steps_per_epoch, args.warmup_steps)
    history: list[dict] = []
    best = {"epoch": 0, "val_dice": -1.0}
    if args.resume:
        state = common.load_state(out)
        decoder.load_state_dict(state["decoder"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        common.restart_schedule(optimizer, scheduler)
        common.set_rng_state(rng, state["rng"])
        history, best, initial = list(state["history"]), dict(state["best"]), float(state["initial_val_dice"])
        print(f"{TOOL}: resuming {out} after epoch {state['epoch']}", file=sys.stderr)
    else:
        initial = validate(runner, val_items, cache)
    print(f"{TOOL}: decoder before fine-tuning: validation DICE {initial:.4f}", file=sys.stderr)

    for epoch in range(len(history) + 1, args.epochs + 1):
        t0 = time.perf_counter()
        train = train_epoch(runner, train_items, cache, rng, optimizer, scheduler, args, epoch)
        val_dice = validate(runner, val_items, cache)
        history.append({"epoch": epoch, "train_loss": train["loss"], "train_bce": train["bce"],
                        "train_dice_loss": train["dice"], "val_dice": val_dice,
                        "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0})
        if val_dice > best["val_dice"]:
            best = {"epoch": epoch, "val_dice": val_dice}
            save_decoder(out / "decoder_best.pt", decoder, args.model_type, epoch, val_dice)
        common.save_epoch(out, {"epoch": epoch, "decoder": decoder.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "rng": common.rng_state(rng),
                                "history": history, "best": best, "initial_val_dice": initial},
                          {"initial_val_dice": initial, "best": best, "history": history})
        plot(out, history, initial)
        print(f"{TOOL}: epoch {epoch}: loss {train['loss']:.4f}, val DICE {val_dice:.4f} "
              f"(best {best['val_dice']:.4f} at epoch {best['epoch']})", file=sys.stderr)
    return out


# -------------------------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        TOOL, help="fine-tune a SAM mask decoder on a COCO dataset (the paper's recipe)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_training_options(p, TOOL)
    p.add_argument("--model-type", default="vit_b",
                   help="vit_b | vit_l | vit_h | mobile_sam:vit_t | hq:vit_b | hq:vit_l | hq:vit_h | hq:vit_tiny")
    p.add_argument("--checkpoint", default=None,
                   help="full-model checkpoint of --model-type (e.g. sam_vit_b_01ec64.pth); "
                        "none = random weights, for tests only")
    p.add_argument("--decoder-checkpoint", default=None,
                   help="decoder-only checkpoint to start from (e.g. an earlier run's decoder_best.pt)")
    p.add_argument("--arch", type=parse_json_arg, default=None,
                   help="encoder size override as JSON or a JSON file (small test models)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps before the cosine")
    p.add_argument("--batch-size", type=int, default=1, help="instances per optimizer step (default 1)")
    p.add_argument("--grad-clip", type=float, default=1.0,
                   help="gradient-norm clip, a safety the paper does not state (default 1.0; 0 = none)")
    p.add_argument("--fg-points", type=int, default=2, help="foreground points per prompt (default 2)")
    p.add_argument("--bg-points", type=int, default=1, help="background points per prompt (default 1)")
    p.add_argument("--p-omit", type=float, default=0.5,
                   help="probability of omitting each prompt type (never both; default 0.5)")
    p.add_argument("--min-area", type=int, default=16, help="instances with fewer pixels are left out")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="autocast precision of the encoder and decoder (weights stay fp32; no fp16: "
                        "training in it would need loss scaling)")
    p.set_defaults(func=run)
    return p


def _check(args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "fg_points"):
        if getattr(args, name) < 1:
            raise ToolError(f"--{name.replace('_', '-')} must be at least 1")
    if args.bg_points < 0 or args.min_area < 0:
        raise ToolError("--bg-points and --min-area must not be negative")
    if not 0.0 <= args.p_omit < 1.0:
        raise ToolError(f"--p-omit must be in [0, 1), got {args.p_omit}")


def run(args: argparse.Namespace) -> int:
    """Runs the tool; 0 on success, 2 on bad input (message, no traceback), 130 when interrupted."""
    try:
        _check(args)
        out = fit(args)
    except input_errors() as e:
        return fail(TOOL, e)
    except KeyboardInterrupt:
        return interrupted(TOOL, args.out)
    print(f"{TOOL}: done: {out / 'decoder_best.pt'}, curves {out / 'curves.png'}")
    return 0
