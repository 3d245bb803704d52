"""`pip install .` gives the core library and the offline tools (no ROS needed).

The ROS build (messages, nodes, launch files) is CMakeLists.txt's job: `colcon build`.
"""
from setuptools import setup

setup()
