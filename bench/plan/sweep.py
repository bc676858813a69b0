"""Run expansion: fixed settings x grid (cartesian) x zipped lists x seeds -> list[RunConfig].

`bench run --methods a,b --seeds 0,1` and `bench sweep SPEC` both go through `expand`, and
every run is validated (names, option values, method/encoder/dataset compatibility) before
anything is trained or written. `load_spec` reads a sweep file (sweeps/*.toml).
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.cards import MethodCard
from bench.core.config import RunConfig, apply_overrides, protocol_list, run_config_fields
from bench.core.errors import ConfigError, IncompatibleError
from bench.core.options import MethodOptions, options_dict
from bench.core.references import REFERENCE_ROWS
from bench.core.registry import Registry
from bench.core.spec import visible_count
from bench.data import DATASETS, DatasetEntry, check_granularity, run_dataset_entry
from bench.data.geometry import check_patch_size, planned_grid, planned_patch_size
from bench.data.validation import check_validation
from bench.launch.slurm import slurm_settings
from bench.models.presets import ENCODERS, encoders_of_kind
from bench.report.metrics import DEFAULT_PRIMARY, check_primary
from methods import method_cards


def known_methods() -> Registry[MethodCard]:
    """The methods as planning sees them: their cards (methods.method_cards, no torch)."""
    return method_cards()


def method_options(name: str, raw: dict[str, Any]) -> MethodOptions:
    """Method `name`'s typed options; bad keys or values raise ConfigError naming them."""
    return known_methods().get(name).options(raw)


def option_defaults() -> dict[str, dict[str, Any]]:
    """Each method's options at their defaults: listings (the dry run, `bench status`, the
    report) show a run's options where they depart from these."""
    return {name: options_dict(method_options(name, {})) for name in known_methods().names()}


def split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Separate run fields (`epochs`) from method options (`mae.mask_ratio`)."""
    top: dict[str, Any] = {}
    per_method: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        if "." in key:
            method, _, option = key.partition(".")
            if method not in known_methods() and method not in REFERENCE_ROWS:
                known_methods().get(method)  # raises UnknownMethodError naming the known ones
            per_method.setdefault(method, {})[option] = value
        else:
            top[key] = value
    return top, per_method


# Seeds a run takes: its generators are seeded with seed * 1_000_003 + epoch
# (bench.run.sampling), which must fit torch's 64-bit seeds.
MAX_SEED = 2**32 - 1


def check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed {seed} is out of range: seeds are integers from 0 to {MAX_SEED}")


def check_mask_ratio(cfg: RunConfig, modality: str) -> None:
    """The mask ratio hides something on the grid the run will have (where the dataset card
    tells it; otherwise preflight checks it on the loaded data, bench.launch.preflight)."""
    grid = planned_grid(cfg, modality)
    if grid is None or "mask_ratio" not in cfg.options:
        return
    try:
        visible_count(grid, cfg.options["mask_ratio"])
    except ValueError as err:
        raise ConfigError(f"{cfg.method}.mask_ratio: {err}") from None


def resolve_run(cfg: RunConfig) -> RunConfig:
    """Validate `cfg` and canonicalise it (every option spelled out) so its hash is stable.
    Everything checked here is checked by a dry run too: it plans the same runs."""
    check_seed(cfg.seed)
    entry = run_dataset_entry(cfg)
    if cfg.primary_metric != DEFAULT_PRIMARY:  # the default falls back where it is not run
        check_primary(cfg.primary_metric, protocol_list(cfg.protocols), cfg.granularity)
    check_granularity(cfg.dataset, cfg.granularity, block_length=cfg.block_length,
                      sentences=cfg.sentences, sentence_length=cfg.sentence_length)
    encoder = ENCODERS.get(cfg.encoder)
    if entry.modality not in encoder.modalities:
        raise IncompatibleError(
            f"encoder {cfg.encoder!r} does not take {entry.modality} data; encoders that work: "
            + ", ".join(encoders_of_kind(frozenset({"token", "dense"}), entry.modality))
        )
    check_probes(cfg, entry, encoder.family)
    check_patch_size(cfg, entry.modality)
    check_stride(cfg, entry.modality)
    check_validation(cfg, entry.labelled)
    if cfg.method in REFERENCE_ROWS:
        if not entry.labelled:
            raise IncompatibleError(
                f"{cfg.method} is a probe reference row and {entry.name} has no labels to probe; "
                "run only methods on it (they report the masked-token metrics)"
            )
        if cfg.options:
            raise ConfigError(f"{cfg.method} is a reference row and takes no options")
        return dataclasses.replace(cfg, epochs=0)
    card = known_methods().get(cfg.method)
    typed = method_options(cfg.method, cfg.options)
    card.check(entry.modality, encoder.offers, cfg.encoder,
               encoders_of_kind(card.encoder_kinds_for(typed), entry.modality), options=typed)
    resolved = dataclasses.replace(cfg, options=options_dict(typed))
    check_mask_ratio(resolved, entry.modality)
    return resolved


def check_probes(cfg: RunConfig, entry: DatasetEntry, family: str) -> None:
    """The protocols and probe settings the run's data and encoder can serve: `dense` needs
    per-pixel labels, `probe_layers=all` an encoder with blocks (ViT)."""
    if "dense" in protocol_list(cfg.protocols) and not entry.dense_labels:
        dense = [n for n in DATASETS.names() if DATASETS.get(n).dense_labels]
        raise ConfigError(f"protocols=dense needs per-pixel labels and {cfg.dataset} has none; "
                          f"datasets with them: {', '.join(dense)}")
    if cfg.probe_layers == "all" and family != "vit":
        raise ConfigError(f"probe_layers=all probes every block of a ViT; {cfg.encoder} is a "
                          f"{family} encoder without blocks (use probe_layers=last)")


def check_zip(zipped: dict[str, list[Any]]) -> None:
    """Lists walked in step must have one length."""
    lengths = {len(v) for v in zipped.values()}
    if len(lengths) > 1:
        raise ConfigError(f"the lists in [zip] differ in length: {sorted(lengths)}")


def check_stride(cfg: RunConfig, modality: str) -> None:
    """A CNN preset is cut at stride = patch size: a patch size none of its stages has is
    refused, naming the presets that have it."""
    patch = planned_patch_size(cfg) if modality == "image" else None
    strides = ENCODERS.get(cfg.encoder).strides
    if patch is None or strides is None or patch in strides:
        return
    works = [n for n in encoders_of_kind(frozenset({"token", "dense"}), modality)
             if ENCODERS.get(n).strides is None or patch in ENCODERS.get(n).strides]
    raise IncompatibleError(f"encoder {cfg.encoder!r} has no stage at stride {patch} (the patch "
                            f"size); its strides: {', '.join(map(str, strides))}; encoders "
                            f"that work at patch_size={patch}: {', '.join(works)}")


def expand(
    fixed: dict[str, Any],
    grid: dict[str, list[Any]] | None = None,
    zipped: dict[str, list[Any]] | None = None,
    seeds: list[int] | None = None,
) -> list[RunConfig]:
    """Every combination of `grid` (cartesian) with the `zipped` lists walked in step."""
    grid, zipped = grid or {}, zipped or {}
    check_options_are_used(fixed, grid, zipped)
    check_zip(zipped)
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


def check_options_are_used(fixed: dict[str, Any], grid: dict[str, list[Any]],
                           zipped: dict[str, list[Any]]) -> None:
    """A `method.option` key for a method none of the runs uses would silently do nothing (a
    grid over it collapses to one run): refuse it, naming the methods that do run."""
    if "method" in grid or "method" in zipped:
        run = {*grid.get("method", []), *zipped.get("method", [])}
    else:
        run = {fixed.get("method", RunConfig.method)}
    for where, keys in (("", fixed), ("grid.", grid), ("zip.", zipped)):
        for key in keys:
            method = key.partition(".")[0] if "." in key else None
            if method is not None and method not in run and method in known_methods():
                raise ConfigError(
                    f"{where}{key} sets an option of {method}, which none of these runs uses "
                    f"(methods: {', '.join(sorted(run))}); add {method} to the methods or drop "
                    "the key")



# Keys of a sweep file besides run settings (run fields and `method.option`s).
SPEC_KEYS = ("seeds", "out", "grid", "zip", "slurm", "cell", "tune")


@dataclass
class SweepSpec:
    """A sweep file: fixed settings at the top, `[grid]` (cartesian product), `[zip]` (lists
    walked in step), `[[cell]]` (extra cells besides the grid: each table's settings over the
    fixed ones, at every seed), `seeds`, `out`, `[slurm]` (job settings, see
    bench.launch.slurm) and `[tune]` (bench tune's grid, bench.plan.tune)."""

    name: str
    fixed: dict[str, Any]
    grid: dict[str, list[Any]]
    zipped: dict[str, list[Any]]
    seeds: list[int] | None = None
    out: Path | None = None
    slurm: dict[str, Any] = dataclasses.field(default_factory=dict)
    cells: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    tune: dict[str, Any] = dataclasses.field(default_factory=dict)

    def override(self, settings: dict[str, Any]) -> SweepSpec:
        """Command-line settings win: a key set there is fixed, even where the spec varies it."""
        return dataclasses.replace(
            self,
            fixed={**self.fixed, **settings},
            grid={k: v for k, v in self.grid.items() if k not in settings},
            zipped={k: v for k, v in self.zipped.items() if k not in settings},
            cells=[{**cell, **settings} for cell in self.cells],
        )

    def runs(self) -> list[RunConfig]:
        """The grid's runs, then each extra cell's (a run planned twice is kept once)."""
        runs = expand(self.fixed, self.grid, self.zipped, self.seeds)
        seen = {r.run_id for r in runs}
        for cell in self.cells:
            for run in expand({**self.fixed, **cell}, seeds=self.seeds):
                if run.run_id not in seen:
                    seen.add(run.run_id)
                    runs.append(run)
        return runs


def load_spec(path: Path) -> SweepSpec:
    """Read and check a sweep file: an unknown key or a bad value raises ConfigError naming
    the file, the key and the valid keys, before any run is expanded."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read sweep spec {path}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    try:
        return spec_from_dict(path.stem, raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def spec_from_dict(name: str, raw: dict[str, Any]) -> SweepSpec:
    """A sweep from the content of a sweep file (nested tables or dotted keys), checked."""
    fixed = {k: v for k, v in _flatten(raw).items() if k.split(".")[0] not in SPEC_KEYS}
    for key, value in fixed.items():
        check_setting(key, value)
    axes = {}
    for table in ("grid", "zip"):
        axes[table] = _flatten(_table(raw, table))
        for key, values in axes[table].items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{table}.{key} must be a non-empty list, got {values!r}")
            for value in values:
                check_setting(key, value, f"{table}.")
    check_zip(axes["zip"])
    seeds = raw.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in seeds
    )):
        raise ConfigError(f"seeds must be a non-empty list of integers (seeds = [0, 1, 2]), got {seeds!r}")
    out = raw.get("out")
    if out is not None and not isinstance(out, str):
        raise ConfigError(f"out must be a folder path, got {out!r}")
    slurm = _table(raw, "slurm")
    slurm_settings(slurm)  # checked now; the command line may still override it
    cells = raw.get("cell", [])
    if not isinstance(cells, list) or not all(isinstance(c, dict) and c for c in cells):
        raise ConfigError(f"cell must be tables of settings ([[cell]]), got {cells!r}")
    cells = [_flatten(c) for c in cells]
    for cell in cells:
        for key, value in cell.items():
            check_setting(key, value, "cell.")
    return SweepSpec(name, fixed, axes["grid"], axes["zip"], seeds,
                     Path(out) if out is not None else None, slurm, cells, _table(raw, "tune"))


def _table(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a table ([{key}]), got {value!r}")
    return value


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML spells `mae.mask_ratio = 0.6` as a nested table; make it one dotted key again.
    (The `[slurm]` table stays whole.)"""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and key not in SPEC_KEYS:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def check_setting(key: str, value: Any, where: str = "") -> None:
    """`key = value` is a run field or a method option with a valid value, else ConfigError
    naming the valid keys."""
    if "." not in key:
        if key == "seed":
            raise ConfigError(f"{where}seed: give seeds = [0, 1, 2] (a list) at the top instead")
        if key not in run_config_fields():
            raise ConfigError(
                f"unknown key {where}{key}; valid: {', '.join(SPEC_KEYS)}, "
                f"{', '.join(f for f in run_config_fields() if f != 'seed')}, "
                "or METHOD.OPTION (e.g. mae.mask_ratio)"
            )
        apply_overrides(RunConfig(), {key: value})
        return
    method, _, option = key.partition(".")
    if method in REFERENCE_ROWS:
        raise ConfigError(f"{where}{key}: {method} is a reference row and takes no options")
    if method not in known_methods():
        raise ConfigError(
            f"unknown key {where}{key}: {method!r} is not a method; methods: "
            + ", ".join(known_methods().names())
        )
    method_options(method, {option: value})
