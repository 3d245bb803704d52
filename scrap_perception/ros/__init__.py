"""The ROS 2 layer: the perception node, replay, recorder and the demo (the only code importing rclpy)."""
