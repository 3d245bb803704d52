"""ScrapInstanceArray travels between two processes over real DDS with every field intact."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros
HERE = os.path.dirname(os.path.abspath(__file__))

PUBLISHER = f"""
import sys, time
sys.path.insert(0, {HERE!r})
import rclpy
from msg_samples import sample_array
from scrap_perception.msg import ScrapInstanceArray
rclpy.init()
node = rclpy.create_node("sample_publisher")
pub = node.create_publisher(ScrapInstanceArray, "cam_left/scrap_instances", 10)
msg = sample_array()
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    pub.publish(msg)
    rclpy.spin_once(node, timeout_sec=0.2)
"""

SUBSCRIBER = f"""
import sys
sys.path.insert(0, {HERE!r})
import rclpy
from msg_samples import sample_array
from scrap_perception.msg import ScrapInstanceArray
rclpy.init()
node = rclpy.create_node("sample_subscriber")
got = []
node.create_subscription(ScrapInstanceArray, "cam_left/scrap_instances", got.append, 10)
while not got:
    rclpy.spin_once(node, timeout_sec=0.5)
expected, received = sample_array(), got[0]
for inst_r, inst_e in zip(received.instances, expected.instances):
    for field in inst_e.get_fields_and_field_types():
        if getattr(inst_r, field) != getattr(inst_e, field):
            print("MISMATCH", inst_e.id, field)
print("instances", len(received.instances), "equal", received == expected)
"""


def test_scrap_instance_array_round_trip_between_processes():
    pub = subprocess.Popen([sys.executable, "-c", PUBLISHER], stderr=subprocess.PIPE, text=True)
    try:
        sub = subprocess.run([sys.executable, "-c", SUBSCRIBER], capture_output=True, text=True, timeout=60)
    finally:
        pub.kill()
        _, pub_err = pub.communicate()
    assert sub.returncode == 0, sub.stderr + pub_err
    assert "MISMATCH" not in sub.stdout, sub.stdout
    assert "instances 4 equal True" in sub.stdout, sub.stdout + sub.stderr


def test_sample_is_fully_populated():
    """Guards the round trip test: an all-default message would compare equal trivially."""
    sys.path.insert(0, HERE)
    from msg_samples import sample_array

    msg = sample_array()
    assert len(msg.instances) == 4
    assert all(len(i.mask.data) == i.roi.height * i.roi.width > 0 for i in msg.instances)
    assert [len(i.embedding) for i in msg.instances] == [512, 0, 512, 0]
    assert len(msg.instances[0].class_scores) == 7 and msg.instances[3].class_id == 255
