"""The scrap-tools command line: synth, split, eval-seg, eval-cls, their tables and plots."""
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
    for command in ("synth", "split", "eval-seg", "eval-cls", "finetune-decoder", "finetune-clip"):
        assert command in text
    for command in ("synth", "split", "eval-seg", "eval-cls"):
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


def test_eval_seg_bad_input(tiny_set, tmp_path, capsys):
    base = ["eval-seg", "--data", str(tiny_set), "--out", str(tmp_path / "o")]
    assert cli.main(base + ["--models", "vit_q"]) == 2
    assert "model 'vit_q'" in capsys.readouterr().err
    assert cli.main(base + ["--models", "vit_b", "--checkpoint", "vit_l=x.pth"]) == 2
    assert "name no model" in capsys.readouterr().err
    assert cli.main(base + ["--models", "vit_b", "--checkpoint", "vit_b=" + str(tmp_path / "none.pth")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["eval-seg", "--data", str(tmp_path / "nope.json")]) == 2
    assert "no such annotation file" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_seg_produces_every_table_and_plot(tiny_set, tmp_path):
    out = tmp_path / "seg"
    rc = cli.main(["eval-seg", "--data", str(tiny_set), "--models", "vit_b", "--arch", json.dumps(SMALL_SAM),
                   "--repeats", "1", "--s1-points-per-side", "4", "--s1-pred-iou-thresh", "0",
                   "--s1-stability-thresh", "0", "--device", "cpu", "--seed", "3", "--out", str(out)])
    assert rc == 0
    for name in ("table1.md", "table2.md", "summary.json", "config.json"):
        assert (out / name).stat().st_size > 0
    for name in ("dice_boxplot.png", "ra_bars.png"):
        _png_ok(out / name)
    n_gt = sum(1 for _ in json.loads(tiny_set.read_text())["annotations"])
    diag = float(np.hypot(120, 200))

    t1 = _csv(out / "table1.csv")
    assert [r["Strategy"] for r in t1] == ["S1", "S2", "S3", "S4", "S5", "S6"]
    for r in t1:
        assert int(r["Instances"]) == n_gt
        for k in ("DICE", "Jaccard", "DICE (top-IoU)"):
            assert 0.0 <= float(r[k]) <= 1.0
        assert 0.0 <= float(r["Hausdorff (px)"]) <= diag
        assert float(r["Embedding (ms/img)"]) > 0 and float(r["Decoding (ms/prompt)"]) > 0

    inst = _csv(out / "instances.csv")
    assert len(inst) == 6 * n_gt
    for r in inst:
        d, j = float(r["dice_best"]), float(r["jaccard_best"])
        assert j == pytest.approx(d / (2 - d))
        if r["strategy"] != "S1":  # best-DICE matching is never worse than the model's own choice
            assert d >= float(r["dice_top"]) - 1e-12
            assert int(r["candidates"]) == 3

    # Table 2 recomputed from the raw rows: drop = clean DICE - perturbed DICE; RA = DICE - mean drop.
    rob = _csv(out / "robustness.csv")
    t2 = _csv(out / "table2.csv")
    assert sorted({(r["Strategy"], r["Matching"]) for r in t2}) == sorted(
        (s, m) for s in ("S2", "S3", "S4", "S5", "S6") for m in ("best", "top"))
    for r in t2:
        s, m = r["Strategy"], r["Matching"]
        clean = np.mean([float(x[f"dice_{m}"]) for x in inst if x["strategy"] == s])
        drops = [clean - np.mean([float(x[f"dice_{m}"]) for x in rob if x["strategy"] == s and x["range"] == rg])
                 for rg in ("0-10", "10-20", "20-30")]
        assert float(r["DICE"]) == pytest.approx(clean)
        assert [float(r[f"Drop {rg} px"]) for rg in ("0-10", "10-20", "20-30")] == pytest.approx(drops)
        assert float(r["RA"]) == pytest.approx(clean - np.mean(drops))
    assert len(rob) == 5 * 3 * 1 * n_gt
    timing = _csv(out / "timing.csv")
    assert {r["stage"] for r in timing} == {"embedding", "decoding"}


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


def test_eval_cls_report(tmp_path):
    from scrap_perception.labels import DEFAULT_LABELS
    from scrap_perception.metrics import classification_report
    from scrap_perception.tools.eval_cls import report

    runs = _fake_predictions()
    summary = report(tmp_path, runs, DEFAULT_LABELS, seed=0)
    t3 = _csv(tmp_path / "table3.csv")
    assert [r["Checkpoint"] for r in t3] == ["zero-shot", "fine-tuned"]
    for row, r in zip(t3, runs):
        ref = classification_report(r.y_true, r.y_pred, list(range(7)))
        assert float(row["Accuracy"]) == pytest.approx(np.mean(np.array(r.y_true) == np.array(r.y_pred)))
        assert float(row["Macro F1"]) == pytest.approx(ref.macro_f1)
        assert summary[r.label]["crops"] == len(r.y_true)
    assert float(t3[1]["Accuracy"]) > float(t3[0]["Accuracy"])
    assert len(_csv(tmp_path / "per_class.csv")) == 14
    assert len(_csv(tmp_path / "predictions.csv")) == 2 * len(runs[0].y_true)
    _png_ok(tmp_path / "confusion.png")
    _png_ok(tmp_path / "tsne.png")


@pytest.mark.slow
def test_eval_cls_produces_every_table_and_plot(tiny_set, tmp_path):
    classification = pytest.importorskip("scrap_perception.classification")
    if not hasattr(classification, "build_classifier"):
        pytest.skip("the classification engine has not landed yet")
    import torch

    cfg = tmp_path / "small_clip.json"
    cfg.write_text(json.dumps(classification.small_clip_config()))
    model = classification.build_clip_model(str(cfg))
    ckpt = tmp_path / "saved.pt"
    torch.save({"epoch": 1, "step": 1, "name": "test", "state_dict": model.state_dict()}, ckpt)
    out = tmp_path / "cls"
    rc = cli.main(["eval-cls", "--data", str(tiny_set), "--model", str(cfg), "--checkpoint", "random=none",
                   "--checkpoint", f"saved={ckpt}", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    n_gt = len(json.loads(tiny_set.read_text())["annotations"])
    t3 = _csv(out / "table3.csv")
    assert [r["Checkpoint"] for r in t3] == ["random", "saved"]
    for r in t3:
        assert int(r["Crops"]) == n_gt
        for k in ("Accuracy", "Macro precision", "Macro recall", "Macro F1"):
            assert 0.0 <= float(r[k]) <= 1.0
    preds = _csv(out / "predictions.csv")
    assert {int(p["pred_id"]) for p in preds} <= set(range(7))
    for name in ("confusion.png", "tsne.png"):
        _png_ok(out / name)
    assert (out / "per_class.md").stat().st_size > 0
    assert cli.main(["eval-cls", "--data", str(tiny_set), "--model", str(cfg),
                     "--checkpoint", f"bad={tmp_path / 'missing.pt'}", "--out", str(tmp_path / "bad")]) == 2


def test_model_entries_and_ranges():
    import argparse

    from scrap_perception.tools import ToolError
    from scrap_perception.tools.eval_seg import parse_models, parse_range

    entries = parse_models(["vit_b", "ft=vit_b", "mobile_sam:vit_t"], {"vit_b": "a.pth", "ft": "a.pth"},
                           {"ft": "dec.pt"})
    assert [(e.label, e.model_type, e.checkpoint, e.decoder_checkpoint) for e in entries] == [
        ("vit_b", "vit_b", "a.pth", None), ("ft", "vit_b", "a.pth", "dec.pt"),
        ("mobile_sam:vit_t", "mobile_sam:vit_t", None, None)]
    with pytest.raises(ToolError, match="duplicate labels"):
        parse_models(["vit_b", "vit_b"], {}, {})
    with pytest.raises(ToolError, match="name no model"):
        parse_models(["vit_b"], {}, {"ft": "dec.pt"})
    assert parse_range("10-20") == (10.0, 20.0)
    for bad in ("20-10", "x-1", "5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_range(bad)
