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


# The node's fast array builder in one process, the original (reference) builder in the other.
BUILT_PUBLISHER = f"""
import sys, time
sys.path.insert(0, {HERE!r})
import rclpy
from test_ros_conversions import array_header, sample_result
from scrap_perception.msg import ScrapInstanceArray
from scrap_perception.ros.conversions import result_to_msg
rclpy.init()
node = rclpy.create_node("built_publisher")
pub = node.create_publisher(ScrapInstanceArray, "cam_right/scrap_instances", 10)
msg = result_to_msg(sample_result(3), array_header(), "cam_right", (720, 1280), "mobile_sam:vit_t", "cn_clip:x")
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    pub.publish(msg)
    rclpy.spin_once(node, timeout_sec=0.2)
"""

REFERENCE_SUBSCRIBER = f"""
import sys
sys.path.insert(0, {HERE!r})
import numpy as np
import rclpy
from rclpy.serialization import deserialize_message, serialize_message
from test_ros_conversions import array_header, assert_same_array, reference_result_to_msg, sample_result
from scrap_perception.msg import ScrapInstanceArray
from scrap_perception.ros.conversions import mask_from_msg
rclpy.init()
node = rclpy.create_node("reference_subscriber")
got = []
node.create_subscription(ScrapInstanceArray, "cam_right/scrap_instances", got.append, 10)
while not got:
    rclpy.spin_once(node, timeout_sec=0.5)
result = sample_result(3)
reference = reference_result_to_msg(result, array_header(), "cam_right", (720, 1280), "mobile_sam:vit_t", "cn_clip:x")
# float32 fields hold float32 values once serialised: the reference goes through the same (de)serialisation
assert_same_array(got[0], deserialize_message(serialize_message(reference), ScrapInstanceArray))
for inst, m in zip(result.instances, got[0].instances):
    assert np.array_equal(mask_from_msg(m, (720, 1280)), inst.mask.full((720, 1280))), inst.id
print("instances", len(got[0].instances), "equal True")
"""


def test_built_array_arrives_equal_to_the_original_builders():
    """result_to_msg's array through real DDS equals, field for field, what the original builder makes."""
    pub = subprocess.Popen([sys.executable, "-c", BUILT_PUBLISHER], stderr=subprocess.PIPE, text=True)
    try:
        sub = subprocess.run([sys.executable, "-c", REFERENCE_SUBSCRIBER], capture_output=True, text=True, timeout=90)
    finally:
        pub.kill()
        _, pub_err = pub.communicate()
    assert sub.returncode == 0, sub.stderr + pub_err
    assert "instances 20 equal True" in sub.stdout, sub.stdout + sub.stderr
