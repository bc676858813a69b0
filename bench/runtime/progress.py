"""Progress bars with one switch: `--no-progress` (or a job's `progress=False`) silences every
bar drawn beneath it, down to feature extraction and data decoding, and only rank 0 of a
data-parallel job draws any."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from tqdm import tqdm  # not tqdm.auto: that one costs 0.4 s of imports (notebook probes)

T = TypeVar("T")

_shown = [True]  # a stack: the innermost `shown` decides


@contextmanager
def shown(flag: bool) -> Iterator[None]:
    """Bars drawn inside this block are shown only if `flag` (and every enclosing block) says so."""
    _shown.append(flag and _shown[-1])
    try:
        yield
    finally:
        _shown.pop()


def enabled() -> bool:
    # torchrun and bench.runtime.distributed set RANK: read it without importing torch.distributed.
    return _shown[-1] and os.environ.get("RANK", "0") == "0"


def bar(iterable: Iterable[T] | None = None, **kwargs: Any) -> tqdm:
    """tqdm over `iterable`, disabled where progress is switched off."""
    return tqdm(iterable, disable=not enabled(), **kwargs)


def note(text: str) -> None:
    """One line on stderr between the bars (e.g. "run 2 of 9"), where progress is shown."""
    if enabled():
        tqdm.write(text, file=sys.stderr)
