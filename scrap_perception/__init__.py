"""Steel-scrap perception: SAM-family segmentation + CN-CLIP shape classification.

The core (everything outside ``scrap_perception.ros``) needs neither ROS nor rclpy.
"""
from pkgutil import extend_path

# In a source checkout the package may span two directories: the sources and the colcon install
# space that holds the generated ``scrap_perception.msg``. extend_path lets one import see both.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
