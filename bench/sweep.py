"""Run expansion: fixed settings x grid (cartesian) x zipped lists x seeds -> list[RunConfig].

`bench run --methods a,b --seeds 0,1` and `bench sweep SPEC` both go through `expand`, and
every run is validated (names, option values, method/encoder/dataset compatibility) before
anything is trained or written.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import methods  # noqa: F401  (registers every method)
from bench.config import RunConfig, apply_overrides
from bench.data import dataset_entry
from bench.errors import ConfigError, IncompatibleError
from bench.models.encoders import ENCODERS, encoders_of_kind
from bench.train import REFERENCES
from methods.base import METHODS, options_dict, resolve_options


def split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Separate run fields (`epochs`) from method options (`mae.mask_ratio`)."""
    top: dict[str, Any] = {}
    per_method: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        if "." in key:
            method, _, option = key.partition(".")
            if method not in METHODS and method not in REFERENCES:
                METHODS.get(method)  # raises UnknownMethodError naming the known ones
            per_method.setdefault(method, {})[option] = value
        else:
            top[key] = value
    return top, per_method


def resolve_run(cfg: RunConfig) -> RunConfig:
    """Validate `cfg` and canonicalise it (every option spelled out) so its hash is stable."""
    entry, _ = dataset_entry(cfg.dataset)
    encoder = ENCODERS.get(cfg.encoder)
    if entry.modality not in encoder.modalities:
        raise IncompatibleError(
            f"encoder {cfg.encoder!r} does not take {entry.modality} data; encoders that work: "
            + ", ".join(encoders_of_kind(frozenset({"token", "dense"}), entry.modality))
        )
    if cfg.method in REFERENCES:
        if cfg.options:
            raise ConfigError(f"{cfg.method} is a reference row and takes no options")
        return dataclasses.replace(cfg, epochs=0)
    cls = METHODS.get(cfg.method)
    if entry.modality not in cls.modalities:
        raise IncompatibleError(
            f"method {cfg.method!r} does not support {entry.modality} data (dataset {cfg.dataset!r})"
        )
    if encoder.kind not in cls.encoder_kinds:
        raise IncompatibleError(
            f"method {cfg.method!r} needs a {' or '.join(sorted(cls.encoder_kinds))} encoder, not "
            f"{cfg.encoder!r}; encoders that work: "
            + ", ".join(encoders_of_kind(cls.encoder_kinds, entry.modality))
        )
    options = options_dict(resolve_options(cfg.method, cfg.options))
    return dataclasses.replace(cfg, options=options)


def expand(
    fixed: dict[str, Any],
    grid: dict[str, list[Any]] | None = None,
    zipped: dict[str, list[Any]] | None = None,
    seeds: list[int] | None = None,
) -> list[RunConfig]:
    """Every combination of `grid` (cartesian) with the `zipped` lists walked in step."""
    grid, zipped = grid or {}, zipped or {}
    lengths = {len(v) for v in zipped.values()}
    if len(lengths) > 1:
        raise ConfigError(f"zipped lists differ in length: {sorted(lengths)}")
    zipped_rows = [dict(zip(zipped, row)) for row in zip(*zipped.values())] or [{}]
    grid_rows = [dict(zip(grid, row)) for row in itertools.product(*grid.values())]
    seeds = seeds if seeds is not None else [fixed.get("seed", 0)]
    runs: list[RunConfig] = []
    seen: set[str] = set()
    for g, z, seed in itertools.product(grid_rows, zipped_rows, seeds):
        top, per_method = split_settings({**fixed, **g, **z, "seed": seed})
        base = apply_overrides(RunConfig(), top)
        cfg = resolve_run(dataclasses.replace(base, options=per_method.get(base.method, {})))
        if cfg.run_id not in seen:  # e.g. a reference row repeated across a method option grid
            seen.add(cfg.run_id)
            runs.append(cfg)
    return runs


def differing_keys(runs: list[RunConfig]) -> list[str]:
    """Identity keys whose value differs between runs (what a listing should show)."""
    if not runs:
        return []
    dicts = [r.identity() for r in runs]
    flat = [{**{k: v for k, v in d.items() if k != "options"},
             **{f"{d['method']}.{k}": v for k, v in d["options"].items()}} for d in dicts]
    keys = sorted(set().union(*flat))
    return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
