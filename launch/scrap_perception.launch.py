"""Starts scrap_perception_node (a managed node: with autostart it configures and activates itself).

    ros2 launch scrap_perception scrap_perception.launch.py \
        params_file:=/path/my.yaml camera_names:="[cam_left, cam_right]" namespace:=yard1 log_level:=debug

Arguments: params_file (default: the package's config/scrap_perception.yaml), camera_names (YAML list;
empty = the params file's), namespace, autostart (true: active once its models are loaded; false: left
unconfigured for `ros2 lifecycle set`), use_sim_time, log_level.
"""
import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def _node(context):
    cameras = LaunchConfiguration("camera_names").perform(context).strip()
    flag = lambda name: LaunchConfiguration(name).perform(context).strip().lower() == "true"  # noqa: E731
    overrides = {"use_sim_time": flag("use_sim_time"), "autostart": flag("autostart")}
    if cameras:
        overrides["camera_names"] = [str(c) for c in yaml.safe_load(cameras)]
    return [Node(
        package="scrap_perception", executable="scrap_perception_node", name="scrap_perception_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), overrides],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        output="screen", emulate_tty=True)]


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("scrap_perception"), "config", "scrap_perception.yaml"])
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="Parameter file of scrap_perception_node"),
        DeclareLaunchArgument("camera_names", default_value="",
                              description="Cameras as a YAML list, e.g. [cam_left, cam_right]; empty = params_file's"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node and its topics"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="Configure and activate at start-up (true/false)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (true/false)"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error or fatal"),
        OpaqueFunction(function=_node),
    ])
