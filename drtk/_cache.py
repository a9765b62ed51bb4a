"""drtk's cache folder (converted models, fetched benchmarks)."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """Return ``$DRTK_CACHE_DIR`` if set, else ``~/.cache/drtk`` (read at call time)."""
    return Path(os.environ.get("DRTK_CACHE_DIR") or "~/.cache/drtk").expanduser()
