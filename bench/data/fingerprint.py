"""Short content hashes of a dataset as loaded, recorded in config.json (`data_fingerprint`)
and keying the caches: one for arrays and values, one for strings."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def fingerprint(*parts: Any) -> str:
    """12 hex digits of SHA-1 over `parts`: arrays and tensors by their bytes (C order),
    anything else by its repr."""
    h = hashlib.sha1()
    for part in parts:
        if hasattr(part, "numpy"):  # a tensor
            part = part.numpy()
        h.update(np.ascontiguousarray(part).tobytes() if isinstance(part, np.ndarray)
                 else repr(part).encode())
    return h.hexdigest()[:12]


def digest(*parts: str) -> str:
    """16 hex digits of BLAKE2b over strings (each ended by a unit separator)."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(part.encode() + b"\x1f")
    return h.hexdigest()
