"""The demo with ros2 launch: replay a COCO dataset (or an MCAP) -> scrap_perception_node -> recorder.

    ros2 launch scrap_perception demo.launch.py source:=out/demo/data/annotations.json \
        camera_names:="[cam0, cam1, cam2]" rviz:=true

Per camera only; `python -m scrap_perception.ros.demo` runs the multi-view chain (camera sets -> association
node -> ScrapObjects) without ros2 launch on a rig it generates; multiview.launch.py starts those two nodes.
Arguments: source, camera_names, rate, jitter_px, params_file, output (MCAP), overlay_dir, rviz.
"""
import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def _nodes(context):
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    cameras = [str(c) for c in yaml.safe_load(arg("camera_names"))]
    topics = [f"/{c}/{t}" for c in cameras for t in ("scrap_instances", "scrap_overlay", "image_raw", "detections")]
    return [
        Node(package="scrap_perception", executable="scrap_perception_node", name="scrap_perception_node",
             parameters=[arg("params_file"), {"camera_names": cameras}], output="screen", emulate_tty=True),
        Node(package="scrap_perception", executable="recorder_node", name="scrap_recorder",
             parameters=[{"output": arg("output"), "topics": topics + ["/diagnostics"],
                          "overlay_dir": arg("overlay_dir"), "summary": arg("output") + ".summary.json"}],
             output="screen"),
        # The replay starts once the node (it subscribes when its models are loaded) and the recorder both
        # subscribe to every image and detection topic, and then waits for each frame's results
        # (lockstep): every replayed image yields one recorded ScrapInstanceArray.
        Node(package="scrap_perception", executable="replay_node", name="scrap_replay",
             parameters=[{"source": arg("source"), "camera_names": cameras, "rate": float(arg("rate")),
                          "jitter_px": float(arg("jitter_px")), "loop": arg("loop").lower() == "true",
                          "min_subscribers": 2, "wait_for_subscribers": 300.0, "lockstep": True}],
             output="screen"),
    ]


def generate_launch_description():
    share = FindPackageShare("scrap_perception")
    return LaunchDescription([
        DeclareLaunchArgument("source", description="COCO json, folder with annotations.json, or .mcap"),
        DeclareLaunchArgument("camera_names", default_value="[cam_left, cam_right]"),
        DeclareLaunchArgument("rate", default_value="1.0", description="Frames per second"),
        DeclareLaunchArgument("jitter_px", default_value="10.0", description="Detector-like box noise, pixels"),
        DeclareLaunchArgument("loop", default_value="false"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([share, "config", "scrap_perception.yaml"])),
        DeclareLaunchArgument("output", default_value="scrap_demo.mcap"),
        DeclareLaunchArgument("overlay_dir", default_value="scrap_demo_overlays"),
        DeclareLaunchArgument("rviz", default_value="false", description="Also start RViz with the overlays"),
        OpaqueFunction(function=_nodes),
        Node(package="rviz2", executable="rviz2", name="rviz2", condition=IfCondition(LaunchConfiguration("rviz")),
             arguments=["-d", PathJoinSubstitution([share, "rviz", "scrap_perception.rviz"])]),
    ])
