"""QoS profiles of the nodes: sensor-data (best effort) inputs, reliable outputs, latched metadata."""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def input_qos(depth: int) -> QoSProfile:
    """The sensor-data profile (best effort, volatile, keep last) with the given depth."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def output_qos(depth: int) -> QoSProfile:
    """Reliable, volatile, keep last: what the node publishes (a best-effort reader also matches it)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    """Reliable, transient local, keep last 1: a message published once (LabelInfo) that a subscriber
    joining later still receives, if it asks for transient local durability too."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
