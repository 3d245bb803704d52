"""Node processes (scrap_perception.ros.processes): parameter values survive rcl's own parsing in a real
rclpy node, and stop() ends a process politely or by force."""
import json
import math
import os
import time
from pathlib import Path
from textwrap import dedent

import pytest

from scrap_perception.ros.processes import FASTDDS_PROFILE, ROOT, NodeProcess, node_env, param_value, ros_args

# Declares whatever parameters it is given and prints them as JSON: {name: [type name, value]}.
ECHO_NODE = """
import json, sys
import rclpy
from rclpy.node import Node

rclpy.init(args=sys.argv)
node = Node("param_echo", automatically_declare_parameters_from_overrides=True)
params = node.get_parameters_by_prefix("")
value = lambda v: list(v) if not isinstance(v, (str, bytes)) and hasattr(v, "__len__") else v
print("PARAMS " + json.dumps({k: [p.type_.name, value(p.value)] for k, p in params.items() if k != "use_sim_time"}))
node.destroy_node()
rclpy.shutdown()
"""

TRICKY_STRINGS = ["a:b", "it's", 'say "hi"', "-x", "- x", "true", "y", "no", "~", "null", "5", "-7", "1e5", "010",
                  "0x1F", "nan", ".inf", "", "{a: 1}", "[1, 2]", "#not a comment", "a, b", "*ref", "&anchor",
                  "!tag", "%x", "@x", "`x", "trailing ", " leading", "tab\there", "line\nbreak", "back\\slash",
                  "élan 中文"]


def module(tmp_path: Path, name: str, code: str) -> Path:
    (tmp_path / f"{name}.py").write_text(dedent(code))
    return tmp_path


@pytest.mark.ros
def test_values_round_trip_through_rcl_in_a_real_node(tmp_path):
    pytest.importorskip("rclpy")
    params = {f"s{i}": s for i, s in enumerate(TRICKY_STRINGS)}
    params.update({"int": 3, "negative": -7, "big": 2**40, "float": 0.5, "small": 1e-5, "whole": 300.0,
                   "neg_float": -2.5, "inf": math.inf, "yes": True, "off": False, "path": tmp_path / "x y.pth",
                   "strings": ["a:b", "true", "x", "it's"], "ints": [1, 2, 3], "floats": [0.5, 1.0],
                   "bools": [True, False], "arch": {"embed_dim": 96, "global_attn_indexes": [1]},
                   "dotted.name": "v"})
    node = NodeProcess("param_echo", ros_args(None, params), tmp_path / "echo.log", cwd=module(tmp_path, "param_echo",
                                                                                               ECHO_NODE))
    assert node.proc.wait(60) == 0, node.tail()
    node.stop()
    line = next(x for x in node.tail(200).splitlines() if x.startswith("PARAMS "))
    got = json.loads(line[len("PARAMS "):])
    expected_types = {str: "STRING", bool: "BOOL", int: "INTEGER", float: "DOUBLE"}
    for name, value in params.items():
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, dict):
            value = json.dumps(value)
        kind = f"{expected_types[type(value[0])]}_ARRAY" if isinstance(value, list) else expected_types[type(value)]
        assert got[name] == [kind, value], (name, param_value(value), got[name])


def test_param_value_text():
    assert param_value(True) == "true" and param_value(3) == "3" and param_value(1e-5) == "1.0e-05"
    assert param_value("a'b") == '"a\'b"' and param_value(["x", 2.0]) == '["x", 2.0]'
    assert ros_args("f.yaml", {"a.b": 1}) == ["--ros-args", "--params-file", "f.yaml", "-p", "a.b:=1"]
    with pytest.raises(TypeError):
        param_value(None)


def test_node_env_puts_this_tree_first_and_the_fastdds_profile(monkeypatch):
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = node_env({"ROS_DOMAIN_ID": "7"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/elsewhere"]
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == str(FASTDDS_PROFILE) and FASTDDS_PROFILE.is_file()
    assert env["ROS_DOMAIN_ID"] == "7" and env["PYTHONUNBUFFERED"] == "1"
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "/mine.xml")
    assert node_env()["FASTDDS_DEFAULT_PROFILES_FILE"] == "/mine.xml"


SLEEPER = """
import os, signal, sys, time
if sys.argv[1:] == ["ignore"]:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
else:
    signal.signal(signal.SIGINT, lambda *a: sys.exit(0))
print("ready", os.environ["PYTHONPATH"].split(os.pathsep)[0], flush=True)
time.sleep(60)
"""


def wait_ready(p: NodeProcess) -> None:
    for _ in range(200):
        if "ready" in p.tail():
            return
        assert p.alive(), p.tail()
        time.sleep(0.05)
    raise AssertionError("no 'ready' line")


def test_stop_interrupts_then_kills(tmp_path):
    cwd = module(tmp_path, "sleeper", SLEEPER)
    with NodeProcess("sleeper", [], tmp_path / "polite.log", cwd=cwd) as polite:
        wait_ready(polite)
        assert polite.name == "sleeper" and polite.tail() == f"ready {ROOT}"
    assert polite.poll() == 0  # SIGINT, handled
    stubborn = NodeProcess("sleeper", ["ignore"], tmp_path / "stubborn.log", tmp_path / "stubborn.err", cwd=cwd)
    wait_ready(stubborn)
    assert stubborn.stop(timeout=0.5) == -9 and not stubborn.alive()
    assert (tmp_path / "stubborn.err").read_text() == ""


@pytest.mark.ros
@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_ctrl_c_while_the_node_starts_ends_it_quietly(delay):
    """Ctrl-C a moment after `ros2 run` (here: while the installed executable still imports rclpy and
    torch, or builds the node on a fast machine) ends it with status 0 and no traceback."""
    import signal
    import subprocess

    pytest.importorskip("rclpy")
    from ament_index_python.packages import get_package_prefix

    exe = Path(get_package_prefix("scrap_perception")) / "lib" / "scrap_perception" / "scrap_perception_node"
    args = [str(exe), *ros_args(None, {"segmenter.model_type": "grabcut", "classifier.model": "none"})]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=node_env())
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in out, out[-2000:]
