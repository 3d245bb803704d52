"""The scrap-tools command line: synth, split, eval-seg, eval-cls, their tables, plots and input checks."""
import csv
import json

import numpy as np
import pytest

from scrap_perception import synth
from scrap_perception.tools import cli, plots, write_table

SMALL_SAM = {"embed_dim": 96, "depth": 2, "num_heads": 2, "global_attn_indexes": [1], "image_size": 256}


def _csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _png_ok(path):
    import matplotlib.image as mpimg
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0.01


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    return synth.generate_dataset(out, 2, seed=1, image_size=(120, 200), objects=(3, 5), progress=False)


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for command in ("synth", "split", "eval-seg", "eval-cls", "eval-system", "export", "prelabel",
                    "finetune-decoder", "finetune-clip"):
        assert command in text
    for command in ("synth", "split", "eval-seg", "eval-cls", "eval-system", "export", "prelabel"):
        with pytest.raises(SystemExit) as e:
            cli.main([command, "--help"])
        assert e.value.code == 0
        assert "--out" in capsys.readouterr().out


def test_unavailable_module_is_listed_and_explains(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "no_such_tool_module", "ghost")
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "ghost" in capsys.readouterr().out
    assert cli.main(["ghost"]) == 2
    assert "ghost is unavailable" in capsys.readouterr().err


def test_synth_and_split_commands(tmp_path, capsys):
    assert cli.main(["synth", "--num-images", "4", "--height", "90", "--width", "160", "--seed", "5",
                     "--preview", "2", "--out", str(tmp_path / "s")]) == 0
    _png_ok(tmp_path / "s" / "preview.png")
    ref = synth.generate_dataset(tmp_path / "ref", 4, seed=5, image_size=(90, 160), progress=False)
    assert (tmp_path / "s" / "annotations.json").read_bytes() == ref.read_bytes()
    assert cli.main(["split", "--data", str(tmp_path / "s" / "annotations.json"), "--val-fraction", "0.25",
                     "--out", str(tmp_path / "split")]) == 0
    assert "3 training images" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "split" / "val.json").read_text())["images"]) == 1
    assert cli.main(["split", "--data", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x")]) == 2
    assert "no such annotation file" in capsys.readouterr().err
    assert cli.main(["synth", "--num-images", "0", "--out", str(tmp_path / "z")]) == 2


def test_write_table(tmp_path):
    write_table(tmp_path / "t", ["a", "b"], [["x", 0.123456], ["y", float("nan")]], "T")
    assert _csv(tmp_path / "t.csv") == [{"a": "x", "b": "0.123456"}, {"a": "y", "b": "nan"}]
    md = (tmp_path / "t.md").read_text().splitlines()
    assert md[0] == "### T" and md[2] == "| a | b |" and md[4] == "| x | 0.1235 |" and md[5] == "| y | — |"


def test_tsne_separates_clusters_and_calibrates_perplexity():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (4, 16))
    ids = np.repeat(np.arange(4), 40)
    x = centres[ids] + rng.normal(0, 1, (160, 16))
    p = plots.conditional_affinities(x, 20.0)
    entropy = -np.sum(p * np.log(np.maximum(p, 1e-300)), axis=1)
    np.testing.assert_allclose(entropy, np.log(20.0), atol=1e-4)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert np.all(np.diag(p) == 0)
    y = plots.tsne(x, perplexity=20.0, iters=400, seed=1)
    d = ((y[:, None] - y[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (ids[d.argmin(1)] == ids).mean() > 0.95  # 1-NN in the embedding recovers the clusters
    np.testing.assert_array_equal(y, plots.tsne(x, perplexity=20.0, iters=400, seed=1))


def _broken_copies(tiny_set, tmp_path):
    """Copies of the tiny set with one bad record each: a missing image (the last), a zero-area polygon."""
    import shutil

    data = json.loads(tiny_set.read_text())
    out = {}
    for name in ("missing_image", "zero_area"):
        folder = tmp_path / name
        shutil.copytree(tiny_set.parent, folder)
        bad = json.loads(json.dumps(data))
        if name == "missing_image":
            (folder / bad["images"][-1]["file_name"]).unlink()
        else:
            bad["annotations"][-1]["segmentation"] = [[3, 3, 3, 3, 3, 3]]
        (folder / "annotations.json").write_text(json.dumps(bad))
        out[name] = folder / "annotations.json"
    return out


def test_bad_records_stop_every_tool_before_any_work(tiny_set, tmp_path, capsys):
    """split, eval-seg, eval-cls and eval-system find a missing image or an empty mask first: exit 2,
    one line naming the record, and no results folder."""
    bad = _broken_copies(tiny_set, tmp_path)
    runs = {"split": [], "eval-seg": ["--models", "grabcut"], "eval-cls": ["--model", "ViT-B-16"],
            "eval-system": ["--model-type", "grabcut", "--classifier", "none"]}
    for name, path in bad.items():
        for tool, extra in runs.items():
            out = tmp_path / f"{tool}-{name}"
            assert cli.main([tool, "--data", str(path), "--out", str(out), *extra]) == 2, (tool, name)
            err = capsys.readouterr().err.rsplit("\r", 1)[-1]  # after the progress bar
            assert err.startswith(f"{tool}: error: ") and err.count("\n") == 1, err
            assert ("unreadable image" if name == "missing_image" else "empty mask") in err
            assert not out.exists(), f"{tool} left a results folder for a bad dataset"
    assert cli.main(["split", "--data", str(tiny_set), "--val-fraction", "1.5", "--out", str(tmp_path / "v")]) == 2
    assert "--val-fraction" in capsys.readouterr().err and not (tmp_path / "v").exists()


def test_eval_seg_bad_input(tiny_set, tmp_path, capsys):
    base = ["eval-seg", "--data", str(tiny_set), "--out", str(tmp_path / "o")]
    assert cli.main(base + ["--models", "vit_q"]) == 2
    assert "model 'vit_q'" in capsys.readouterr().err
    assert cli.main(base + ["--models", "vit_b", "--checkpoint", "vit_l=x.pth"]) == 2
    assert "name no model" in capsys.readouterr().err
    assert cli.main(base + ["--models", "grabcut", "vit_b", "--checkpoint", "vit_b=" + str(tmp_path / "none.pth")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # every model is built before anything is evaluated or written
    assert cli.main(["eval-seg", "--data", str(tmp_path / "nope.json")]) == 2
    assert "no such annotation file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(base + ["--perturb", "random"])


def test_eval_seg_grabcut_results_do_not_depend_on_other_strategies(tiny_set, tmp_path, capsys):
    """OpenCV's generator is seeded per decoder call: S5 alone and S5 after S2..S4 give the same rows;
    S6-refined's first decoder call is S5's (same masks), so a refined point lies on an S5 mask."""
    def rows(strategies, out):
        assert cli.main(["eval-seg", "--data", str(tiny_set), "--models", "grabcut", "--strategies", *strategies,
                         "--shift-ranges", "--out", str(tmp_path / out)]) == 0
        return {(r["strategy"], r["ann_id"]): r for r in _csv(tmp_path / out / "instances.csv")}

    alone = rows(["S5"], "a")
    after = rows(["S2", "S3", "S4", "S5", "S6-refined"], "b")
    for key, r in alone.items():
        assert after[key] == r
    refined = [r for (s, _), r in after.items() if s == "S6-refined"]
    s5_empty = {a for (s, a), r in after.items() if s == "S5" and r["empty_best"] == "1.0"}
    assert {r["ann_id"] for r in refined if r["point_fallback"] == "True"} == s5_empty
    # No robustness test: Table 2, its plot and its CSV are neither written nor named.
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert not (tmp_path / "b" / "table2.md").exists() and not (tmp_path / "b" / "ra_bars.png").exists()
    assert "table2.md" not in summary["outputs"] and "ra_bars.png" not in summary["outputs"]
    assert all((tmp_path / "b" / name).exists() for name in summary["outputs"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "table1.md" in last and "table2" not in last and "ra_bars" not in last


def _bootstrap_reference(values, seed, resamples=1000):
    """The documented interval, recomputed by hand: resample indices with default_rng(seed), percentiles."""
    v = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    means = [v[rng.integers(0, len(v), len(v))].mean() for _ in range(resamples)]
    return tuple(np.percentile(means, [2.5, 97.5]))


@pytest.mark.slow
def test_eval_seg_produces_every_table_and_plot(tiny_set, tmp_path, capsys):
    out = tmp_path / "seg"
    rc = cli.main(["eval-seg", "--data", str(tiny_set), "--models", "vit_b", "--arch", json.dumps(SMALL_SAM),
                   "--repeats", "1", "--s1-points-per-side", "4", "--s1-pred-iou-thresh", "0",
                   "--s1-stability-thresh", "0", "--device", "cpu", "--seed", "3", "--bootstrap", "200",
                   "--perturb", "shift", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["outputs"]) == sorted(["table1.md", "table1.csv", "table2.md", "table2.csv", "ra_bars.png",
                                                 "robustness.csv", "instances.csv", "timing.csv", "dice_boxplot.png",
                                                 "summary.json", "config.json"])
    assert summary["perturb"] == "shift" and "box: shift" in (out / "table2.md").read_text()
    for name in ("dice_boxplot.png", "ra_bars.png"):
        _png_ok(out / name)
    n_gt = sum(1 for _ in json.loads(tiny_set.read_text())["annotations"])
    diag = float(np.hypot(120, 200))
    strategies = ["S1", "S2", "S3", "S4", "S5", "S6", "S6-centre", "S6-refined"]

    t1 = _csv(out / "table1.csv")
    inst = _csv(out / "instances.csv")
    assert [r["Strategy"] for r in t1] == strategies and len(inst) == len(strategies) * n_gt
    for r in t1:  # Table 1 recomputed from the per-instance rows
        rows = [x for x in inst if x["strategy"] == r["Strategy"]]
        dice = np.array([float(x["dice_best"]) for x in rows])
        hd95 = np.array([float(x["hd95_best"]) for x in rows])
        hd = np.array([float(x["hausdorff_best"]) for x in rows])
        assert int(r["Instances"]) == n_gt
        assert float(r["DICE"]) == pytest.approx(dice.mean()) and float(r["DICE std"]) == pytest.approx(dice.std())
        assert (float(r["DICE 95% lo"]), float(r["DICE 95% hi"])) == pytest.approx(_bootstrap_reference(dice, 3, 200))
        assert float(r["Hausdorff median (px)"]) == pytest.approx(np.median(hd))
        assert float(r["HD95 mean (px)"]) == pytest.approx(hd95.mean())
        assert float(r["HD95 median (px)"]) == pytest.approx(np.median(hd95))
        assert int(r["Empty predictions"]) == sum(float(x["empty_best"]) for x in rows)
        assert 0.0 <= float(r["HD95 mean (px)"]) <= float(r["Hausdorff mean (px)"]) <= diag
        assert float(r["Embedding (ms/img)"]) > 0 and float(r["Decoding (ms/prompt)"]) > 0
    assert int(t1[5]["Points off object"]) == 0  # S6: the oracle point is on the object by construction
    for r in inst:
        d, j = float(r["dice_best"]), float(r["jaccard_best"])
        assert j == pytest.approx(d / (2 - d))
        if r["strategy"] != "S1":  # best-DICE matching is never worse than the model's own choice
            assert d >= float(r["dice_top"]) - 1e-12
            assert int(r["candidates"]) == 3

    # Table 2 recomputed from the raw rows: drop = clean DICE - perturbed DICE; RA = DICE - mean drop; per
    # instance RA_i = its mean perturbed DICE (their mean is RA); unusable prompts counted.
    rob = _csv(out / "robustness.csv")
    t2 = _csv(out / "table2.csv")
    assert sorted({(r["Strategy"], r["Matching"]) for r in t2}) == sorted(
        (s, m) for s in strategies[1:] for m in ("best", "top"))
    for r in t2:
        s, m = r["Strategy"], r["Matching"]
        clean = np.mean([float(x[f"dice_{m}"]) for x in inst if x["strategy"] == s])
        mine = [x for x in rob if x["strategy"] == s]
        drops = [clean - np.mean([float(x[f"dice_{m}"]) for x in mine if x["range"] == rg])
                 for rg in ("0-10", "10-20", "20-30")]
        assert float(r["DICE"]) == pytest.approx(clean)
        assert [float(r[f"Drop {rg} px"]) for rg in ("0-10", "10-20", "20-30")] == pytest.approx(drops)
        assert float(r["RA"]) == pytest.approx(clean - np.mean(drops))
        per = [np.mean([float(x[f"dice_{m}"]) for x in mine if x["ann_id"] == a]) for a in {x["ann_id"] for x in mine}]
        assert float(r["RA"]) == pytest.approx(np.mean(per)) and float(r["RA std"]) == pytest.approx(np.std(per))
        assert int(r["Unusable"]) == sum(x["usable"] == "False" for x in mine)
        assert int(r["Perturbed prompts"]) == len(mine) == 3 * n_gt
        if int(r["Unusable"]):
            assert all(float(x["dice_best"]) == 0.0 for x in mine if x["usable"] == "False")
    assert len(rob) == 7 * 3 * 1 * n_gt
    timing = _csv(out / "timing.csv")
    assert {r["stage"] for r in timing} == {"embedding", "decoding"}
    assert "table2.md" in capsys.readouterr().out


def _fake_predictions(n=140, seed=0):
    from scrap_perception.tools.eval_cls import Predictions

    rng = np.random.default_rng(seed)
    runs = []
    for label, p_right in (("zero-shot", 0.3), ("fine-tuned", 0.9)):
        r = Predictions(label)
        r.y_true = rng.integers(0, 7, n).tolist()
        r.y_pred = [t if rng.random() < p_right else int(rng.integers(0, 7)) for t in r.y_true]
        r.scores = rng.random(n).tolist()
        r.embeddings = [np.eye(7)[t] * 3 + rng.normal(0, 0.3, 7) for t in r.y_true]
        r.refs = [(1, k) for k in range(n)]
        r.seconds = 1.0
        runs.append(r)
    return runs


@pytest.mark.parametrize("macro", ["all", "present"])
def test_eval_cls_report(tmp_path, macro):
    from scrap_perception.labels import DEFAULT_LABELS
    from scrap_perception.tools.eval_cls import report

    runs = _fake_predictions()
    for r in runs:  # classes 5 and 6 never occur nor are predicted
        keep = [k for k, (t, p) in enumerate(zip(r.y_true, r.y_pred)) if t < 5 and p < 5]
        for name in ("y_true", "y_pred", "scores", "embeddings", "refs"):
            setattr(r, name, [getattr(r, name)[k] for k in keep])
    summary = report(tmp_path, runs, DEFAULT_LABELS, seed=0, macro=macro, resamples=200)
    t3 = _csv(tmp_path / "table3.csv")
    per_class = _csv(tmp_path / "per_class.csv")
    assert [r["Checkpoint"] for r in t3] == ["zero-shot", "fine-tuned"]
    assert len(per_class) == 2 * (7 if macro == "all" else 5)
    for row, r in zip(t3, runs):
        t, p = np.array(r.y_true), np.array(r.y_pred)
        assert float(row["Accuracy"]) == pytest.approx(np.mean(t == p))
        assert float(row["Accuracy std"]) == pytest.approx(np.std(t == p))
        assert (float(row["Accuracy 95% lo"]), float(row["Accuracy 95% hi"])) == pytest.approx(
            _bootstrap_reference(t == p, 0, 200))
        # Independent macro F1 over the classes averaged: all seven, or the five present.
        f1s = []
        for k in range(7 if macro == "all" else 5):
            tp, fp, fn = np.sum((t == k) & (p == k)), np.sum((t != k) & (p == k)), np.sum((t == k) & (p != k))
            f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
        assert float(row["Macro F1"]) == pytest.approx(np.mean(f1s))
        assert float(row["Macro F1 95% lo"]) <= float(row["Macro F1"]) <= float(row["Macro F1 95% hi"])
        mine = [c for c in per_class if c["Checkpoint"] == r.label]  # the per-class table agrees with Table 3
        for col, key in (("F1", "Macro F1"), ("Precision", "Macro precision"), ("Recall", "Macro recall")):
            assert np.mean([float(c[col]) for c in mine]) == pytest.approx(float(row[key]))
        assert summary["checkpoints"][r.label]["crops"] == len(r.y_true)
    assert summary["macro"] == macro and "table3.md" in summary["outputs"]
    assert float(t3[1]["Accuracy"]) > float(t3[0]["Accuracy"])
    assert len(_csv(tmp_path / "predictions.csv")) == sum(len(r.y_true) for r in runs)
    _png_ok(tmp_path / "confusion.png")
    _png_ok(tmp_path / "tsne.png")


@pytest.mark.slow
def test_eval_cls_produces_every_table_and_plot(tiny_set, tmp_path, capsys):
    classification = pytest.importorskip("scrap_perception.classification")
    import torch

    cfg = tmp_path / "small_clip.json"
    cfg.write_text(json.dumps(classification.small_clip_config()))
    model = classification.build_clip_model(str(cfg))
    ckpt = tmp_path / "saved.pt"
    torch.save({"epoch": 1, "step": 1, "name": "test", "state_dict": model.state_dict()}, ckpt)
    base = ["eval-cls", "--data", str(tiny_set), "--model", str(cfg), "--device", "cpu", "--bootstrap", "100"]
    out = tmp_path / "cls"
    assert cli.main(base + ["--checkpoint", "random=none", "--checkpoint", f"saved={ckpt}", "--crop-margin", "0.1",
                            "--out", str(out)]) == 0
    n_gt = len(json.loads(tiny_set.read_text())["annotations"])
    t3 = _csv(out / "table3.csv")
    assert [r["Checkpoint"] for r in t3] == ["random", "saved"]
    for r in t3:
        assert int(r["Crops"]) == n_gt
        for k in ("Accuracy", "Macro precision", "Macro recall", "Macro F1"):
            assert 0.0 <= float(r[k]) <= 1.0
    assert json.loads((out / "config.json").read_text())["crop_margin"] == 0.1
    preds = _csv(out / "predictions.csv")
    assert {int(p["pred_id"]) for p in preds} <= set(range(7))
    for name in ("confusion.png", "tsne.png"):
        _png_ok(out / name)
    assert len(_csv(out / "per_class.csv")) == 14
    # Random weights are seeded: the same run twice gives the same predictions, another seed others.
    again, other = tmp_path / "again", tmp_path / "other"
    assert cli.main(base + ["--out", str(again)]) == 0 and cli.main(base + ["--seed", "5", "--out", str(other)]) == 0
    assert _csv(again / "predictions.csv") == [p for p in preds if p["checkpoint"] == "random"]
    scores = [[p["score"] for p in _csv(folder / "predictions.csv")] for folder in (again, other)]
    assert scores[0] != scores[1]
    # A fraction, not pixels: 0.1 is 10 % of the box; out of [0, 10] refused before anything is written.
    capsys.readouterr()
    assert cli.main(base + ["--crop-margin", "11", "--out", str(tmp_path / "bad_margin")]) == 2
    assert "crop margin" in capsys.readouterr().err and not (tmp_path / "bad_margin").exists()
    assert cli.main(base + ["--checkpoint", f"bad={tmp_path / 'missing.pt'}", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_model_entries_and_ranges():
    import argparse

    from scrap_perception.tools import ToolError
    from scrap_perception.tools.eval_seg import parse_models, parse_range

    entries = parse_models(["vit_b", "ft=vit_b", "mobile_sam:vit_t"], {"vit_b": "a.pth", "ft": "a.pth"},
                           {"ft": "dec.pt"})
    assert [(e.label, e.model_type, e.checkpoint, e.decoder_checkpoint) for e in entries] == [
        ("vit_b", "vit_b", "a.pth", None), ("ft", "vit_b", "a.pth", "dec.pt"),
        ("mobile_sam:vit_t", "mobile_sam:vit_t", None, None)]
    assert parse_models(["r=vit_b"], {"r": "none"}, {})[0].checkpoint is None  # 'none': random weights
    with pytest.raises(ToolError, match="duplicate labels"):
        parse_models(["vit_b", "vit_b"], {}, {})
    with pytest.raises(ToolError, match="name no model"):
        parse_models(["vit_b"], {}, {"ft": "dec.pt"})
    assert parse_range("10-20") == (10.0, 20.0)
    for bad in ("20-10", "x-1", "5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_range(bad)
