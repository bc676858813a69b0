"""Run configuration: one dataclass, typed option parsing, and the run id (hash of identity)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

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


# torch.compile's modes (the first is torch's default) and the autocast choices.
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
Precision = Literal["auto", "bf16", "fp32"]
COMPILE_MODES: tuple[str, ...] = typing.get_args(CompileMode)
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)

# Evaluation protocols a run may select; each reports "<name>_top1" (bench/evaluate.py).
PROTOCOLS = ("linear", "knn", "tran1", "finetune")


def protocol_list(text: str) -> tuple[str, ...]:
    """'linear,knn' -> ('linear', 'knn'); an empty list or an unknown name raises ConfigError."""
    names = tuple(dict.fromkeys(t.strip() for t in str(text).split(",") if t.strip()))
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown or not names:
        what = f"unknown evaluation protocol {unknown[0]!r}" if unknown else "no evaluation protocol"
        raise ConfigError(f"{what} in protocols={text!r}; valid: {', '.join(PROTOCOLS)}")
    return names


@dataclass
class RunConfig:
    """Everything that decides a run's numbers. Its hash (minus `LOCATION_KEYS`) is the run id."""

    method: str = "mae"
    options: dict[str, Any] = field(default_factory=dict)
    dataset: str = "fashion-mnist"
    encoder: str = "vit-micro"
    seed: int = 0
    epochs: int = 5
    batch_size: int = 256  # the global batch: split evenly across data-parallel processes
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
    # Location, hardware and speed knobs: not part of the run's identity.
    device: str = "auto"
    data_root: str | None = None
    compile: bool | None = None  # torch.compile the pretraining step (None: on CUDA only)
    compile_mode: CompileMode = "default"  # reduce-overhead: CUDA graphs (bench.compiling)
    precision: Precision = "auto"  # autocast: bf16 on CUDA only, unless asked (bench.precision)
    log_every: int = 0  # also log the mean loss of every N steps, without a host sync (0: off)
    checkpoint_every_min: float = 10.0  # also checkpoint inside epochs this often (0: epoch ends)
    # Text data only (None: bench/data/text.py's defaults, stated in the dataset cards).
    vocab_size: int | None = None  # WordPiece vocabulary, trained on the train split
    block_length: int | None = None  # tokens per pretraining block = eval truncation length
    # Evaluation protocols run after pretraining (comma list of PROTOCOLS), fixed recipes.
    protocols: str = "linear,knn"
    tran1_epochs: int = 10  # tran1: one transformer block + linear head on frozen tokens
    finetune_epochs: int = 5  # finetune: end to end, linear head on pooled features
    finetune_layer_decay: float = 0.75  # lr x decay^(depth - layer) per ViT block (1: none)

    # A resumed run ends as an uninterrupted one, so checkpointing is not part of the identity.
    # Precision and compilation are speed knobs like the device (whose default they follow).
    LOCATION_KEYS = ("device", "data_root", "compile", "compile_mode", "precision", "log_every",
                     "checkpoint_every_min")

    def __post_init__(self) -> None:
        protocol_list(self.protocols)
        if self.log_every < 0:
            raise ConfigError(f"log_every must be >= 0 (0: off), got {self.log_every}")
        if self.checkpoint_every_min < 0:
            raise ConfigError(
                f"checkpoint_every_min must be >= 0 (0: at epoch ends only), got "
                f"{self.checkpoint_every_min}"
            )
        if self.tran1_epochs < 1 or self.finetune_epochs < 1:
            raise ConfigError("tran1_epochs and finetune_epochs must be >= 1")
        if not 0.0 < self.finetune_layer_decay <= 1.0:
            raise ConfigError(
                f"finetune_layer_decay must be in (0, 1], got {self.finetune_layer_decay}"
            )

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
