"""/diagnostics for the perception node: one status for the node (models, device, per-stage latency,
queue) and one per camera (frame counters, expiries and rejections by reason).

Keys (all values are strings): node status ``latency.<stage>.p50_ms`` / ``.p95_ms`` / ``.max_ms`` /
``.samples`` (over the last 512 samples), ``batch.size_mean`` / ``batch.size_max``, ``segmenter``,
``classifier``, ``device``, ``queue.pending``, ``worker.busy``; camera status the
counters of ``stats.FRAME_COUNTERS``, ``waiting.images`` / ``waiting.detections``, ``expired.<reason>``
(pairing reasons) and ``rejected.<reason>``, plus ``rejected.total`` and ``expired.total``.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from .pairing import REASONS as PAIRING_REASONS
from .pairing import StampPairer
from .stats import NodeStats

OK, WARN, ERROR = b"\x00", b"\x01", b"\x02"


def node_status_name(node_name: str) -> str:
    return f"{node_name}: pipeline"


def camera_status_name(node_name: str, camera: str) -> str:
    return f"{node_name}: camera {camera}"


def build(node_name: str, hardware_id: str, stats: NodeStats, pairers: Mapping[str, StampPairer],
          info: Mapping[str, Any], stamp: Any = None) -> Any:
    """A diagnostic_msgs/DiagnosticArray of the node's current state."""
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
        level = WARN if lost else OK
        message = (f"{frames['published']} published, {frames['dropped']} dropped, "
                   f"{values['expired.total']} expired, {values['rejected.total']} rejected")
        arr.status.append(status(camera_status_name(node_name, cam), values, level, message))
    return arr


def _ms(seconds: float) -> str:
    return "nan" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def parse(msg: Any) -> dict[str, dict[str, str]]:
    """{status name: {key: value}} of a DiagnosticArray (for tests, the demo and humans)."""
    return {s.name: {kv.key: kv.value for kv in s.values} for s in msg.status}
