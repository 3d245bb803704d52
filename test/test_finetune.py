"""Fine-tuning: losses, prompt sampling, schedule and resumable state (fast unit tests), then the two
tools end to end on a small generated set with small random-weight models (marked slow)."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from finetune_helpers import SMALL_SAM_ARCH, history, instance_crop_dataset, nontrivial
from scipy import special, stats

from scrap_perception import losses
from scrap_perception.data import CocoDataset
from scrap_perception.metrics import dice
from scrap_perception.prompt_strategies import strategy_prompt
from scrap_perception.prompts import Prompt
from scrap_perception.synth import generate_dataset
from scrap_perception.tools import ToolError
from scrap_perception.tools import finetune_clip as ftc
from scrap_perception.tools import finetune_common as common
from scrap_perception.tools import finetune_decoder as ftd
from scrap_perception.tools.cli import main as cli


# ------------------------------------------------------------------------------------------ losses
def test_bce_and_dice_equal_independent_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(3, 1, 17, 23))
    target = rng.random((3, 1, 17, 23)) < 0.3
    p = special.expit(logits).reshape(3, -1)
    t = target.reshape(3, -1).astype(float)
    bce = -np.mean(t * np.log(p) + (1 - t) * np.log1p(-p))
    dice = np.mean(1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1))
    total, parts = losses.mask_loss(torch.from_numpy(logits), torch.from_numpy(target))
    assert parts["bce"] == pytest.approx(bce, rel=1e-5)
    assert parts["dice"] == pytest.approx(dice, rel=1e-5)
    assert float(total) == pytest.approx(bce + dice, rel=1e-5)
    total2, _ = losses.mask_loss(torch.from_numpy(logits), torch.from_numpy(target), bce_weight=0.5, dice_weight=2)
    assert float(total2) == pytest.approx(0.5 * bce + 2 * dice, rel=1e-5)


def test_mask_loss_is_small_for_the_target_and_large_for_its_inverse():
    target = torch.zeros(1, 1, 32, 32)
    target[..., 8:20, 4:30] = 1
    good = (target * 2 - 1) * 20
    good_loss, parts = losses.mask_loss(good, target)
    bad_loss, bad_parts = losses.mask_loss(-good, target)
    assert float(good_loss) < 1e-3 and parts["dice"] < 1e-3
    assert bad_parts["dice"] > 0.99 and float(bad_loss) > 10
    empty = torch.zeros(1, 1, 8, 8)
    assert float(losses.soft_dice_loss(torch.full((1, 1, 8, 8), -30.0), empty)) < 1e-6


def test_mask_loss_gradient_flows_and_shape_mismatch_is_an_error():
    logits = torch.zeros(1, 1, 6, 6, requires_grad=True)
    target = torch.ones(1, 1, 6, 6)
    losses.mask_loss(logits, target)[0].backward()
    assert logits.grad is not None and bool((logits.grad < 0).all())  # raising every logit lowers the loss
    with pytest.raises(ValueError, match="differ in shape"):
        losses.mask_loss(torch.zeros(1, 1, 6, 6), torch.zeros(1, 6, 6))


def test_clip_class_loss_equals_cross_entropy_of_scaled_cosines():
    rng = np.random.default_rng(1)
    img, txt = rng.normal(size=(5, 8)), rng.normal(size=(7, 8))
    labels = np.array([0, 3, 6, 3, 1])
    cos = (img / np.linalg.norm(img, axis=1, keepdims=True)) @ (txt / np.linalg.norm(txt, axis=1, keepdims=True)).T
    expected = -np.mean(special.log_softmax(50.0 * cos, axis=1)[np.arange(5), labels])
    got = losses.clip_class_loss(torch.from_numpy(img), torch.from_numpy(txt), torch.from_numpy(labels), 50.0)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(losses.class_logits(torch.from_numpy(img), torch.from_numpy(txt), 50.0).numpy(),
                               50.0 * cos, rtol=1e-5)
    with pytest.raises(ValueError, match="0..6"):
        losses.clip_class_loss(torch.from_numpy(img), torch.from_numpy(txt), torch.tensor([0, 1, 2, 3, 7]), 1.0)


# --------------------------------------------------------------------------------- prompt sampling
def test_prompt_types_are_one_third_each_and_never_both_omitted():
    rng = np.random.default_rng(2)
    draws = [ftd.choose_prompt_types(rng) for _ in range(30000)]
    counts = [draws.count((True, False)), draws.count((False, True)), draws.count((True, True))]
    assert draws.count((False, False)) == 0
    assert stats.chisquare(counts).pvalue > 1e-3, counts
    assert all(ftd.choose_prompt_types(rng, p_omit=0.0) == (True, True) for _ in range(50))
    with pytest.raises(ValueError):
        ftd.choose_prompt_types(rng, p_omit=1.0)


def _l_shape(h=60, w=80):
    mask = np.zeros((h, w), bool)
    mask[10:50, 12:22] = True
    mask[40:50, 12:60] = True
    mask[44:47, 30:35] = False  # a hole
    return mask


def test_sampled_prompt_points_fall_inside_and_outside_the_mask_and_box_is_tight():
    mask = _l_shape()
    rows, cols = np.nonzero(mask)
    box = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    rng = np.random.default_rng(3)
    kinds = set()
    for _ in range(200):
        p = ftd.sample_prompt(mask, rng, fg_points=4, bg_points=2)
        kinds.add(p.kind)
        if p.box is not None:
            np.testing.assert_array_equal(p.box, box)
        if len(p.points):
            assert len(p.points) == 6 and p.point_labels.tolist() == [1] * 4 + [0] * 2
            r, c = np.floor(p.points[:, 1]).astype(int), np.floor(p.points[:, 0]).astype(int)
            assert mask[r[:4], c[:4]].all()
            assert not mask[r[4:], c[4:]].any()
            # the background points are near the object: inside the box grown by the default margin
            assert (c[4:] >= box[0] - 6).all() and (c[4:] < box[2] + 6).all()
    assert kinds == {"box", "points", "box_point"}


def test_sampled_prompts_are_reproducible_by_seed_and_default_to_two_to_one():
    mask = _l_shape()
    a = [ftd.sample_prompt(mask, np.random.default_rng(7)) for _ in range(3)]
    b = [ftd.sample_prompt(mask, np.random.default_rng(7)) for _ in range(3)]
    for x, y in zip(a, b):
        assert x.kind == y.kind
        np.testing.assert_array_equal(x.points, y.points)
    p = next(p for p in (ftd.sample_prompt(mask, np.random.default_rng(s)) for s in range(20)) if len(p.points))
    assert p.point_labels.tolist() == [1, 1, 0]


# -------------------------------------------------------------------------- schedule, state, config
def test_cosine_schedule_and_restart_on_a_longer_run():
    assert common.cosine_factor(0, 100) == 1.0
    assert common.cosine_factor(50, 100) == pytest.approx(0.5)
    assert common.cosine_factor(100, 100) == pytest.approx(0.0)
    assert common.cosine_factor(0, 100, warmup_steps=10) == pytest.approx(0.1)
    assert common.cosine_factor(10, 110, warmup_steps=10) == 1.0
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1e-3)
    sched = common.cosine_scheduler(opt, 20)
    for _ in range(20):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    saved = sched.state_dict()
    opt2 = torch.optim.AdamW([param], lr=1e-3)
    opt2.load_state_dict(opt.state_dict())
    longer = common.cosine_scheduler(opt2, 30)
    longer.load_state_dict(saved)
    common.restart_schedule(opt2, longer)
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 20 / 30)))
    opt2.step()
    longer.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 21 / 30)))


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    common.seed_everything(5)
    rng.random(3)
    common.save_state(tmp_path, {"rng": common.rng_state(rng), "history": [{"epoch": 1, "x": 0.5}]})
    first = (rng.random(4), np.random.rand(2), torch.rand(3), __import__("random").random())
    state = common.load_state(tmp_path)  # weights_only=True inside
    other = np.random.default_rng(99)
    common.set_rng_state(other, state["rng"])
    again = (other.random(4), np.random.rand(2), torch.rand(3), __import__("random").random())
    for x, y in zip(first, again):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert state["history"] == [{"epoch": 1, "x": 0.5}]


def test_resume_refuses_changed_options_but_accepts_more_epochs(tmp_path):
    common.check_config(tmp_path, {"lr": 1e-4, "epochs": 2, "data": "a.json"}, resume=False)
    common.check_config(tmp_path, {"lr": 1e-4, "epochs": 3, "data": "a.json"}, resume=True)
    with pytest.raises(ToolError, match="lr"):
        common.check_config(tmp_path, {"lr": 1e-3, "epochs": 3, "data": "a.json"}, resume=True)
    args = argparse.Namespace(out=tmp_path / "nothing", resume=True)
    with pytest.raises(ToolError, match="never finished an epoch"):
        common.open_run(args, "x")


# ------------------------------------------------------------------------------ decoder tool, e2e
@pytest.fixture(scope="module")
def sam_base(tmp_path_factory) -> Path:
    """A full random-weight small SAM checkpoint: the base the decoder is fine-tuned on (the segmenter
    must later see the same encoder, so the base must be a file, not a fresh random init)."""
    from scrap_perception.segmentation import build_sam_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "small_sam.pt"
    torch.save(build_sam_model("vit_b", arch=SMALL_SAM_ARCH).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def windows(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("windows")
    scenes = generate_dataset(root / "scenes", 24, seed=1, image_size=(240, 320), objects=(4, 8), progress=False)
    return instance_crop_dataset(scenes, root / "windows")


@pytest.fixture(scope="module")
def few_windows(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("few")
    scenes = generate_dataset(root / "scenes", 6, seed=4, image_size=(240, 320), objects=(4, 8), progress=False)
    return instance_crop_dataset(scenes, root / "windows", max_windows=16)


def decoder_args(data: Path, out: Path, base: Path, *extra: str) -> list[str]:
    return ["finetune-decoder", "--data", str(data), "--model-type", "vit_b", "--arch", json.dumps(SMALL_SAM_ARCH),
            "--checkpoint", str(base), "--device", "cpu", "--out", str(out), "--val-fraction", "0.25", *extra]


def decoder_runner(sam: torch.nn.Module, model_type: str, dtype: torch.dtype = torch.float32) -> ftd.DecoderRunner:
    from scrap_perception.segmentation import resolve_model_type
    from scrap_perception.segmentation.sam_backend import SamSegmenter

    return ftd.DecoderRunner(SamSegmenter(sam, resolve_model_type(model_type), torch.device("cpu"), dtype))


@pytest.mark.parametrize("model_type, package", [("vit_b", "segment_anything"), ("hq:vit_b", "segment_anything_hq")])
def test_decoder_runner_equals_the_packages_sam_predictor(model_type, package):
    """Embeddings and mask logits of the training forward are the reference predictor's, exactly."""
    import importlib

    from scrap_perception.segmentation import build_sam_model

    torch.manual_seed(0)
    sam = build_sam_model(model_type, arch=SMALL_SAM_ARCH)
    runner = decoder_runner(sam, model_type)
    rgb = np.random.default_rng(0).integers(0, 256, (150, 230, 3), dtype=np.uint8)
    features = runner.encode(rgb)
    predictor = importlib.import_module(package).SamPredictor(sam)
    predictor.set_image(rgb)
    assert torch.equal(features["embeddings"], predictor.features)
    for prompt in (Prompt(box=[20, 30, 120, 100]), Prompt(points=[[60, 60], [10, 10]], point_labels=[1, 0]),
                   Prompt(box=[20, 30, 120, 100], points=[[60, 60]], point_labels=[1])):
        logits = runner.logits(features, prompt)
        ref, _, _ = predictor.predict(point_coords=prompt.points if len(prompt.points) else None,
                                      point_labels=prompt.point_labels if len(prompt.points) else None,
                                      box=prompt.box, multimask_output=False, return_logits=True)
        assert logits.shape == (1, 1, 150, 230)
        np.testing.assert_allclose(logits[0].detach().numpy(), ref, atol=1e-5)
        assert nontrivial(ref[0] > 0)
    # frozen: only the mask decoder gets gradients
    runner.logits(features, Prompt(box=[20, 30, 120, 100])).sum().backward()
    assert all(p.grad is None for p in sam.image_encoder.parameters())
    assert all(p.grad is None for p in sam.prompt_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in sam.mask_decoder.parameters())


@pytest.mark.slow
def test_finetune_decoder_learns_and_the_segmenter_loads_its_checkpoint(windows, sam_base, tmp_path):
    from scrap_perception.segmentation import build_segmenter

    out = tmp_path / "run"
    assert cli(decoder_args(windows, out, sam_base, "--epochs", "8", "--lr", "1e-3")) == 0
    h = history(out)
    losses_ = [e["train_loss"] for e in h["history"]]
    assert len(losses_) == 8 and losses_[-1] < 0.85 * losses_[0], losses_
    assert h["best"]["val_dice"] > h["initial_val_dice"] + 0.15, h
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "cache").is_dir() and len(list((out / "cache").glob("*.pt"))) == len(json.loads(
        (out / "split" / "train.json").read_text())["images"]) + len(json.loads(
            (out / "split" / "val.json").read_text())["images"])

    ckpt = torch.load(out / "decoder_best.pt", weights_only=True)
    assert ckpt["kind"] == "sam_mask_decoder" and ckpt["model_type"] == "vit_b"
    assert ckpt["epoch"] == h["best"]["epoch"]
    assert not any(k.startswith("mask_decoder.") for k in ckpt["state_dict"])

    # The node's engine loads it, and its masks score what the tool measured at the best epoch.
    tuned = build_segmenter("vit_b", checkpoint=sam_base, arch=SMALL_SAM_ARCH, device="cpu",
                            decoder_checkpoint=out / "decoder_best.pt", precision="fp32")  # as the tool measured
    stock = build_segmenter("vit_b", checkpoint=sam_base, arch=SMALL_SAM_ARCH, device="cpu", precision="fp32")
    for k, v in ckpt["state_dict"].items():
        assert torch.equal(tuned.model.mask_decoder.state_dict()[k], v)
    val = CocoDataset(out / "split" / "val.json")
    scores = {"tuned": [], "stock": []}
    for rgb, sample in val:
        for name, seg in (("tuned", tuned), ("stock", stock)):
            seg.set_image(rgb)
            prompts = [strategy_prompt("S6", inst.mask) for inst in sample.instances]
            for inst, m in zip(sample.instances, seg.segment(prompts)):
                scores[name].append(dice(m.full(rgb.shape[:2]), inst.mask))
    assert np.mean(scores["tuned"]) == pytest.approx(h["best"]["val_dice"], abs=0.01)
    assert np.mean(scores["stock"]) == pytest.approx(h["initial_val_dice"], abs=0.01)
    assert np.mean(scores["tuned"]) > np.mean(scores["stock"]) + 0.15


@pytest.mark.slow
def test_interrupted_decoder_run_resumes_from_its_last_epoch(few_windows, sam_base, tmp_path, monkeypatch):
    straight, broken, extended = tmp_path / "straight", tmp_path / "broken", tmp_path / "extended"
    assert cli(decoder_args(few_windows, straight, sam_base, "--epochs", "3", "--lr", "1e-3")) == 0

    calls = []
    real = ftd.train_epoch

    def interrupted(*args, **kwargs):
        calls.append(args[-1])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ftd, "train_epoch", interrupted)
    assert cli(decoder_args(few_windows, broken, sam_base, "--epochs", "3", "--lr", "1e-3")) == 130
    assert len(history(broken)["history"]) == 2
    calls.clear()
    monkeypatch.setattr(ftd, "train_epoch", lambda *a, **k: (calls.append(a[-1]), real(*a, **k))[1])
    assert cli(decoder_args(few_windows, broken, sam_base, "--epochs", "3", "--lr", "1e-3", "--resume")) == 0
    assert calls == [3]
    # The interrupted-and-resumed run is the uninterrupted one, bit for bit.
    a, b = common.load_state(straight), common.load_state(broken)
    assert b["epoch"] == 3 and [e["epoch"] for e in b["history"]] == [1, 2, 3]
    for k in a["decoder"]:
        assert torch.equal(a["decoder"][k], b["decoder"][k]), k
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in a["history"]]
    assert strip == [{k: v for k, v in e.items() if k != "seconds"} for e in b["history"]]

    # --epochs 2, then --resume --epochs 3: exactly one more epoch, three history entries.
    calls.clear()
    assert cli(decoder_args(few_windows, extended, sam_base, "--epochs", "2", "--lr", "1e-3")) == 0
    assert cli(decoder_args(few_windows, extended, sam_base, "--epochs", "3", "--lr", "1e-3", "--resume")) == 0
    assert calls == [1, 2, 3]
    assert [e["epoch"] for e in history(extended)["history"]] == [1, 2, 3]


def test_finetune_decoder_bad_inputs_give_one_clear_line(few_windows, sam_base, tmp_path, capsys):
    from scrap_perception.segmentation import build_sam_model

    other = tmp_path / "hq.pt"
    torch.save(build_sam_model("hq:vit_b", arch=SMALL_SAM_ARCH).state_dict(), other)
    assert cli(decoder_args(few_windows, tmp_path / "a", other)) == 2
    err = capsys.readouterr().err
    assert "finetune-decoder: error: checkpoint=" in err and str(other) in err
    assert "SAM-HQ" in err and "Traceback" not in err

    clip_like = tmp_path / "clip.pt"
    torch.save({"epoch": 1, "step": 1, "name": "x", "state_dict": {"visual.conv1.weight": torch.zeros(2)}}, clip_like)
    assert cli(decoder_args(few_windows, tmp_path / "b", clip_like)) == 2
    assert "CN-CLIP" in capsys.readouterr().err

    assert cli(decoder_args(few_windows, tmp_path / "c", tmp_path / "missing.pt")) == 2
    assert "no such file" in capsys.readouterr().err

    assert cli(decoder_args(few_windows, tmp_path / "d", sam_base, "--resume")) == 2
    assert "never finished an epoch" in capsys.readouterr().err

    # a record whose image is missing is found before any work: no run folder is left behind
    broken = json.loads(few_windows.read_text())
    broken["images"][-1]["file_name"] = "images/not_there.png"
    bad_set = few_windows.parent / "broken.json"
    bad_set.write_text(json.dumps(broken))
    assert cli(decoder_args(bad_set, tmp_path / "e", sam_base)) == 2
    err = capsys.readouterr().err
    assert "not_there.png" in err and "Traceback" not in err and not (tmp_path / "e").exists()

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "nope.png", "height": 9, "width": 9}],
                               "annotations": [], "categories": []}))
    assert cli(decoder_args(bad, tmp_path / "e", sam_base, "--val", str(bad))) == 2
    err = capsys.readouterr().err
    assert "nope.png" in err and "unreadable image" in err


# --------------------------------------------------------------------------------- CLIP tool, e2e


@pytest.fixture(scope="module")
def clip_config(tmp_path_factory) -> Path:
    from scrap_perception.classification import small_clip_config

    path = tmp_path_factory.mktemp("clip") / "small_clip.json"
    path.write_text(json.dumps(small_clip_config()))
    return path


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    """Training (with its validation split) and never-seen test scenes for the CLIP learning test."""
    root = tmp_path_factory.mktemp("scenes")
    return {"train": generate_dataset(root / "train", 160, seed=2, image_size=(240, 320), objects=(4, 8),
                                      progress=False),
            "test": generate_dataset(root / "test", 60, seed=3, image_size=(240, 320), objects=(4, 8),
                                     progress=False)}


@pytest.fixture(scope="module")
def few_scenes(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("few_scenes"), 8, seed=5, image_size=(240, 320),
                            objects=(4, 8), progress=False)


def clip_args(data: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return ["finetune-clip", "--data", str(data), "--model", str(model), "--device", "cpu", "--out", str(out),
            "--val-fraction", "0.25", *extra]


def classify_all(classifier, ann_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """(true class ids, predicted class ids) of every instance of a COCO set, through the classifier."""
    from scrap_perception.masks import from_full

    truth, pred = [], []
    for rgb, sample in CocoDataset(ann_file):
        keep = [inst for inst in sample.instances if inst.area >= 64]
        truth += [inst.class_id for inst in keep]
        pred += [c.class_id for c in classifier.classify(rgb, [from_full(inst.mask, 1.0) for inst in keep])]
    return np.array(truth), np.array(pred)


def test_class_texts_and_inputs_are_the_classifiers(clip_config):
    """The differentiable text features and the cached-crop inputs equal what the classifier computes."""
    from scrap_perception.classification import build_clip_model, encode_labels, prepare_crops
    from scrap_perception.classification.resample import resize_crops
    from scrap_perception.labels import DEFAULT_LABELS
    from scrap_perception.masks import from_full

    torch.manual_seed(0)
    model = build_clip_model(str(clip_config))
    texts = ftc.ClassTexts(DEFAULT_LABELS, torch.device("cpu"))
    with torch.no_grad():
        ours = texts.features(model)
    ref = encode_labels(model, DEFAULT_LABELS, torch.device("cpu"))
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-5)
    assert float((ref @ ref.T - torch.eye(7)).abs().max()) > 1e-3  # distinct classes: the check can fail

    rgb = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    masks = [np.zeros((60, 80), bool), np.zeros((60, 80), bool)]
    masks[0][5:30, 10:70] = True
    masks[1][20:55, 40:50] = True
    inst = [from_full(m, 1.0) for m in masks]
    from scrap_perception.classification.crops import crop_images
    ours = ftc.to_input(resize_crops(crop_images(rgb, inst, 0.1, "gray"), 64), torch.device("cpu"))
    assert torch.equal(ours, prepare_crops(rgb, inst, 64, 0.1, "gray"))


@pytest.mark.slow
def test_finetune_clip_beats_chance_on_held_out_scenes_and_the_classifier_loads_it(scenes, clip_config, tmp_path):
    from scrap_perception.classification import build_classifier

    out = tmp_path / "run"
    assert cli(clip_args(scenes["train"], out, clip_config, "--lr", "5e-4", "--batch-size", "16",
                         "--epochs", "14", "--patience", "6")) == 0
    h = history(out)
    assert h["history"][-1]["train_loss"] < 0.9 * h["history"][0]["train_loss"]
    ckpt = torch.load(out / "clip_best.pt", weights_only=True)
    assert set(ckpt) == {"epoch", "step", "name", "state_dict"} and ckpt["epoch"] == h["best"]["epoch"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    classifier = build_classifier(str(clip_config), checkpoint=out / "clip_best.pt", device="cpu")
    # Same crops and weights as the tool's validation: the classifier reproduces its accuracy.
    truth, pred = classify_all(classifier, out / "split" / "val.json")
    assert np.mean(truth == pred) == pytest.approx(h["best"]["val_accuracy"], abs=1.5 / len(truth))
    # Scenes never seen in training or model selection: above chance by a permutation test, which
    # accounts for class imbalance and for the predictions' own class distribution.
    truth, pred = classify_all(classifier, scenes["test"])
    acc = float(np.mean(truth == pred))
    test = stats.permutation_test((truth,), lambda t: np.mean(t == pred), permutation_type="pairings",
                                  n_resamples=2000, alternative="greater", random_state=0)
    assert acc > 1 / 7 + 0.05 and test.pvalue < 0.01, (acc, test.pvalue)


@pytest.mark.slow
def test_finetune_clip_resumes_and_stops_early(few_scenes, clip_config, tmp_path, monkeypatch):
    calls = []
    real = ftc.train_epoch
    monkeypatch.setattr(ftc, "train_epoch", lambda *a, **k: (calls.append(a[-1]), real(*a, **k))[1])
    out = tmp_path / "resume"
    assert cli(clip_args(few_scenes, out, clip_config, "--lr", "1e-4", "--epochs", "2")) == 0
    assert cli(clip_args(few_scenes, out, clip_config, "--lr", "1e-4", "--epochs", "3", "--resume")) == 0
    assert calls == [1, 2, 3] and [e["epoch"] for e in history(out)["history"]] == [1, 2, 3]
    state = common.load_state(out)
    assert state["epoch"] == 3 and state["step"] == 3 * math.ceil(len(json.loads(
        (out / "split" / "train.json").read_text())["annotations"]) / 48)

    # lr 0: the validation accuracy cannot improve after epoch 1, so patience 1 stops after epoch 2.
    calls.clear()
    stop = tmp_path / "stop"
    assert cli(clip_args(few_scenes, stop, clip_config, "--lr", "0", "--epochs", "6", "--patience", "1")) == 0
    assert calls == [1, 2] and len(history(stop)["history"]) == 2


def test_finetune_clip_bad_inputs_give_one_clear_line(few_scenes, clip_config, sam_base, tmp_path, capsys):
    assert cli(clip_args(few_scenes, tmp_path / "a", clip_config, "--checkpoint", str(sam_base))) == 2
    err = capsys.readouterr().err
    assert "finetune-clip: error: --checkpoint=" in err and str(sam_base) in err
    assert "no CN-CLIP checkpoint" in err and "Traceback" not in err

    assert cli(clip_args(few_scenes, tmp_path / "b", Path("ViT-X-99"))) == 2
    assert "ViT-X-99" in capsys.readouterr().err
    assert cli(clip_args(few_scenes, tmp_path / "c", clip_config, "--background", "plaid")) == 2
    assert "background 'plaid'" in capsys.readouterr().err
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps([{"id": 0, "name": "Angle", "text": "角钢"}, {"id": 0, "name": "Bar", "text": "圆钢"}]))
    assert cli(clip_args(few_scenes, tmp_path / "d", clip_config, "--labels", str(labels))) == 2
    assert "duplicate id 0" in capsys.readouterr().err


@pytest.mark.slow
def test_both_tools_train_under_bf16_autocast(few_windows, few_scenes, sam_base, clip_config, tmp_path):
    """bf16 (CPU autocast here, the same code on CUDA) trains: finite losses, and bf16 masks of the
    decoder forward agree with fp32 ones."""
    from scrap_perception.segmentation import build_sam_model

    torch.manual_seed(0)
    sam = build_sam_model("vit_b", arch=SMALL_SAM_ARCH)
    rgb = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    prompt = Prompt(box=[30, 20, 110, 90], points=[[70, 55]], point_labels=[1])
    masks = {}
    for dtype in (torch.float32, torch.bfloat16):
        runner = decoder_runner(sam, "vit_b", dtype)
        masks[dtype] = (runner.logits(runner.encode(rgb), prompt)[0, 0] > 0).detach().numpy()
    assert nontrivial(masks[torch.float32])
    inter = np.logical_and(masks[torch.float32], masks[torch.bfloat16]).sum()
    assert inter / np.logical_or(masks[torch.float32], masks[torch.bfloat16]).sum() > 0.9

    for argv in (decoder_args(few_windows, tmp_path / "d", sam_base, "--epochs", "1", "--precision", "bf16"),
                 clip_args(few_scenes, tmp_path / "c", clip_config, "--epochs", "1", "--precision", "bf16")):
        assert cli(argv) == 0
        entry = history(Path(argv[argv.index("--out") + 1]))["history"][0]
        assert all(math.isfinite(v) for v in entry.values())
