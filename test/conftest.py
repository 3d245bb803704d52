"""Test set-up shared by every layer.

Tests import the package from this source tree; the generated messages come from the colcon install
space (``scrap_perception.__init__`` joins both). Every test session gets its own ROS domain on
localhost only, so parallel runs and other sessions on the machine never see each other's topics.
"""
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# Keep the 2 cores for the processes a test starts; torch's own threads would oversubscribe them.
os.environ.setdefault("OMP_NUM_THREADS", "1")
