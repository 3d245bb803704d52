"""The benchmark's camera-set comparison (mode ``sets``): the perception node with ``sync.policy: sets``
beside ``independent``, in the same run, on the same models, weights and frames.

Two node processes (ros_session.RosSession: the independent node at the root, the sets node in its own
namespace) get the very same frame set of C cameras (one CameraInfo, Image and Detection2DArray per
camera, one stamp for all: a hardware trigger), one set in flight at a time, interleaved set by set
(independent, sets, sets, independent, ...). The driver waits for the C ScrapInstanceArrays and, from
the sets node, the ScrapViewSet; it checks every ScrapViewSet against the frames sent. Per policy:
frame sets per second (sets over the sum of their latencies: back to back, one in flight), latency from
sending to the set's last result (median, p95) and to its first result (median). At the end the sets
node's own counters (/diagnostics) are held against the sets sent (``accounting``).
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

from .timing import Clock, measure_interleaved

POLICIES = ("independent", "sets")  # the nodes compared (their sync.policy)
PER_SET_COUNTERS = ("sets.complete", "sets.published", "paired", "processed", "published")  # = the sets sent
REPORTED_ONLY = ("camera_info_missing",)  # a camera's CameraInfo may come after its image: not checked


def compare(ros: Any, boxes: int, cameras: int, repeats: int, warmup: int, clock: Clock,
            timeout_s: float) -> dict[str, Any]:
    """``repeats`` frame sets (``boxes`` per camera) to each node after ``warmup`` each, interleaved;
    ``result`` of the driver's answers, with the settings and ``sent`` (sets per node, warm-up included).
    A first set that never comes back raises RuntimeError (RosSession)."""
    fns = {p: (lambda p=p: ros.frame_set(boxes, cameras, timeout_s, target=p)) for p in POLICIES}
    samples = measure_interleaved(fns, clock, repeats, warmup)
    return dict(result({p: s.extras for p, s in samples.items()}, cameras), boxes=boxes, warmup=warmup,
                sent=warmup + repeats)


def result(answers: Mapping[str, Sequence[dict]], cameras: int) -> dict[str, Any]:
    """Per policy from the driver's answers (RosSession.frame_set): sets, missed, sets_per_s,
    latency_median_s / latency_p95_s (send -> last result), first_result_median_s; for the sets node
    view_sets received and ``mismatches``, those that do not hold exactly the ``cameras`` frames sent
    (``problems`` says how), and CameraInfos of an earlier frame. Then the ratios sets / independent and
    whether both nodes found the same instances."""
    out: dict[str, Any] = {"cameras": cameras, "policies": {}}
    for policy, got in answers.items():
        kept = [a for a in got if not a["missed"]]
        lat = [a["set_s"] for a in kept]
        r = {"sets": len(got), "missed": len(got) - len(kept), "latency_s": lat,
             "sets_per_s": len(lat) / sum(lat) if lat else math.nan,
             "latency_median_s": float(np.median(lat)) if lat else math.nan,
             "latency_p95_s": float(np.percentile(lat, 95)) if lat else math.nan,
             "first_result_median_s": float(np.median([min(a["latency_s"]) for a in kept])) if kept else math.nan,
             "instances": [a["instances"] for a in kept]}
        if policy == "sets":
            views = [a["view_set"] for a in got if "view_set" in a]
            bad = [v for v in views if v["problems"] or v["views"] != cameras]
            r.update(view_sets=len(views), mismatches=len(bad),
                     problems=sorted({p for v in bad for p in v["problems"]}),
                     stale_camera_infos=sum(v["stale_camera_infos"] for v in views))
        out["policies"][policy] = r
    ind, sets = (out["policies"][p] for p in POLICIES)
    out["ratios"] = {k: sets[f"{k}_s"] / ind[f"{k}_s"] for k in ("latency_median", "latency_p95")}
    out["ratios"]["sets_per_s"] = sets["sets_per_s"] / ind["sets_per_s"]
    out["instances_equal"] = len({json.dumps(i) for r in out["policies"].values() for i in r["instances"]}) == 1
    return out


def accounting(counters: Mapping[str, Any], sent: int) -> dict[str, Any]:
    """The sets node's own counters (/diagnostics: {"node": {sets.*}, "cameras": {camera: {...}}}) against
    the ``sent`` frame sets: every set complete and published, none partial, expired, superseded or
    waiting; per camera every frame paired, processed and published, none dropped, failed, expired in a
    set, late or missing. ``holds`` when all agree; ``differences`` lists the counters that do not (or
    why there are none: {"counters_error": ...})."""
    if "counters_error" in counters:
        return {"counters": {}, "holds": False, "differences": [counters["counters_error"]]}

    def off(values: Mapping[str, int], where: str) -> list[str]:
        expected = {k: sent if k in PER_SET_COUNTERS else 0 for k in values if k not in REPORTED_ONLY}
        return [f"{where}{k} {values[k]} (expected {v})" for k, v in expected.items() if values[k] != v]

    differences = off(counters["node"], "")
    for cam, values in counters["cameras"].items():
        differences += off(values, f"{cam} ")
    return {"counters": dict(counters), "holds": not differences, "differences": differences}


def markdown(cs: Mapping[str, Any]) -> list[str]:
    """bench.md's lines of the comparison: a row per policy, the ratios and the accounting."""
    def f(v: float, digits: int = 3) -> str:
        return "—" if v is None or v != v else f"{v:.{digits}f}"

    pol, ra = cs["policies"], cs["ratios"]
    lines = ["", f"Camera sets: {cs['cameras']} cameras x N={cs['boxes']}, the same frame set (one stamp) to a node "
             "with sync.policy independent and one with sets, interleaved set by set, one set in flight; "
             f"{pol['sets']['sets']} sets each after {cs['warmup']} warm-up; latency = send -> last result of the "
             "set (sets: the ScrapViewSet), seconds.", "",
             "| sync.policy | sets | sets/s | latency median | latency p95 | first result median | missed "
             "| ScrapViewSets | mismatches |", "|" + "---|" * 9]
    for name, r in pol.items():
        views = [str(r["view_sets"]), str(r["mismatches"])] if name == "sets" else ["—", "—"]
        lines.append(f"| {name} | {r['sets']} | {f(r['sets_per_s'], 2)} | {f(r['latency_median_s'])} | "
                     f"{f(r['latency_p95_s'])} | {f(r['first_result_median_s'])} | {r['missed']} | "
                     + " | ".join(views) + " |")
    lines += ["", f"sets / independent: latency median {f(ra['latency_median'])}, p95 {f(ra['latency_p95'])}, "
              f"sets/s {f(ra['sets_per_s'])}; same instances: {cs['instances_equal']}; CameraInfos of an earlier "
              f"frame in ScrapViewSets: {pol['sets']['stale_camera_infos']}"
              + (f"; mismatches: {'; '.join(pol['sets']['problems'])}." if pol["sets"]["problems"] else ".")]
    acc = cs.get("sets_node")
    if acc:
        counts = [", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in acc["counters"].get("node", {}).items())]
        verdict = "holds" if acc["holds"] else "differs: " + "; ".join(acc["differences"])
        lines.append(f"Sets node accounting ({cs['sent']} sets sent, warm-up included): "
                     + ": ".join([c for c in counts if c] + [verdict]) + ".")
    return lines
