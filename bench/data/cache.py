"""Where data-derived files are kept between runs (tokenizers, `bible` output, encoded
tensors, image-file checks): $MASKBENCH_CACHE, else ~/.cache/maskbench."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("MASKBENCH_CACHE") or Path.home() / ".cache" / "maskbench")
