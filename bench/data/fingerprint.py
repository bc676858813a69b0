"""The data layer's hashes, each written once: content hashes of a dataset as loaded
(recorded in config.json as `data_fingerprint`, keying the caches) for arrays and values
(`fingerprint`), strings (`digest`) and split corpora (`split_fingerprint`), and the 64-bit
hash that splits and orders texts, documents, files and rows (`stable_hash`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
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


def in_test_split(key: int) -> bool:
    """The split rules' one test: a text, document or row whose stable hash is 0 mod 10 (about
    10 %) is in the test split."""
    return key % 10 == 0


def stable_hash(text: str) -> int:
    """64-bit BLAKE2b of `text` (UTF-8) as an unsigned big-endian integer: the split rules'
    hash (`SPLIT_RULE`, `DOCUMENT_SPLIT_RULE`) and the stable orders of files and rows."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def split_fingerprint(rule: str, classes: list[str] | None,
                      splits: Iterable[Iterable[str]]) -> str:
    """32 hex digits of BLAKE2b over a split corpus: its split rule, its class names and each
    split's records in order (one string per text or document, as its reader formats it, ended
    by a record separator), so any change of content, labels, split or order changes it."""
    h = hashlib.blake2b(digest_size=16)
    h.update(rule.encode() + b"\x1d" + "\x1f".join(classes or []).encode())
    for records in splits:
        h.update(b"\x1d")
        for record in records:
            h.update(record.encode())
    return h.hexdigest()
