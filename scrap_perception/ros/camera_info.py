"""The CameraInfo that goes with a frame: the one with the frame's stamp, or else the latest. No ROS import.

Camera drivers publish a CameraInfo beside every image with the same stamp; a calibration that never
changes may come once (latched). A bounded buffer by stamp covers both.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional

Stamp = tuple[int, int]  # (sec, nanosec)


class CameraInfoCache:
    """The last ``size`` CameraInfos of one camera, by stamp."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._by_stamp: OrderedDict[Stamp, Any] = OrderedDict()
        self.latest: Optional[Any] = None
        self.received = 0

    def add(self, stamp: Stamp, info: Any) -> None:
        self.received += 1
        self.latest = info
        self._by_stamp[stamp] = info
        self._by_stamp.move_to_end(stamp)
        while len(self._by_stamp) > self.size:
            self._by_stamp.popitem(last=False)

    def get(self, stamp: Stamp) -> Optional[Any]:
        """The CameraInfo stamped ``stamp``, else the latest; None before the first."""
        return self._by_stamp.get(stamp, self.latest)

    def exact(self, stamp: Stamp) -> Optional[Any]:
        """The CameraInfo stamped ``stamp``, or None."""
        return self._by_stamp.get(stamp)
