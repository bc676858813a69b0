"""Where data-derived files are kept between runs (tokenizers, `bible` output, encoded
tensors, image-file checks): $MASKBENCH_CACHE, else ~/.cache/maskbench."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.core import store
from bench.core.errors import ConfigError, OutputError


def cache_root() -> Path:
    """The cache folder; $MASKBENCH_CACHE naming a file (or a folder under one) is a one-line
    error naming the variable, not a traceback when a file is first cached."""
    env = os.environ.get("MASKBENCH_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "maskbench"
    try:
        store.check_can_create(root)
    except OutputError as err:
        reason = str(err).rpartition(": ")[2]  # "X is a file", "Permission denied"
        what = f"MASKBENCH_CACHE={env}" if env else f"the cache folder {root}"
        raise ConfigError(f"{what} cannot be the cache folder ({reason}); set MASKBENCH_CACHE "
                          "to a folder you can write") from None
    return root


def cached_tensors(path: Path, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The tensors saved at `path`; made by `make` and saved there first when absent (the
    path's name holds everything they depend on, so a file found is the right one)."""
    if path.is_file():
        return store.load_torch(path)
    tensors = make()
    store.save_torch(path, tensors)
    return tensors
