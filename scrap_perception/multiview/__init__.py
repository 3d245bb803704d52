"""Multi-view geometry for camera sets, no ROS: the rig (cameras, intrinsics, poses), and what the
association of instances across cameras builds on."""
