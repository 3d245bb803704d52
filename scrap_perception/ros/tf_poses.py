"""Camera poses from TF (/tf_static and /tf, tf2_msgs/TFMessage), as robot_state_publisher and
static_transform_publisher publish them.

``tf_poses(node, on_bad)`` gives an object whose ``lookup(world, frame)`` returns T_world_frame (4x4,
the pose of ``frame`` in ``world``, multiview.transforms conventions) from static transforms and the
latest dynamic ones, or raises LookupError saying what is missing. With tf2_ros importable (a ROS
install) that is tf2_ros's Buffer and TransformListener; without (the PyPI wheels have no tf2_ros),
a multiview.transforms.FrameTree fed by the two topics with tf2_ros's listener QoS.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np
import rclpy.time
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from ..multiview.transforms import FrameTree, transform_matrix


class PoseLookup(Protocol):
    name: str  # where the transforms come from, for the log

    def lookup(self, world: str, frame: str) -> np.ndarray:
        """T_world_frame (4x4); LookupError naming the missing frame or link."""


def matrix_of(transform: Any) -> np.ndarray:
    """geometry_msgs/Transform -> (4, 4); ValueError for a zero or non-finite quaternion or translation."""
    t, q = transform.translation, transform.rotation
    return transform_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))


class Tf2Lookup:
    """tf2_ros's Buffer + TransformListener (its own subscriptions of /tf and /tf_static)."""

    name = "tf2_ros"

    def __init__(self, node: Any) -> None:
        import tf2_ros

        self._errors = tf2_ros.TransformException
        self.buffer = tf2_ros.Buffer()
        self.listener = tf2_ros.TransformListener(self.buffer, node)

    def lookup(self, world: str, frame: str) -> np.ndarray:
        try:
            return matrix_of(self.buffer.lookup_transform(world, frame, rclpy.time.Time()).transform)
        except self._errors as e:
            raise LookupError(str(e)) from None


class TopicLookup:
    """A FrameTree of every transform received on /tf_static (reliable, transient local: a late node
    still gets the latched ones) and /tf (reliable, volatile); a transform that is not rigid is skipped
    and reported through ``on_bad``. Frame ids lose a leading '/' as in tf2."""

    name = "/tf_static and /tf"
    QOS_STATIC = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
    QOS_DYNAMIC = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)

    def __init__(self, node: Any, on_bad: Callable[[str], None]) -> None:
        from tf2_msgs.msg import TFMessage

        self.tree = FrameTree()
        self.on_bad = on_bad
        node.create_subscription(TFMessage, "/tf_static", self._on_tf, self.QOS_STATIC)
        node.create_subscription(TFMessage, "/tf", self._on_tf, self.QOS_DYNAMIC)

    def _on_tf(self, msg: Any) -> None:
        for t in msg.transforms:
            parent, child = t.header.frame_id.lstrip("/"), t.child_frame_id.lstrip("/")
            try:
                self.tree.set(parent, child, matrix_of(t.transform))
            except ValueError as e:
                self.on_bad(f"transform {parent!r} -> {child!r} ignored: {e}")

    def lookup(self, world: str, frame: str) -> np.ndarray:
        return self.tree.lookup(world.lstrip("/"), frame.lstrip("/"))


def tf_poses(node: Any, on_bad: Callable[[str], None]) -> PoseLookup:
    """tf2_ros when importable, else a TopicLookup (needs tf2_msgs: the bootstrap builds one).
    ImportError when neither tf2_ros nor tf2_msgs is installed."""
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return TopicLookup(node, on_bad)
    return Tf2Lookup(node)
