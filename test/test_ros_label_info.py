"""LabelInfo: the label set as vision_msgs publishes it, latched so a late subscriber still gets it."""
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros
vision_msgs = pytest.importorskip("vision_msgs.msg")
if not hasattr(vision_msgs, "LabelInfo"):  # an old vision_msgs (before 4.0) has no LabelInfo
    pytest.skip("this vision_msgs has no LabelInfo", allow_module_level=True)

from scrap_perception.labels import DEFAULT_LABELS, Label  # noqa: E402
from scrap_perception.ros.conversions import label_info_msg  # noqa: E402

# Both processes build the same message; the subscriber compares what arrived with its own.
EXPECTED = """
from std_msgs.msg import Header
from scrap_perception.labels import DEFAULT_LABELS
from scrap_perception.ros.conversions import label_info_msg
header = Header(frame_id="scrap_perception")
header.stamp.sec, header.stamp.nanosec = 1700000000, 5
expected = label_info_msg(DEFAULT_LABELS, header, 0.25)
"""

PUBLISHER = EXPECTED + """
import rclpy
from vision_msgs.msg import LabelInfo
from scrap_perception.ros.qos import latched_qos
rclpy.init()
node = rclpy.create_node("label_info_publisher")
pub = node.create_publisher(LabelInfo, "scrap_perception/label_info", latched_qos())
pub.publish(expected)  # once, before anyone listens
print("published", flush=True)
while rclpy.ok():
    rclpy.spin_once(node, timeout_sec=0.2)
"""

SUBSCRIBER = EXPECTED + """
import time
import rclpy
from vision_msgs.msg import LabelInfo
from scrap_perception.ros.qos import latched_qos, output_qos
rclpy.init()
node = rclpy.create_node("label_info_subscriber")
latched, volatile = [], []
node.create_subscription(LabelInfo, "scrap_perception/label_info", latched.append, latched_qos())
node.create_subscription(LabelInfo, "scrap_perception/label_info", volatile.append, output_qos(10))
deadline = time.monotonic() + 45
while not latched and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.2)
end = time.monotonic() + 1.0  # a volatile reader, matched as late, must get nothing: latching did the work
while time.monotonic() < end:
    rclpy.spin_once(node, timeout_sec=0.1)
print("latched", len(latched), "volatile", len(volatile), "equal", bool(latched) and latched[0] == expected)
"""


def test_label_info_is_complete():
    from std_msgs.msg import Header

    labels = (*DEFAULT_LABELS[:2], Label(9, "Coil", "卷材"))
    msg = label_info_msg(labels, Header(frame_id="f"), 0.3)
    assert isinstance(msg, vision_msgs.LabelInfo) and msg.header.frame_id == "f"
    assert [(c.class_id, c.class_name) for c in msg.class_map] == [(0, "Angle"), (1, "Bar"), (9, "Coil")]
    assert msg.threshold == pytest.approx(0.3)
    full = label_info_msg(DEFAULT_LABELS, Header(), 0.0)
    assert [c.class_name for c in full.class_map] == ["Angle", "Bar", "Billet", "H", "Pipe", "Plate", "U"]
    assert [c.class_id for c in full.class_map] == list(range(7))


def test_late_subscriber_in_another_process_receives_the_latched_label_info():
    pub = subprocess.Popen([sys.executable, "-c", PUBLISHER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        assert pub.stdout.readline().strip() == "published", pub.stderr.read() if pub.poll() is not None else ""
        sub = subprocess.run([sys.executable, "-c", SUBSCRIBER], capture_output=True, text=True, timeout=90)
    finally:
        pub.kill()
        _, pub_err = pub.communicate()
    assert sub.returncode == 0, sub.stderr + pub_err
    assert "latched 1 volatile 0 equal True" in sub.stdout, sub.stdout + sub.stderr
