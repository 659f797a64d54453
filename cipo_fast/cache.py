"""The cache root: where cipo-fast keeps what it computes once (converted models, target models,
reference log-probs), `$CIPO_FAST_CACHE` or `~/.cache/cipo-fast`."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("CIPO_FAST_CACHE", Path.home() / ".cache" / "cipo-fast"))
