"""Run configuration: one dataclass, typed option parsing, and the run id (hash of identity)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from bench.errors import ConfigError


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Turn a CLI/TOML value into the field's type; strings like '0.6' or 'true' are parsed."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], key)
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}: must be one of {', '.join(map(str, allowed))}")
        return value
    try:
        if annotation is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if annotation is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if annotation is float:
            return float(value)
        if annotation is str:
            return str(value)
    except (TypeError, ValueError):
        name = getattr(annotation, "__name__", str(annotation))
        raise ConfigError(f"{key}={value!r}: expected {name}") from None
    return value


def parse_options(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from raw values; unknown keys and bad values raise ConfigError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    dotted = f"{prefix}." if prefix else ""
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(
                f"unknown option {dotted}{key}; valid: {', '.join(dotted + f for f in sorted(fields))}"
            )
        kwargs[key] = _coerce(value, hints[key], dotted + key)
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ConfigError(f"{prefix or cls.__name__}: {err}") from None


@dataclass
class RunConfig:
    """Everything that decides a run's numbers. Its hash (minus `LOCATION_KEYS`) is the run id."""

    method: str = "mae"
    options: dict[str, Any] = field(default_factory=dict)
    dataset: str = "fashion-mnist"
    encoder: str = "vit-micro"
    seed: int = 0
    epochs: int = 5
    batch_size: int = 256
    base_lr: float = 1.5e-3  # lr = base_lr * batch_size / 256 (linear scaling, stated)
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    augment: bool = True
    train_limit: int | None = None  # pretrain on the first N (seeded order) training samples
    eval_train_limit: int | None = None  # probes fit on the first N training samples
    eval_test_limit: int | None = None
    probe_steps: int = 100  # L-BFGS iterations of the linear probe
    knn_k: int = 20
    knn_temperature: float = 0.07
    eval_every: int = 0  # kNN every K epochs during pretraining (0: only at the end)
    compile: bool = False
    # Location and hardware: not part of the run's identity.
    device: str = "auto"
    data_root: str | None = None

    LOCATION_KEYS = ("device", "data_root")

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256

    def identity(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in self.LOCATION_KEYS:
            d.pop(key)
        return d

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def run_config_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig) if f.name != "options"]


def apply_overrides(base: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of `base` with top-level keys overridden (typed, with errors naming valid keys)."""
    if not overrides:
        return base
    merged = {**{k: v for k, v in dataclasses.asdict(base).items()}, **overrides}
    typed = parse_options(RunConfig, merged)
    return typed
