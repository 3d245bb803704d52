"""A clean colcon build of the package works, and its install space alone provides messages, core,
executables and the launch/config/rviz files."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ros, pytest.mark.slow]
EXECUTABLES = ("scrap_perception_node", "replay_node", "recorder_node", "scrap_association_node", "scrap_tools")


@pytest.fixture(scope="module")
def clean_install(tmp_path_factory):
    if not shutil.which("colcon"):
        pytest.skip("colcon is not on PATH: run through `make test` or after `source scripts/env.sh`")
    ws = tmp_path_factory.mktemp("ws")
    cmd = ["colcon", "--log-base", str(ws / "log"), "build", "--base-paths", str(ROOT),
           "--packages-select", "scrap_perception", "--build-base", str(ws / "build"),
           "--install-base", str(ws / "install"), "--event-handlers", "console_cohesion-",
           "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"]
    proc = subprocess.run(cmd, cwd=ws, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return ws / "install"


def install_only_env(install: Path) -> dict:
    """The environment a user gets from `source install/setup.bash`: no source tree on any path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    prefix = install / "scrap_perception"
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    env["PYTHONPATH"] = str(site)
    env["AMENT_PREFIX_PATH"] = f"{prefix}{os.pathsep}{env.get('AMENT_PREFIX_PATH', '')}"
    env["LD_LIBRARY_PATH"] = f"{prefix / 'lib'}{os.pathsep}{env.get('LD_LIBRARY_PATH', '')}"
    return env


def test_install_space_imports_messages_and_core(clean_install, tmp_path):
    code = (
        "import scrap_perception, scrap_perception.pipeline, scrap_perception.segmentation, "
        "scrap_perception.classification, scrap_perception.metrics\n"
        "from scrap_perception.msg import ScrapInstance, ScrapInstanceArray\n"
        "assert all('site-packages' in p for p in scrap_perception.__path__), scrap_perception.__path__\n"
        "m = ScrapInstanceArray(); m.instances.append(ScrapInstance(class_id=ScrapInstance.H_BEAM))\n"
        "print('ok', ScrapInstance.UNKNOWN, len(m.instances))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=install_only_env(clean_install),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok 255 1")


def test_install_space_has_executables_and_shared_files(clean_install):
    prefix = clean_install / "scrap_perception"
    for exe in EXECUTABLES:
        path = prefix / "lib" / "scrap_perception" / exe
        assert path.is_file() and os.access(path, os.X_OK), path
    assert os.access(prefix / "bin" / "scrap-tools", os.X_OK)  # on PATH once the workspace is sourced
    share = prefix / "share" / "scrap_perception"
    for rel in ("package.xml", "launch/scrap_perception.launch.py", "launch/demo.launch.py",
                "config/scrap_perception.yaml", "rviz/scrap_perception.rviz",
                "msg/ScrapInstance.msg", "msg/ScrapInstanceArray.msg", "msg/ScrapViewSet.msg"):
        assert (share / rel).is_file(), rel
    index = prefix / "share" / "ament_index" / "resource_index" / "packages" / "scrap_perception"
    assert index.is_file()
