"""What a report states besides the numbers: the settings that differ between runs (so rows
are never silently merged across them), package versions, git sha and hardware, from each
run's config.json and the device its summary.json names (as bench.report.aggregate.collect read them)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.core.config import RunConfig

# Keys that say where or how a run was recorded, or that a report shows elsewhere (section,
# method, options, seed); the rest of config.json decides a run's numbers.
NOT_SETTINGS = frozenset(
    {"run_id", "seed", "method", "options", "dataset", "encoder", "git_sha", "versions",
     "data_fingerprint", "data_spec", "lr", "repaired", *RunConfig.LOCATION_KEYS,
     *RunConfig.REPORT_KEYS}
)
# Reference rows pretrain nothing: epochs is 0 and the pretraining recipe (what bench tune
# chooses per row) means nothing for them, so their values do not count as differing.
REFERENCE_ONLY_FIXED = frozenset({"epochs", "base_lr", "weight_decay", "warmup",
                                  "warmup_epochs", "decoder_depth"})
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)
             if f.default is not dataclasses.MISSING}
UNRECORDED = "(not recorded)"  # failed runs record no device
ABSENT = "(absent)"  # a setting some runs' config.json does not have (and has no default)


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


@dataclass
class Provenance:
    """variant: run_dir -> its values of the settings that differ between runs (canonical
    JSON, "{}" when none differ). varying: each differing key -> its values with run counts.
    constant: settings every run shares (where reference rows have their own value of a
    REFERENCE_ONLY_FIXED key, it is stated beside the shared one). git_shas, versions
    (package -> version -> runs) and devices count runs."""

    variant: dict[str, str] = field(default_factory=dict)
    varying: dict[str, Counter[str]] = field(default_factory=dict)
    constant: dict[str, str] = field(default_factory=dict)
    git_shas: Counter[str] = field(default_factory=Counter)
    versions: dict[str, Counter[str]] = field(default_factory=dict)
    devices: Counter[str] = field(default_factory=Counter)


def describe_runs(configs: Mapping[str, dict[str, Any]], devices: Mapping[str, str | None],
                  references: Iterable[str]) -> Provenance:
    """Provenance of runs from their config.json (`configs`, by run folder) and devices. A
    setting a config lacks (an older run) counts as RunConfig's default; `epochs` of reference
    rows (always 0) does not count as differing. Runs are grouped by their settings first: a
    sweep has few distinct ones."""
    references = frozenset(references)
    prov = Provenance()
    blob_of: dict[str, tuple[bool, str]] = {}  # run_dir -> (is reference, settings JSON)
    for run_dir, config in configs.items():
        is_ref = config.get("method") in references
        skip = NOT_SETTINGS | (REFERENCE_ONLY_FIXED if is_ref else set())
        settings = {k: v for k, v in {**_DEFAULTS, **config}.items() if k not in skip}
        blob_of[run_dir] = (is_ref, json.dumps(settings, sort_keys=True, default=str))
        prov.git_shas[str(config.get("git_sha") or "unknown")] += 1
        versions = config.get("versions")
        for name, version in (versions if type(versions) is dict else {}).items():
            prov.versions.setdefault(name, Counter())[str(version)] += 1
        prov.devices[devices.get(run_dir) or UNRECORDED] += 1
    distinct = Counter(blob_of.values())
    parsed = {key: {k: _value_text(v) for k, v in json.loads(key[1]).items()} for key in distinct}
    keys = set().union(*parsed.values()) if parsed else set()
    values: dict[str, Counter[str]] = {}
    for (is_ref, blob), n in distinct.items():
        for key in keys - (REFERENCE_ONLY_FIXED if is_ref else set()):
            values.setdefault(key, Counter())[parsed[is_ref, blob].setdefault(key, ABSENT)] += n
    prov.varying = {k: c for k, c in sorted(values.items()) if len(c) > 1}
    prov.constant = {k: next(iter(c)) for k, c in sorted(values.items()) if len(c) == 1}
    for key in REFERENCE_ONLY_FIXED & set(prov.constant):  # shared by pretrained runs only
        own = sorted({_value_text({**_DEFAULTS, **config}.get(key, ABSENT))
                      for config in configs.values() if config.get("method") in references})
        if own and own != [prov.constant[key]]:
            prov.constant[key] += f" (reference rows: {', '.join(own)})"
    variants = {
        key: json.dumps({k: v for k, v in settings.items() if k in prov.varying}, sort_keys=True)
        for key, settings in parsed.items()
    }
    prov.variant = {run_dir: variants[key] for run_dir, key in blob_of.items()}
    return prov
