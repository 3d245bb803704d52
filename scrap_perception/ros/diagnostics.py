"""/diagnostics for the perception node: one status for the node (models, device, per-stage latency,
queue) and one per camera (frame counters, expiries and rejections by reason).

Keys (all values are strings): node status ``latency.<stage>.p50_ms`` / ``.p95_ms`` / ``.max_ms`` /
``.samples`` (over the last 512 samples), ``batch.size_mean`` / ``batch.size_max``, ``segmenter``,
``classifier``, ``segmenter.precision`` / ``classifier.precision`` (what 'auto' resolved to), ``device``,
``state``, ``queue.pending``, ``worker.busy``, with camera sets
``sets.<complete|partial|expired|superseded|published|waiting>``; camera status the counters of
``stats.FRAME_COUNTERS``, ``waiting.images`` / ``waiting.detections``, ``expired.<reason>`` (pairing
reasons) and ``rejected.<reason>``, plus ``rejected.total`` and ``expired.total``; with camera sets
``set.expired`` / ``set.missing`` / ``set.late`` / ``set.waiting`` (per camera: paired = processed +
dropped + set.expired + failed + set.waiting); ``silent_s`` for a camera without images for a while.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from .camera_sets import SetSynchronizer
from .pairing import REASONS as PAIRING_REASONS
from .pairing import StampPairer
from .stats import CAMERA_INFO_MISSING, NodeStats

OK, WARN, ERROR = b"\x00", b"\x01", b"\x02"


def node_status_name(node_name: str) -> str:
    return f"{node_name}: pipeline"


def camera_status_name(node_name: str, camera: str) -> str:
    return f"{node_name}: camera {camera}"


def build(node_name: str, hardware_id: str, stats: NodeStats, pairers: Mapping[str, StampPairer],
          info: Mapping[str, Any], stamp: Any = None, sets: Optional[SetSynchronizer] = None,
          silent: Mapping[str, float] = {}) -> Any:
    """A diagnostic_msgs/DiagnosticArray of the node's current state. sets: the camera-set synchronizer
    (sync.policy sets); silent: camera -> seconds since its last image, for cameras gone quiet."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    def status(name: str, values: Mapping[str, Any], level: bytes, message: str) -> DiagnosticStatus:
        return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                                values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])

    arr = DiagnosticArray()
    if stamp is not None:
        arr.header.stamp = stamp
    node_values: dict[str, Any] = dict(info)
    for stage, (p50, p95, top, n) in stats.latency().items():
        node_values[f"latency.{stage}.p50_ms"] = _ms(p50)
        node_values[f"latency.{stage}.p95_ms"] = _ms(p95)
        node_values[f"latency.{stage}.max_ms"] = _ms(top)
        node_values[f"latency.{stage}.samples"] = n
    mean, biggest = stats.batch_sizes()
    node_values["batch.size_mean"] = "nan" if math.isnan(mean) else f"{mean:.2f}"
    node_values["batch.size_max"] = biggest
    if sets is not None:
        node_values.update({f"sets.{k}": v for k, v in sorted(sets.set_counts.items())})
        node_values.update({f"sets.{k}": v for k, v in stats.sets().items()})
        node_values["sets.waiting"] = len(sets.open)
    arr.status.append(status(node_status_name(node_name), node_values, OK, "running"))
    for cam in stats.cameras:
        frames = stats.frames(cam)
        rejected = stats.rejected(cam)
        pairer = pairers[cam]
        values: dict[str, Any] = dict(frames)
        values["waiting.images"], values["waiting.detections"] = pairer.waiting
        for reason in PAIRING_REASONS:
            values[f"expired.{reason}"] = pairer.counts[reason]
        values["expired.total"] = sum(pairer.counts[r] for r in PAIRING_REASONS)
        for reason, n in sorted(rejected.items()):
            values[f"rejected.{reason}"] = n
        values["rejected.total"] = sum(rejected.values())
        lost = values["dropped"] + values["expired.total"] + values["rejected.total"] + values["failed"]
        message = (f"{frames['published']} published, {frames['dropped']} dropped, "
                   f"{values['expired.total']} expired, {values['rejected.total']} rejected")
        if sets is not None:  # paired = processed + dropped + set.expired + failed + set.waiting
            values.update({f"set.{k}": v for k, v in sorted(sets.counts[cam].items())})
            values["set.waiting"] = sets.waiting[cam]
            lost += values["set.expired"]
            message += f", {values['set.expired']} expired in camera sets, missing from {values['set.missing']}"
        if cam in silent:
            values["silent_s"] = f"{silent[cam]:.1f}"
            message = f"silent: no image for {silent[cam]:.1f} s; " + message
        level = WARN if lost or cam in silent or frames[CAMERA_INFO_MISSING] else OK
        arr.status.append(status(camera_status_name(node_name, cam), values, level, message))
    return arr


def _ms(seconds: float) -> str:
    return "nan" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def parse(msg: Any) -> dict[str, dict[str, str]]:
    """{status name: {key: value}} of a DiagnosticArray (for tests, the demo and humans)."""
    return {s.name: {kv.key: kv.value for kv in s.values} for s in msg.status}
