"""What a report states besides the numbers: the settings that differ between runs (so rows
are never silently merged across them), package versions, git sha and hardware, read from each
run's config.json and summary.json."""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bench.config import RunConfig

# Keys that say where or how a run was recorded, or that a report shows elsewhere (section,
# method, options, seed); the rest of config.json decides a run's numbers.
NOT_SETTINGS = frozenset(
    {"run_id", "seed", "method", "options", "dataset", "encoder", "git_sha", "versions",
     "data_fingerprint", "lr", *RunConfig.LOCATION_KEYS}
)
REFERENCE_ONLY_FIXED = frozenset({"epochs"})  # reference rows pretrain nothing: epochs is 0
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)
             if f.default is not dataclasses.MISSING}
UNRECORDED = "(not recorded)"  # failed runs record no device
ABSENT = "(absent)"  # a setting some runs' config.json does not have (and has no default)
_WORKERS = 4


def _read(path: str) -> dict[str, Any]:
    """A JSON object, or {} when the file is missing or unreadable (aggregate reports those)."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode())
    except (OSError, ValueError):
        return {}
    return data if type(data) is dict else {}


def _run_record(run_dir: str) -> tuple[dict[str, Any], str | None]:
    config = _read(os.path.join(run_dir, "config.json"))
    compute = _read(os.path.join(run_dir, "summary.json")).get("compute")
    device = compute.get("device") if type(compute) is dict else None
    return config, device if type(device) is str else None


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


@dataclass
class Provenance:
    """variant: run_dir -> its values of the settings that differ between runs (canonical
    JSON, "{}" when none differ). varying: each differing key -> its values with run counts.
    constant: settings every run shares. git_shas, versions (package -> version -> runs) and
    devices count runs."""

    variant: dict[str, str] = field(default_factory=dict)
    varying: dict[str, Counter[str]] = field(default_factory=dict)
    constant: dict[str, str] = field(default_factory=dict)
    git_shas: Counter[str] = field(default_factory=Counter)
    versions: dict[str, Counter[str]] = field(default_factory=dict)
    devices: Counter[str] = field(default_factory=Counter)


def read_provenance(run_dirs: Iterable[str], references: Iterable[str]) -> Provenance:
    """Provenance of `run_dirs`. A setting a run's config.json lacks (an older run) counts as
    RunConfig's default; `epochs` of reference rows (always 0) does not count as differing."""
    run_dirs = list(dict.fromkeys(run_dirs))
    references = frozenset(references)
    with ThreadPoolExecutor(_WORKERS) as pool:
        records = list(pool.map(_run_record, run_dirs))
    prov = Provenance()
    settings: dict[str, dict[str, str]] = {}
    skipped: dict[str, frozenset[str]] = {}
    for run_dir, (config, device) in zip(run_dirs, records, strict=True):
        skip = NOT_SETTINGS | (REFERENCE_ONLY_FIXED if config.get("method") in references else set())
        merged = {**_DEFAULTS, **config}
        settings[run_dir] = {k: _value_text(v) for k, v in merged.items() if k not in skip}
        skipped[run_dir] = skip
        prov.git_shas[str(config.get("git_sha") or "unknown")] += 1
        versions = config.get("versions")
        for name, version in (versions if type(versions) is dict else {}).items():
            prov.versions.setdefault(name, Counter())[str(version)] += 1
        prov.devices[device or UNRECORDED] += 1
    keys = set().union(*settings.values()) if settings else set()
    values: dict[str, Counter[str]] = {}
    for run_dir, run_settings in settings.items():
        for key in keys - skipped[run_dir]:
            text = run_settings.setdefault(key, ABSENT)
            values.setdefault(key, Counter())[text] += 1
    prov.varying = {k: c for k, c in sorted(values.items()) if len(c) > 1}
    prov.constant = {k: next(iter(c)) for k, c in sorted(values.items()) if len(c) == 1}
    for run_dir, run_settings in settings.items():
        prov.variant[run_dir] = json.dumps(
            {k: run_settings[k] for k in prov.varying if k in run_settings}, sort_keys=True
        )
    return prov
