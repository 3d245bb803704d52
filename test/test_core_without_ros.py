"""The core (everything outside scrap_perception.ros) imports and works where rclpy cannot be imported."""
import subprocess
import sys

CHECK = r"""
import importlib, importlib.abc, pkgutil, sys

class NoRos(importlib.abc.MetaPathFinder):
    BLOCKED = ("rclpy", "rosidl_runtime_py", "std_msgs", "sensor_msgs", "vision_msgs", "diagnostic_msgs",
               "builtin_interfaces", "scrap_perception.msg")
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED or name.startswith("scrap_perception.msg"):
            raise ImportError(f"{name} is blocked: this process has no ROS")

sys.meta_path.insert(0, NoRos())
try:
    import rclpy  # noqa
    raise SystemExit("rclpy imported although blocked")
except ImportError:
    pass

import numpy as np
import scrap_perception
names = [m.name for m in pkgutil.walk_packages(scrap_perception.__path__, "scrap_perception.")
         if not m.name.startswith(("scrap_perception.ros", "scrap_perception.msg"))]
for name in names:
    importlib.import_module(name)
assert not any(m.startswith("rclpy") for m in sys.modules), "a core module pulled in rclpy"

# ...and works: the weight-free segmenter in the pipeline on a generated frame.
from scrap_perception.pipeline import Pipeline
from scrap_perception.prompts import box_prompt
from scrap_perception.segmentation import build_segmenter
img = np.full((120, 160, 3), 30, np.uint8)
img[40:80, 50:110] = (200, 180, 160)
result = Pipeline(build_segmenter("grabcut")).process(img, [box_prompt([45, 35, 115, 85], id="a")])
assert len(result) == 1 and result[0].id == "a" and result[0].mask.area > 1000, result
print("imported", len(names), "core modules")
"""


def test_core_imports_and_runs_without_rclpy():
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "core modules" in proc.stdout
    n = int(proc.stdout.split("imported ")[1].split()[0])
    assert n >= 10, proc.stdout  # the walk really found the core modules
