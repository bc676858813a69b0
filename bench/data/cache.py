"""Where data-derived files are kept between runs (tokenizers, `bible` output, encoded
tensors, image-file checks): $MASKBENCH_CACHE, else ~/.cache/maskbench."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.core import store


def cache_root() -> Path:
    return Path(os.environ.get("MASKBENCH_CACHE") or Path.home() / ".cache" / "maskbench")


def cached_tensors(path: Path, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The tensors saved at `path`; made by `make` and saved there first when absent (the
    path's name holds everything they depend on, so a file found is the right one)."""
    if path.is_file():
        return store.load_torch(path)
    tensors = make()
    store.save_torch(path, tensors)
    return tensors
