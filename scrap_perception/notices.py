"""One way for the engines to tell a user something is off (random weights, a fallback, a risky precision).

Each notice is both a Python warning (what API users and tests catch) and a log record of the module's
logger (what a node's or a tool's log shows), so no notice reaches only one of them.
"""
from __future__ import annotations

import logging
import warnings


def notify(logger: logging.Logger, message: str, category: type[Warning] = UserWarning, stacklevel: int = 3) -> None:
    """Warns ``message`` (``category``, attributed ``stacklevel`` frames up) and logs it on ``logger``."""
    warnings.warn(message, category, stacklevel=stacklevel)
    logger.warning(message)
