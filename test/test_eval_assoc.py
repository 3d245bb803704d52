"""``scrap-tools eval-assoc``: its metrics against brute-force computations, and the CLI on a generated rig."""
import csv
import json
import shutil
import numpy as np
import pytest

from scrap_perception.tools import cli
from scrap_perception.multiview.views import detection_from_full
from scrap_perception.tools.eval_assoc import colour_embedding, pair_counts, represented, scene_extent


def _brute_pairs(pred, truth):
    tp = n_pred = n_true = 0
    refs = list(truth)
    for i in range(len(refs)):
        for j in range(i + 1, len(refs)):
            a, b = refs[i], refs[j]
            if a[0] == b[0]:
                continue
            same_pred = pred.get(a) is not None and pred.get(a) == pred.get(b)
            same_true = truth[a] == truth[b]
            n_pred += same_pred
            n_true += same_true
            tp += same_pred and same_true
    return tp, n_pred, n_true


@pytest.mark.parametrize("seed", range(10))
def test_pair_counts_match_a_brute_force_count(seed):
    rng = np.random.default_rng(seed)
    refs = [(f"cam{c}", k) for c in range(4) for k in range(rng.integers(0, 6))]
    truth = {r: int(rng.integers(0, 5)) for r in refs}  # may put one object twice in a camera
    pred = {r: (None if rng.random() < 0.2 else int(rng.integers(0, 4))) for r in refs}
    del pred[refs[0]]  # absent = alone
    assert pair_counts(pred, truth) == _brute_pairs(pred, truth)


def test_pair_counts_of_a_perfect_and_of_an_empty_prediction():
    truth = {("a", 0): 1, ("b", 0): 1, ("c", 0): 1, ("a", 1): 2, ("b", 1): 2}
    assert pair_counts({r: o for r, o in truth.items()}, truth) == (4, 4, 4)
    assert pair_counts({}, truth) == (0, 0, 4)


def test_represented_takes_majorities_of_two_or_more():
    truth = {("a", 0): 1, ("b", 0): 1, ("c", 0): 2, ("a", 1): 2, ("b", 1): 3, ("c", 1): 3, ("d", 0): 3}
    groups = [[("a", 0), ("b", 0), ("c", 0)],  # 1 (2 of 3)
              [("a", 1), ("b", 1)],  # a tie of singles: nobody
              [("c", 1), ("d", 0)]]  # 3
    assert represented(groups, truth) == {1: 0, 3: 2}
    assert represented([[("b", 1), ("c", 1), ("d", 0)], [("c", 1), ("d", 0)]], truth) == {3: 0}


def test_scene_extent_is_the_diagonal_around_the_yawed_boxes():
    one = {1: {"position": [0, 0, 0.5], "yaw": 0.0, "size": [2.0, 1.0, 1.0]}}
    assert np.isclose(scene_extent(one), np.sqrt(6.0))
    turned = {1: {"position": [0, 0, 0.5], "yaw": np.pi / 4, "size": [2.0, 0.0, 1.0]}}
    assert np.isclose(scene_extent(turned), np.sqrt(2 * 2.0 + 1.0))
    two = {1: one[1], 2: {"position": [4, 0, 0.5], "yaw": 0.0, "size": [2.0, 1.0, 1.0]}}
    assert np.isclose(scene_extent(two), np.sqrt(36 + 1 + 1))


def test_the_colour_stand_in_embedding_compares_masked_colours_only():
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :30] = (200, 90, 40)  # rust
    rgb[:, 30:] = (120, 120, 125)  # grey steel
    left = np.zeros((40, 60), bool)
    left[5:35, 2:28] = True
    other_left = np.zeros_like(left)
    other_left[10:20, 5:25] = True
    right = np.zeros_like(left)
    right[5:35, 32:58] = True
    e = [colour_embedding(rgb, detection_from_full("c", "x", m)) for m in (left, other_left, right)]
    assert all(np.isclose(np.linalg.norm(v), 1.0) for v in e) and e[0].shape == (128,)
    assert np.isclose(e[0] @ e[1], 1.0) and e[0] @ e[2] < 0.1


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    assert cli.main(["synth", "--cameras", "3", "--frames", "2", "--objects", "5", "6", "--width", "320",
                     "--height", "240", "--preview", "0", "--seed", "1", "--out", str(out)]) == 0
    return out


def test_cli_on_a_generated_rig_writes_consistent_tables(generated, tmp_path, capsys):
    out = tmp_path / "res"
    assert cli.main(["eval-assoc", "--data", str(generated), "--jitter", "10-20", "--quiet", "--out", str(out)]) == 0
    for name in ("table.md", "table.csv", "objects.csv", "positions.png", "error_hist.png", "summary.json",
                 "config.json"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    rows = {(r["Condition"], r["Cues"]): r for r in summary["rows"]}
    assert set(rows) == {(c, q) for c in ("gt", "grabcut", "grabcut+jitter 10-20")
                         for q in ("geometry", "geometry+colour")}
    gt = rows[("gt", "geometry")]
    assert gt["F1"] >= 0.9 and gt["Recovered"] >= 0.9 and gt["Sets"] == 2
    # the table's error statistics are those of objects.csv
    with open(out / "objects.csv", newline="") as f:
        objs = [r for r in csv.DictReader(f) if (r["condition"], r["cues"]) == ("gt", "geometry")]
    errors = [float(r["error_m"]) for r in objs]
    assert np.isclose(gt["3D median (m)"], np.median(errors), atol=1e-4)
    assert np.isclose(gt["3D median (% extent)"], 100 * gt["3D median (m)"] / summary["scene_extent_m"])
    # and independently of the tool: each estimate's error against objects.json
    truth = json.loads((generated / "objects.json").read_text())
    pos = {(f["frame"], o["object_id"]): np.array(o["position"]) for f in truth["frames"] for o in f["objects"]}
    for r in objs:
        est = np.array([float(r[k]) for k in ("x", "y", "z")])
        assert np.isclose(np.linalg.norm(est - pos[(int(r["frame"]), int(r["object_id"]))]), float(r["error_m"]),
                          atol=2e-4)
    assert gt["3D median (m)"] < 0.02 * summary["scene_extent_m"]
    assert "gt" in capsys.readouterr().out


def test_the_same_seed_gives_the_same_table(generated, tmp_path):
    for k in range(2):
        assert cli.main(["eval-assoc", "--data", str(generated), "--no-grabcut", "--quiet", "--out",
                         str(tmp_path / f"r{k}")]) == 0
    tables = [(tmp_path / f"r{k}" / "objects.csv").read_text() for k in range(2)]
    assert tables[0] == tables[1]


def test_a_folder_that_is_not_a_rig_is_refused_before_any_work(generated, tmp_path, capsys):
    assert cli.main(["eval-assoc", "--data", str(tmp_path), "--quiet", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.startswith("eval-assoc: error: ") and not (tmp_path / "r").exists()
    broken = tmp_path / "broken"
    shutil.copytree(generated, broken)
    (broken / "images" / "cam1" / "000001.png").unlink()
    assert cli.main(["eval-assoc", "--data", str(broken), "--quiet", "--out", str(tmp_path / "b")]) == 2
    assert "unreadable image images/cam1/000001.png" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_pairs_within_one_camera_are_not_counted():
    refs = [("a", 0), ("b", 0), ("b", 1), ("c", 0)]  # 6 pairs, 1 within camera b
    truth = dict.fromkeys(refs, 7)
    assert pair_counts(dict.fromkeys(refs, 0), truth) == (5, 5, 5)
