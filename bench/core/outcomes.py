"""Per-example outcomes of a run's probes on the test split (`outcomes.npz` in the run folder):
what lets a report add the test set's own sampling variance to the seed variance, and pair two
runs example by example where they scored the same examples. Plain numpy, no torch.

Each metric `m` is stored as `m` (0/1 correctness bit-packed, or any other per-example scores
as float64: a next-sentence tie's fraction, the dense probe's linearised per-image scores,
which leave [0, 1] and must average to the metric exactly) with `m.n` (how many examples;
negative for float64 scores) and `m.key` (a hash of what was scored: the test labels in order,
so two runs are paired only on the same examples). Files of older runs that stored fractions
as float16 still read."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.core import store
from bench.core.files import OUTCOMES


@dataclass(frozen=True)
class Outcome:
    """One metric's per-example scores (mean = the metric) and the key of the examples."""

    scores: np.ndarray  # float64 [N]
    key: str


def examples_key(labels: np.ndarray) -> str:
    """A short hash of the scored examples (their labels in order, with their count)."""
    blob = np.ascontiguousarray(np.asarray(labels, dtype=np.int64)).tobytes()
    return hashlib.sha1(blob).hexdigest()[:16]


def encode(outcomes: Mapping[str, Outcome]) -> bytes:
    """The `outcomes.npz` bytes: 0/1 scores bit-packed, any others as float64."""
    arrays: dict[str, np.ndarray] = {}
    for name, o in outcomes.items():
        s = np.asarray(o.scores, dtype=np.float64)
        binary = bool(np.isin(s, (0.0, 1.0)).all())
        arrays[name] = np.packbits(s.astype(bool)) if binary else s
        arrays[f"{name}.n"] = np.array(len(s) if binary else -len(s), dtype=np.int64)
        arrays[f"{name}.key"] = np.array(o.key)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def write_outcomes(run_dir: Path, outcomes: Mapping[str, Outcome]) -> None:
    """Write `outcomes.npz` atomically (nothing when there is nothing to record)."""
    if outcomes:
        store.write_bytes(Path(run_dir) / OUTCOMES, encode(outcomes))


def read_outcomes(run_dir: Path | str) -> dict[str, Outcome]:
    """A run's per-example outcomes by metric; {} when it recorded none (older runs) or the
    file is unreadable (the report then falls back to seed variance alone, and says so)."""
    path = Path(run_dir) / OUTCOMES
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {}
            for name in f.files:
                if name.endswith((".n", ".key")):
                    continue
                n = int(f[f"{name}.n"])
                raw = f[name]
                scores = (np.unpackbits(raw, count=n).astype(np.float64) if n >= 0
                          else raw.astype(np.float64))
                out[name] = Outcome(scores, str(f[f"{name}.key"]))
            return out
    except (OSError, ValueError, KeyError):
        return {}
