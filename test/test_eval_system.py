"""eval-system: the simulated detector, the matching, the accounting, and the tool's tables recomputed."""
import csv
import json

import numpy as np
import pytest

from scrap_perception import metrics, synth
from scrap_perception.data import CocoDataset, GTInstance, Sample
from scrap_perception.masks import from_full
from scrap_perception.pipeline import Pipeline
from scrap_perception.prompts import Prompt
from scrap_perception.segmentation.base import EncodedImage, Segmenter
from scrap_perception.tools import cli
from scrap_perception.tools import eval_system as es


def _csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _raster_iou(a, b, scale=4):
    """IoU of two boxes by counting the cells of a fine grid (independent of the formula under test)."""
    lo, hi = np.floor(np.minimum(a, b)[:2].min()) - 1, np.ceil(np.maximum(a, b)[2:].max()) + 1
    g = (np.arange(lo * scale, hi * scale) + 0.5) / scale
    xx, yy = np.meshgrid(g, g)

    def inside(box):
        return (xx >= box[0]) & (xx < box[2]) & (yy >= box[1]) & (yy < box[3])

    return (inside(a) & inside(b)).sum() / (inside(a) | inside(b)).sum()


def _sample(n, hw=(300, 400), seed=0):
    """A Sample of n rectangles (their masks and tight boxes) spread over the image."""
    rng = np.random.default_rng(seed)
    inst = []
    for k in range(n):
        x0, y0 = rng.integers(0, hw[1] - 40), rng.integers(0, hw[0] - 30)
        w, h = rng.integers(8, 40), rng.integers(6, 30)
        m = np.zeros(hw, bool)
        m[y0:y0 + h, x0:x0 + w] = True
        inst.append(GTInstance(k + 1, k % 7, "x", m, np.array([x0, y0, x0 + w, y0 + h], np.float32)))
    return Sample(1, None, hw[0], hw[1], inst)


def test_simulated_detector_rates_jitter_scores_and_seed():
    s = _sample(400)
    dets = es.simulate_detections(s, np.random.default_rng(1), jitter=5.0, miss_rate=0.2, spurious_rate=0.1)
    true = [d for d in dets if d.ann_id is not None]
    spurious = [d for d in dets if d.ann_id is None]
    assert abs(len(true) / 400 - 0.8) < 4 * np.sqrt(0.2 * 0.8 / 400)  # binomial: 4 standard errors
    assert abs(len(spurious) - 40) < 4 * np.sqrt(40)  # Poisson(0.1 x 400)
    assert [d.id for d in spurious] == [f"fp{k}" for k in range(len(spurious))]
    boxes = {g.ann_id: g.box for g in s.instances}
    for d in true:
        assert d.id == f"gt{d.ann_id}"
        assert np.all(np.abs(d.box - boxes[d.ann_id]) <= 5.0 + 1e-4) or d.box[2] == d.box[0] + 1
    for d in dets[:25] + spurious[:10]:  # score = best IoU with a ground-truth box, by raster counting
        near = [b for b in boxes.values()
                if b[0] < d.box[2] and d.box[0] < b[2] and b[1] < d.box[3] and d.box[1] < b[3]]
        best = max([_raster_iou(d.box.astype(float), b.astype(float)) for b in near], default=0.0)
        assert d.score == pytest.approx(best, abs=0.03)
    for d in spurious:
        assert d.box[0] >= 0 and d.box[1] >= 0 and d.box[2] <= 400 and d.box[3] <= 300
    again = es.simulate_detections(s, np.random.default_rng(1), 5.0, 0.2, 0.1)
    assert [(d.id, d.box.tolist()) for d in again] == [(d.id, d.box.tolist()) for d in dets]
    exact = es.simulate_detections(s, np.random.default_rng(1), 0.0, 0.0, 0.0)
    assert len(exact) == 400 and all(d.score == pytest.approx(1.0) for d in exact)
    assert es.simulate_detections(_sample(0), np.random.default_rng(0), 5.0, 0.0, 3.0) == []


def test_box_iou_against_raster_counts():
    rng = np.random.default_rng(2)
    a = np.sort(rng.uniform(0, 50, (6, 2, 2)), axis=1).transpose(0, 2, 1).reshape(6, 4)[:, [0, 2, 1, 3]]
    b = np.sort(rng.uniform(0, 50, (5, 2, 2)), axis=1).transpose(0, 2, 1).reshape(5, 4)[:, [0, 2, 1, 3]]
    iou = es.box_iou(a, b)
    for i in range(6):
        for j in range(5):
            assert iou[i, j] == pytest.approx(_raster_iou(a[i], b[j]), abs=0.02)


def test_greedy_matching_is_one_to_one_above_the_threshold():
    iou = np.array([[0.9, 0.6, 0.0],
                    [0.8, 0.7, 0.1],
                    [0.0, 0.55, 0.4],
                    [0.3, 0.2, 0.45]])
    assert es.match(iou, 0.5) == {0: 0, 1: 1}  # 0.9 first; then row 1's best left is 0.7; row 2 lost col 1
    assert es.match(iou, 0.4) == {0: 0, 1: 1, 3: 2}
    assert es.match(np.zeros((0, 3)), 0.5) == {} and es.match(np.zeros((2, 0)), 0.5) == {}
    # ties: the lower prediction, then the lower ground-truth index
    assert es.match(np.array([[0.6, 0.6], [0.6, 0.6]]), 0.5) == {0: 0, 1: 1}


class _OriginSegmenter(Segmenter):
    """A fake segmenter: the (integer) prompt box as mask, so every DICE is known independently."""

    name = "fake:box"

    def encode(self, images):
        return [EncodedImage(im.shape[:2], im.shape[:2], im) for im in images]

    def segment(self, prompts, encoded=None, return_logits=False):
        h, w = encoded.original_hw
        out = []
        for p in prompts:
            x0, y0, x1, y1 = np.clip(np.round(p.box), 0, [w, h, w, h]).astype(int)
            m = np.zeros((h, w), bool)
            m[y0:y1, x0:x1] = True
            out.append(from_full(m, 0.9))
        return out


def test_evaluate_image_scores_and_accounts_every_detection():
    s = _sample(60, seed=3)
    rgb = np.zeros((300, 400, 3), np.uint8)
    dets = es.simulate_detections(s, np.random.default_rng(4), jitter=3.0, miss_rate=0.2, spurious_rate=0.3)
    dets.append(es.SimDetection(np.array([np.nan, 0, 5, 5], np.float32), 0.0, None, "fpnan"))
    tally = es.Tally()
    es.evaluate_image(Pipeline(_OriginSegmenter()), "box", rgb, s, dets, 0.5, tally)
    c = tally.counts
    rows = {r["ann_id"]: r for r in tally.instances}
    assert len(rows) == 60 and c["ground truth"] == 60 and c["detections"] == len(dets)
    assert c["rejected: nan_box"] == 1 and c["published masks"] == len(dets) - 1
    # every ground truth is matched, missed by the detector or detected but not matched
    matched = sum(r["matched"] for r in rows.values())
    assert matched + c["ground truth missed by the detector"] + c["ground truth detected but not matched"] == 60
    assert c["ground truth missed by the detector"] == 60 - len({d.ann_id for d in dets if d.ann_id})
    # every published mask is matched or not, by origin
    assert sum(v for k, v in c.items() if k.startswith(("matched", "unmatched"))) == c["published masks"]
    assert sum(v for k, v in c.items() if k.startswith("matched")) == matched
    # DICE / IoU of each matched instance: the box mask of the detection it matched, by metrics.dice / jaccard
    gts = {g.ann_id: g for g in s.instances}
    enc = EncodedImage((300, 400), (300, 400), rgb)
    hits = [d for d in tally.detections if d["matched_ann_id"] != ""]
    assert len(hits) == matched > 20
    for d in hits:
        box = np.array([d["x0"], d["y0"], d["x1"], d["y1"]], np.float32)
        mask = _OriginSegmenter().segment([Prompt(box=box)], enc)[0].full((300, 400))
        g = gts[d["matched_ann_id"]]
        assert rows[g.ann_id]["dice"] == pytest.approx(metrics.dice(mask, g.mask))
        assert rows[g.ann_id]["iou"] == pytest.approx(metrics.jaccard(mask, g.mask)) and rows[g.ann_id]["iou"] >= 0.5
    for r in rows.values():
        if not r["matched"]:
            assert r["dice"] == 0.0
    assert {d["id"] for d in tally.detections} == {d.id for d in dets}
    assert next(d for d in tally.detections if d["id"] == "fpnan")["rejected"] == "nan_box"


def test_a_perfect_system_scores_one():
    s = _sample(30, seed=5)
    tally = es.Tally()
    dets = es.simulate_detections(s, np.random.default_rng(0), 0.0, 0.0, 0.0)
    es.evaluate_image(Pipeline(_OriginSegmenter()), "box", np.zeros((300, 400, 3), np.uint8), s, dets, 0.5, tally)
    overlapping = {j for j, g in enumerate(s.instances)
                   if any((g.mask & o.mask).any() for o in s.instances if o is not g)}
    for j, r in enumerate(tally.instances):
        if j not in overlapping:  # a box is its rectangle's exact mask
            assert r["matched"] and r["dice"] == pytest.approx(1.0) and r["iou"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_sys")
    return synth.generate_dataset(out, 2, seed=2, image_size=(160, 240), objects=(4, 6), progress=False)


def test_eval_system_bad_options(tiny_set, tmp_path, capsys):
    base = ["eval-system", "--data", str(tiny_set), "--out", str(tmp_path / "o")]
    for extra, msg in ((["--model-type", "vit_b", "--classifier", "none"], "needs --checkpoint"),
                       (["--model-type", "grabcut"], "needs --clip-checkpoint"),
                       (["--model-type", "grabcut", "--classifier", "none", "--miss-rate", "1.5"], "--miss-rate"),
                       (["--model-type", "vit_b", "--checkpoint", str(tmp_path / "no.pth"), "--classifier", "none"],
                        "no such file")):
        assert cli.main(base + extra) == 2
        assert msg in capsys.readouterr().err.rsplit("\r", 1)[-1]
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_eval_system_tables_recompute_from_the_rows(tiny_set, tmp_path):
    from tiny_models import small_clip_json

    out = tmp_path / "sys"
    rc = cli.main(["eval-system", "--data", str(tiny_set), "--model-type", "grabcut",
                   "--classifier", small_clip_json(tmp_path), "--clip-checkpoint", "none", "--device", "cpu",
                   "--prompt-mode", "box_point", "box_point_refined", "--jitter", "4", "--miss-rate", "0.2",
                   "--spurious-rate", "0.3", "--bootstrap", "200", "--seed", "7", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert all((out / name).is_file() for name in summary["outputs"])
    assert {"system.md", "accounting.md", "per_class.md", "confusion.png", "instances.csv"} <= set(summary["outputs"])
    system = {r["Prompt mode"]: r for r in _csv(out / "system.csv")}
    inst, dets = _csv(out / "instances.csv"), _csv(out / "detections.csv")
    acc = {r["Count"]: r for r in _csv(out / "accounting.csv")}
    n_gt = len(CocoDataset(tiny_set)[0].instances) + len(CocoDataset(tiny_set)[1].instances)
    for mode in ("box_point", "box_point_refined"):
        r, rows = system[mode], [x for x in inst if x["mode"] == mode]
        matched = [x for x in rows if x["matched"] == "True"]
        dice = np.array([float(x["dice"]) for x in rows])
        assert int(r["Instances"]) == len(rows) == n_gt and int(r["Matched"]) == len(matched)
        assert float(r["Instance DICE"]) == pytest.approx(dice.mean())
        assert float(r["DICE std"]) == pytest.approx(dice.std())
        assert float(r["Recall"]) == pytest.approx(len(matched) / n_gt)
        assert float(r["Precision"]) == pytest.approx(len(matched) / int(r["Published masks"]))
        assert int(r["Published masks"]) == int(acc["published masks"][mode])
        assert int(r["Detections"]) == len([d for d in dets if d["mode"] == mode]) == int(acc["detections"][mode])
        if matched:
            t = np.array([int(x["true_id"]) for x in matched])
            p = np.array([int(x["pred_id"]) for x in matched])
            assert float(r["Class accuracy (matched)"]) == pytest.approx(np.mean(t == p))
            assert float(r["Macro F1 (matched)"]) == pytest.approx(metrics.classification_report(
                t, p, list(range(7))).macro_f1)
        assert float(r["DICE 95% lo"]) <= float(r["Instance DICE"]) <= float(r["DICE 95% hi"])
    # the same simulated detections for every mode
    assert [d["id"] for d in dets if d["mode"] == "box_point"] == [d["id"] for d in dets if d["mode"] != "box_point"]
    assert len(_csv(out / "per_class.csv")) == 14
    again = tmp_path / "again"
    assert cli.main(["eval-system", "--data", str(tiny_set), "--model-type", "grabcut",
                     "--classifier", small_clip_json(tmp_path), "--clip-checkpoint", "none", "--device", "cpu",
                     "--prompt-mode", "box_point_refined", "--jitter", "4", "--miss-rate", "0.2",
                     "--spurious-rate", "0.3", "--bootstrap", "200", "--seed", "7", "--out", str(again)]) == 0
    assert _csv(again / "instances.csv") == [x for x in inst if x["mode"] == "box_point_refined"]  # seeded
