"""ROS 2 message definitions as MCAP ``ros2msg`` schema text, the way ``ros2 bag`` (rosbag2_storage_mcap)
writes them: the type's own .msg text, then for each type it uses (depth first, once each) a line of
80 '=' characters, ``MSG: <package>/<Type>`` and that type's .msg text. Foxglove and mcap_ros2 read it.
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

SEPARATOR = "=" * 80
PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
              "uint32", "int64", "uint64", "string", "wstring"}


class DefinitionError(LookupError):
    """A message type whose .msg file is not installed."""


def split_type(type_name: str) -> tuple[str, str]:
    """'sensor_msgs/msg/Image' or 'sensor_msgs/Image' -> ('sensor_msgs', 'Image')."""
    parts = type_name.split("/")
    if len(parts) == 3 and parts[1] == "msg":
        return parts[0], parts[2]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise DefinitionError(f"{type_name!r} is not a message type name like 'sensor_msgs/msg/Image'")


def type_name_of(msg_class: type) -> str:
    """'sensor_msgs/msg/Image' for the generated class sensor_msgs.msg.Image."""
    return f"{msg_class.__module__.split('.')[0]}/msg/{msg_class.__name__}"


@lru_cache(maxsize=None)
def msg_file(package: str, name: str) -> Path:
    """The installed .msg file of package/name (searched in AMENT_PREFIX_PATH's share folders)."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        path = Path(prefix) / "share" / package / "msg" / f"{name}.msg"
        if prefix and path.is_file():
            return path
    raise DefinitionError(f"no {package}/msg/{name}.msg under AMENT_PREFIX_PATH "
                          "(source the ROS install or scripts/env.sh)")


def dependencies(package: str, text: str) -> list[tuple[str, str]]:
    """(package, Type) of every non-primitive field type of a .msg text, in order of appearance.
    (Constants are always primitive, so they never count.)"""
    out = []
    for line in text.splitlines():
        tokens = line.split("#", 1)[0].split()
        if len(tokens) < 2:
            continue
        base = re.sub(r"(<=\d+)?(\[[^\]]*\])?$", "", tokens[0])
        if base in PRIMITIVES or re.fullmatch(r"w?string<=\d+", tokens[0]):
            continue
        parts = base.split("/")
        dep = (parts[0], parts[-1]) if len(parts) > 1 else (package, base)
        if dep not in out:
            out.append(dep)
    return out


@lru_cache(maxsize=None)
def schema_text(type_name: str) -> str:
    """The ros2msg schema text of ``type_name`` ('pkg/msg/Type') with all its dependencies."""
    package, name = split_type(type_name)
    root = msg_file(package, name).read_text(encoding="utf-8")
    parts, seen = [_nl(root)], {(package, name)}

    def visit(pkg: str, text: str) -> None:
        for dep in dependencies(pkg, text):
            if dep in seen:
                continue
            seen.add(dep)
            dep_text = msg_file(*dep).read_text(encoding="utf-8")
            parts.append(f"{SEPARATOR}\nMSG: {dep[0]}/{dep[1]}\n{_nl(dep_text)}")
            visit(dep[0], dep_text)

    visit(package, root)
    return "".join(parts)


def _nl(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"
