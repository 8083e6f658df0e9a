"""Where qmoe keeps what it builds once per machine (prepared tables, compiled kernels)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$QMOE_CACHE`` if set, else ``~/.cache/qmoe``."""
    env = os.environ.get("QMOE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "qmoe"
