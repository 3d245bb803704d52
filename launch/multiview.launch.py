"""Multi-view: scrap_perception_node in camera-set mode + scrap_association_node (3D scrap objects).

    ros2 launch scrap_perception multiview.launch.py rig_file:=/path/rig.yaml \
        camera_names:="[cam0, cam1, cam2]" params_file:=/path/my.yaml
    ros2 launch scrap_perception multiview.launch.py extrinsics:=tf camera_names:="[cam0, cam1, cam2]"

Arguments: rig_file (the cameras' calibration and poses: required with extrinsics rig, the intrinsics'
fallback with tf; empty = the params file's), extrinsics (rig or tf: camera poses from the rig file or
from /tf_static and /tf; empty = the params file's), camera_names (YAML list; empty = the params file's),
params_file (default: the package's config/multiview.yaml: both nodes' parameters), namespace, slop
(seconds; empty = the params file's sync.slop), autostart, log_level.
"""
import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def _nodes(context):
    arg = lambda name: LaunchConfiguration(name).perform(context).strip()  # noqa: E731
    perception = {"sync.policy": "sets", "autostart": arg("autostart").lower() == "true"}
    if arg("camera_names"):
        perception["camera_names"] = [str(c) for c in yaml.safe_load(arg("camera_names"))]
    if arg("slop"):
        perception["sync.slop"] = float(arg("slop"))
    association = {name: arg(name) for name in ("rig_file", "extrinsics") if arg(name)}
    common = dict(namespace=LaunchConfiguration("namespace"), output="screen", emulate_tty=True,
                  arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")])
    return [
        Node(package="scrap_perception", executable="scrap_perception_node", name="scrap_perception_node",
             parameters=[arg("params_file"), perception], **common),
        Node(package="scrap_perception", executable="scrap_association_node", name="scrap_association_node",
             parameters=[arg("params_file"), association], **common),
    ]


def generate_launch_description():
    share = FindPackageShare("scrap_perception")
    return LaunchDescription([
        DeclareLaunchArgument("rig_file", default_value="",
                              description="Rig file: per camera intrinsics, image size, pose (required with "
                                          "extrinsics rig); empty = params_file's"),
        DeclareLaunchArgument("extrinsics", default_value="",
                              description="Camera poses from the rig file (rig) or TF (tf); empty = params_file's"),
        DeclareLaunchArgument("camera_names", default_value="",
                              description="Cameras as a YAML list, e.g. [cam0, cam1, cam2]; empty = params_file's"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "multiview.yaml"]),
                              description="Parameters of both nodes"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the nodes and topics"),
        DeclareLaunchArgument("slop", default_value="", description="sync.slop in seconds; empty = params_file's"),
        DeclareLaunchArgument("autostart", default_value="true", description="Configure and activate at start-up"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error or fatal"),
        OpaqueFunction(function=_nodes),
    ])
