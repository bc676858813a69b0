"""Stopping a run cleanly on a signal: the first SIGTERM (what `scancel`, `kill` and most
schedulers send first) or SIGINT (Ctrl-C) asks the training loop to write a checkpoint at the
next step boundary and stop; the run is then `interrupted`, and rerunning the same command
resumes it with the numbers of an uninterrupted run. A second SIGINT stops at once (the last
checkpoint stays).

Inside a SLURM job submitit owns the signals (its timeout/preemption signal requeues the job),
so only processes that call `handle_signals` (the CLI, local worker processes) react here.

A signal sent to the whole process group (a terminal's Ctrl-C, `timeout`, `docker stop`,
`kill -- -PGID`) also reaches DataLoader workers; they ignore it (`ignore_in_worker`, their
`worker_init_fn`), so the training process stops them itself after its checkpoint instead
of finding them dead mid-epoch.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}  # 128 + signal number, as a shell reports it

_requested: list[str] = []  # the names of the signals received, in order


def requested() -> str | None:
    """The name of the signal that asked this process to stop, or None."""
    return _requested[0] if _requested else None


def request(name: str) -> None:
    """Ask the running training loop to checkpoint and stop (what a signal handler does)."""
    _requested.append(name)


def clear() -> None:
    _requested.clear()


def _handler(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    if name == "SIGINT" and requested() is not None:
        raise KeyboardInterrupt  # asked twice: stop now
    request(name)


def ignore_in_worker(worker_id: int) -> None:
    """A DataLoader `worker_init_fn`: the worker ignores SIGINT and SIGTERM, which ask the
    training process to stop (it shuts its workers down); it still dies with its parent."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)


def install() -> dict:
    """From now on SIGINT and SIGTERM request a clean stop instead of killing the process (a
    local worker process does this once); returns the previous handlers."""
    return {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}


@contextmanager
def handle_signals() -> Iterator[None]:
    """`install` for the duration of the block; the previous handlers come back afterwards."""
    previous = install()
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        clear()
