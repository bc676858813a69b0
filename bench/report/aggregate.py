"""Collect run folders into long-format tables for reports.

A run folder is any folder holding config.json or summary.json (normally results/<sweep>/<run_id>/).
Nothing is dropped silently: failed runs are listed with their error, and folders that cannot be
read (truncated JSON, no summary yet) are listed as problems while the rest still aggregates.
Speed matters (sweeps reach 10,000 runs): plain json on bytes, string paths rather than pathlib,
a thread pool for the reads, and each table built once from columns.
"""

from __future__ import annotations

import json
import math
import os
import stat
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import pandas as pd

from bench.core.errors import DataNotFoundError
from bench.core.files import CONFIG, METRICS, SUMMARY
from bench.core.runfolder import mismatch

COMPUTE_PREFIX = "compute."
SETUP_PREFIX = "setup."  # summary.json's setup record: what the fairness table compares
EXECUTION_KEYS = ("device_type", "processes")  # summary.json compute fields that split cells
RUN_KEYS = ("sweep", "run_id", "dataset", "encoder", "method", "options", "seed", "epochs")
TABLE_COLUMNS = (*RUN_KEYS, "status", "metric", "value", "run_dir")
FAILED_COLUMNS = (*RUN_KEYS, "error", "run_dir")
CURVE_COLUMNS = (*RUN_KEYS, "epoch", "metric", "value", "run_dir")
_NUMBER = (int, float)  # checked with type(): bool is not a number here
_WORKERS = 4  # reads block on I/O (network file systems above all), parsing holds the GIL
_OPTIONS_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)

_T = TypeVar("_T")
_R = TypeVar("_R")


class Problem(NamedTuple):
    """A run folder (or results folder) that was skipped, and why."""

    path: Path
    reason: str


class _Unreadable(Exception):
    """Internal: a run folder cannot be used; the message becomes a Problem reason."""


def options_key(options: dict[str, Any]) -> str:
    """Canonical JSON of a method's options: the same option set always gives the same string."""
    return _OPTIONS_ENCODER.encode(options)


def _run_dirs(dirs: Sequence[Path]) -> tuple[list[tuple[str, frozenset[str]]], list[Problem]]:
    """Every run folder under `dirs` with its file names, sorted by path, and unlistable folders.

    Run folders are not descended into (checkpoints live there). Folders are keyed by
    (device, inode) so symlink loops and overlapping `dirs` never count a run twice.
    """
    stack: list[tuple[str, os.stat_result]] = []
    for d in dirs:
        path = os.path.abspath(d)
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise DataNotFoundError(f"results folder not found: {d}")
        stack.append((path, st))
    found: list[tuple[str, frozenset[str]]] = []
    problems: list[Problem] = []
    seen: set[tuple[int, int]] = set()
    while stack:
        path, st = stack.pop()
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError as err:
            problems.append(Problem(Path(path), f"cannot list folder ({err.strerror})"))
            continue
        names = frozenset(e.name for e in entries if e.is_file())
        if CONFIG in names or SUMMARY in names:
            found.append((path, names))
            continue
        for e in entries:
            if e.is_dir():
                try:
                    stack.append((e.path, e.stat()))
                except OSError as err:
                    problems.append(Problem(Path(e.path), f"cannot read folder ({err.strerror})"))
    found.sort()
    return found, problems


def _load_json(run_dir: str, name: str) -> dict[str, Any]:
    try:
        with open(os.path.join(run_dir, name), "rb") as f:
            data = json.loads(f.read().decode())  # str: skips json's encoding sniffing
    except json.JSONDecodeError as err:
        raise _Unreadable(f"{name}: truncated or invalid JSON ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise _Unreadable(f"{name}: unreadable ({err})") from None
    if type(data) is not dict:
        raise _Unreadable(f"{name}: not a JSON object")
    return data


def _identity(run_dir: str, config: dict[str, Any], summary: dict[str, Any]) -> tuple:
    """The RUN_KEYS values of a run; summary.json wins over config.json where both say."""

    def get(key: str) -> Any:
        value = summary.get(key, config.get(key))
        if value is None:
            raise _Unreadable(f"no {key!r} in {SUMMARY} or {CONFIG}")
        return value

    options = config.get("options", {})
    if type(options) is not dict:
        raise _Unreadable(f"{CONFIG}: 'options' is not an object")
    seed = get("seed")
    if type(seed) is not int:
        raise _Unreadable(f"seed {seed!r} is not an integer")
    epochs = config.get("epochs")
    return (
        os.path.basename(os.path.dirname(run_dir)),
        str(summary.get("run_id") or config.get("run_id") or os.path.basename(run_dir)),
        str(get("dataset")),
        str(get("encoder")),
        str(get("method")),
        options_key(options),
        seed,
        epochs if type(epochs) is int else None,
    )


@dataclass
class _Run:
    """What one run folder contributes to the tables."""

    identity: tuple
    status: str
    error: str | None
    values: list[tuple[str, float]]
    config: dict[str, Any]
    device: str | None


def _read_run(item: tuple[str, frozenset[str]]) -> _Run | Problem:
    run_dir, names = item
    try:
        if SUMMARY not in names:
            raise _Unreadable(f"no {SUMMARY} (unfinished?)")
        if CONFIG not in names:
            raise _Unreadable(f"no {CONFIG} (option set unknown)")
        summary = _load_json(run_dir, SUMMARY)
        config = _load_json(run_dir, CONFIG)
        wrong = mismatch(os.path.basename(run_dir), config)
        if wrong is not None:
            raise _Unreadable(f"{wrong}; left out of every cell")
        status = summary.get("status")
        if type(status) is not str:
            raise _Unreadable(f"{SUMMARY}: no 'status'")
        identity = _identity(run_dir, config, summary)
        metrics = summary.get("metrics") or {}
        compute = summary.get("compute") or {}
        setup = summary.get("setup") or {}
        if type(metrics) is not dict or type(compute) is not dict or type(setup) is not dict:
            raise _Unreadable(f"{SUMMARY}: 'metrics', 'compute' or 'setup' is not an object")
    except _Unreadable as err:
        return Problem(Path(run_dir), str(err))
    values = [(k, float(v)) for k, v in metrics.items() if type(v) in _NUMBER]
    values += [(COMPUTE_PREFIX + k, float(v)) for k, v in compute.items() if type(v) in _NUMBER]
    values += [(SETUP_PREFIX + k, float(v)) for k, v in setup.items() if type(v) in _NUMBER]
    broken = [f"{k}={v}" for k, v in values if not math.isfinite(v)]
    if broken and status == "ok":  # a diverged run: its numbers would poison every mean
        return Problem(Path(run_dir), f"{SUMMARY}: non-finite values ({', '.join(broken)}); "
                                      "the run is left out of every cell")
    error = None if status == "ok" else str(summary.get("error") or "(no error recorded)")
    device = compute.get("device")
    # How a run was executed changes its numbers although not its identity: the report treats
    # these like settings (never pooled across, listed where they differ).
    executed = {k: compute[k] for k in EXECUTION_KEYS if k in compute}
    return _Run(identity, status, error, values, {**config, **executed},
                device if type(device) is str else None)


def _map(fn: Callable[[_T], _R], items: list[_T]) -> list[_R]:
    if len(items) < 64:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(_WORKERS) as pool:
        return list(pool.map(fn, items))


@dataclass
class Aggregate:
    """Result of `collect`.

    table: one row per run x metric, columns TABLE_COLUMNS. Failed runs keep their status
        ("failed") and whatever metrics they logged; compute figures are "compute.<field>" rows.
    failed: one row per run whose status is not "ok", columns FAILED_COLUMNS.
    problems: folders that were skipped, with the reason.
    configs: run_dir -> its config.json with the EXECUTION_KEYS of its summary, for every run
        read (what a report states about it).
    devices: run_dir -> the device its summary.json names (None when it names none).
    """

    table: pd.DataFrame
    failed: pd.DataFrame
    problems: list[Problem]
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    devices: dict[str, str | None] = field(default_factory=dict)

    def to_csv(self, path: Path) -> list[Path]:
        """Write the table to `path`, failed runs and problems beside it as <stem>.failed.csv
        and <stem>.problems.csv, so that readers of the CSV see them too."""
        path = Path(path)
        failed_path = path.with_name(f"{path.stem}.failed.csv")
        problems_path = path.with_name(f"{path.stem}.problems.csv")
        self.table.to_csv(path, index=False)
        self.failed.to_csv(failed_path, index=False)
        problems = [(str(p.path), p.reason) for p in self.problems]
        pd.DataFrame(problems, columns=["path", "reason"]).to_csv(problems_path, index=False)
        return [path, failed_path, problems_path]


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Fixed dtypes even when empty; epochs is nullable for configs that do not record it."""
    types = {"seed": "int64", "epochs": "Int64"}
    if "value" in frame:
        types["value"] = "float64"
    return frame.astype(types)


def collect(dirs: Sequence[Path]) -> Aggregate:
    """Read every run folder under `dirs` (searched recursively) into an `Aggregate`."""
    found, problems = _run_dirs(dirs)
    rows: list[tuple] = []
    failed: list[tuple] = []
    configs: dict[str, dict[str, Any]] = {}
    devices: dict[str, str | None] = {}
    for (run_dir, _), run in zip(found, _map(_read_run, found), strict=True):
        if isinstance(run, Problem):
            problems.append(run)
            continue
        rows.extend((*run.identity, run.status, m, v, run_dir) for m, v in run.values)
        if run.error is not None:
            failed.append((*run.identity, run.error, run_dir))
        configs[run_dir], devices[run_dir] = run.config, run.device
    return Aggregate(
        _typed(pd.DataFrame(rows, columns=list(TABLE_COLUMNS))),
        _typed(pd.DataFrame(failed, columns=list(FAILED_COLUMNS))),
        problems,
        configs,
        devices,
    )


@dataclass
class _Curve:
    """One run's points as columns, and notes on what was skipped."""

    identity: tuple
    epochs: list[int]
    metrics: list[str]
    values: list[float]
    notes: list[str]


def _jsonl_objects(path: str, notes: list[str]) -> list[Any]:
    """Values of a metrics.jsonl. A truncated last line (the run is still writing) is dropped
    quietly; a bad line elsewhere is dropped with a note."""
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8", "replace").split("\n")
    try:  # one parse of the whole file: ~10x faster than line by line
        return json.loads("[" + ",".join(line for line in lines if line.strip()) + "]")
    except json.JSONDecodeError:
        pass
    objects = []
    for i, line in enumerate(lines):
        if line.strip():
            try:
                objects.append(json.loads(line))
            except json.JSONDecodeError:
                if any(rest.strip() for rest in lines[i + 1 :]):
                    notes.append(f"{path}:{i + 1}: invalid JSON line skipped")
    return objects


def _read_curve(item: tuple[str, frozenset[str]]) -> _Curve | None:
    """One run's curve; None when it has no metrics.jsonl yet."""
    run_dir, names = item
    if METRICS not in names:
        return None
    curve = _Curve((), [], [], [], [])
    try:
        if CONFIG not in names:
            raise _Unreadable(f"no {CONFIG} (option set unknown)")
        curve.identity = _identity(run_dir, _load_json(run_dir, CONFIG), {})
        objects = _jsonl_objects(os.path.join(run_dir, METRICS), curve.notes)
    except (_Unreadable, OSError) as err:
        curve.notes.append(f"{run_dir}: curve skipped: {err}")
        return curve
    skipped = 0
    for obj in objects:
        epoch = obj.get("epoch") if type(obj) is dict else None
        if type(epoch) is not int:
            skipped += 1
            continue
        for key, value in obj.items():
            if type(value) in _NUMBER and key != "epoch":
                curve.epochs.append(epoch)
                curve.metrics.append(key)
                curve.values.append(value)
    if skipped:
        curve.notes.append(f"{run_dir}/{METRICS}: {skipped} line(s) without an integer epoch")
    return curve


def curves(dirs: Sequence[Path]) -> pd.DataFrame:
    """Training curves from every metrics.jsonl under `dirs`, unfinished runs included: one row
    per run x epoch x metric, columns CURVE_COLUMNS. Unusable files or lines are skipped with a
    warning (a truncated last line, normal while a run writes, without one). Identity comes
    from config.json and run_id from the folder name unless config.json has one: join with the
    `collect` table on run_dir."""
    found, problems = _run_dirs(dirs)
    for problem in problems:
        warnings.warn(f"{problem.path}: {problem.reason}", stacklevel=2)
    runs: list[tuple[str, _Curve]] = []
    for (run_dir, _), curve in zip(found, _map(_read_curve, found), strict=True):
        if curve is None:
            continue
        for note in curve.notes:
            warnings.warn(note, stacklevel=2)
        if curve.epochs:
            runs.append((run_dir, curve))
    # Run-level columns are expanded by index, not per row: 10,000 runs give ~10^6 rows.
    run_index = np.repeat(np.arange(len(runs)), [len(c.epochs) for _, c in runs])
    per_run = [*zip(*(c.identity for _, c in runs), strict=True)] or [()] * len(RUN_KEYS)
    columns: dict[str, Any] = {
        key: np.asarray(values, dtype=object)[run_index]
        for key, values in zip(RUN_KEYS, per_run, strict=True)
    }
    n = len(run_index)
    columns["epoch"] = np.fromiter(chain.from_iterable(c.epochs for _, c in runs), np.int64, n)
    columns["metric"] = list(chain.from_iterable(c.metrics for _, c in runs))
    columns["value"] = np.fromiter(chain.from_iterable(c.values for _, c in runs), float, n)
    columns["run_dir"] = np.asarray([d for d, _ in runs], dtype=object)[run_index]
    return _typed(pd.DataFrame(columns, columns=list(CURVE_COLUMNS)))
