"""Launch files cannot run here (no launch/launch_ros): they are parsed, and every executable and file
they name must be what the colcon build installs. The node executables also start as `python -m`."""
import ast
import os
import subprocess
import sys

import pytest
import yaml

from ros_helpers import ROOT

pytestmark = pytest.mark.ros

INSTALL = ROOT / ".ws" / "install" / "scrap_perception"
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def kwarg(call, key):
    for kw in call.keywords:
        if kw.arg == key and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_launch_files_exist_and_parse():
    assert [p.name for p in LAUNCH_FILES] == ["demo.launch.py", "multiview.launch.py", "scrap_perception.launch.py"]
    for path in LAUNCH_FILES:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)


def test_main_launch_declares_the_documented_arguments():
    tree = ast.parse((ROOT / "launch" / "scrap_perception.launch.py").read_text(encoding="utf-8"))
    declared = {c.args[0].value for c in calls(tree, "DeclareLaunchArgument")}
    assert declared == {"params_file", "camera_names", "namespace", "autostart", "use_sim_time", "log_level"}


@pytest.mark.skipif(not INSTALL.is_dir(), reason="colcon install space not built (run `make setup`)")
def test_every_executable_and_file_a_launch_file_names_is_installed():
    lib = INSTALL / "lib" / "scrap_perception"
    share = INSTALL / "share" / "scrap_perception"
    named = set()
    for path in LAUNCH_FILES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in calls(tree, "Node"):
            if kwarg(node, "package") == "scrap_perception":
                exe = kwarg(node, "executable")
                assert exe, f"{path.name}: a Node without a literal executable"
                named.add(exe)
        # PathJoinSubstitution([FindPackageShare("scrap_perception"), "config", "x.yaml"]) and the like
        for call in calls(tree, "PathJoinSubstitution"):
            parts = [e.value for e in call.args[0].elts if isinstance(e, ast.Constant)]
            assert (share.joinpath(*parts)).is_file(), f"{path.name}: {'/'.join(parts)} is not installed"
    assert named == {"scrap_perception_node", "replay_node", "recorder_node", "scrap_association_node"}
    for exe in named:
        assert os.access(lib / exe, os.X_OK), f"{exe} is not an installed executable in {lib}"
    for path in LAUNCH_FILES:
        assert (share / "launch" / path.name).is_file()


def test_rviz_config_shows_two_overlays():
    cfg = yaml.safe_load((ROOT / "rviz" / "scrap_perception.rviz").read_text(encoding="utf-8"))
    images = [d for d in cfg["Visualization Manager"]["Displays"] if d["Class"] == "rviz_default_plugins/Image"]
    assert [d["Topic"]["Value"] for d in images] == ["/cam_left/scrap_overlay", "/cam_right/scrap_overlay"]
    assert all(d["Topic"]["Reliability Policy"] == "Reliable" for d in images)


@pytest.mark.parametrize("module", ["perception_node", "replay_node", "recorder_node"])
def test_python_m_entry_points_and_installed_scripts_call_main(module):
    """`python -m scrap_perception.ros.<module>` has a main guard, and the installed script calls its main."""
    src = (ROOT / "scrap_perception" / "ros" / f"{module}.py").read_text(encoding="utf-8")
    assert 'if __name__ == "__main__":\n    main()' in src
    script = {"perception_node": "scrap_perception_node"}.get(module, module)
    text = (ROOT / "scripts" / script).read_text(encoding="utf-8")
    assert f"from scrap_perception.ros.{module} import main" in text


def test_replay_rejects_a_missing_source_with_the_parameter_name(tmp_path):
    r = subprocess.run([sys.executable, "-m", "scrap_perception.ros.replay_node", "--ros-args", "-p",
                        f"source:={tmp_path / 'nothing.json'}"], capture_output=True, text=True, timeout=60,
                       cwd=str(ROOT))
    assert r.returncode == 2 and "source" in r.stderr and "Traceback" not in r.stderr, r.stderr
