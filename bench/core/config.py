"""Run configuration: one dataclass, typed option parsing, and the run id (hash of identity)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.core.errors import ConfigError
from bench.core.references import REFERENCE_ROWS


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

# Evaluation protocols a run may select: linear, knn, tran1 and finetune report "<name>_top1"
# (bench/eval/probes.py, supervised.py); dense reports dense_miou and dense_pixel_acc on data
# with per-pixel labels (bench/eval/dense.py); fewshot the probes on few labels
# (bench/eval/fewshot.py).
PROTOCOLS = ("linear", "knn", "tran1", "finetune", "dense", "fewshot")
# Which encoder layers the linear probe reads: the output ("last") or every block ("all").
PROBE_LAYERS = ("last", "all")
# What a text run's grid is made of: tokens (one text block) or sentences (a window of them).
GRANULARITIES = ("token", "sentence")
# The shared decoder: global attention over the grid, or FINOLA's local 3x3 convolutions.
DecoderKind = Literal["transformer", "conv"]
DECODERS: tuple[str, ...] = typing.get_args(DecoderKind)


def comma_list(text: str, what: str, example: str) -> list[str]:
    """'a, b' -> ['a', 'b'], the one parser of every comma list (run fields, --methods,
    --seeds); no item ('') or an empty item ('a,,b') raises ConfigError naming `what`."""
    items = [t.strip() for t in str(text).split(",")]
    if not any(items):
        raise ConfigError(f"no {what} given (e.g. {example})")
    if not all(items):
        raise ConfigError(f"empty {what} in {text!r} (e.g. {example})")
    return items


def names_in(text: str, key: str, valid: tuple[str, ...], what: str) -> tuple[str, ...]:
    """`key`'s comma list of names from `valid` (duplicates dropped); an unknown name raises
    ConfigError listing the valid ones."""
    names = tuple(dict.fromkeys(comma_list(text, what, ",".join(valid[:2]))))
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ConfigError(f"unknown {what} {unknown[0]!r} in {key}={text!r}; valid: "
                          f"{', '.join(valid)}")
    return names


def protocol_list(text: str) -> tuple[str, ...]:
    """'linear,knn' -> ('linear', 'knn'); an empty list or an unknown name raises ConfigError."""
    return names_in(text, "protocols", PROTOCOLS, "evaluation protocol")


# Smallest valid value of each numeric run field (None, where allowed, means "not set").
_LOWER_BOUNDS = {
    "batch_size": 1, "weight_decay": 0, "warmup_epochs": 0, "decoder_dim": 1,
    "decoder_depth": 1, "decoder_heads": 1, "train_limit": 1, "eval_train_limit": 1,
    "eval_test_limit": 1, "probe_steps": 1, "knn_k": 1, "eval_every": 0, "log_every": 0,
    "checkpoint_every_min": 0, "checkpoint_poll_steps": 1, "vocab_size": 5, "block_length": 1, "eval_batch_size": 1,
    "tran1_epochs": 1, "tran1_batch_size": 1, "finetune_epochs": 1, "finetune_batch_size": 1,
    "tran1_min_steps": 0, "finetune_min_steps": 0,
    "fewshot_k": 1, "fewshot_draws": 1, "patch_size": 1,
}
_BOUND_NOTES = {"eval_every": " (0: only at the end)", "log_every": " (0: off)",
                "checkpoint_every_min": " (0: at epoch ends only)",
                "vocab_size": " (4 ids are reserved)"}
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


# Experiment trackers a run may also log to (bench/trackers): `log_to=tensorboard,wandb`.
TRACKERS = ("tensorboard", "wandb", "mlflow")


def tracker_list(text: str) -> tuple[str, ...]:
    """'tensorboard,wandb' -> ('tensorboard', 'wandb'); '' -> (); an unknown name raises."""
    return names_in(text, "log_to", TRACKERS, "tracker") if str(text).strip() else ()


@dataclass
class RunConfig:
    """Everything that decides a run's numbers. Its hash (minus `LOCATION_KEYS` and
    `REPORT_KEYS`) is the run id."""

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
    # Warm-up as a share of the whole schedule (0.05: MAE's 40 of 800 epochs), so its shape is
    # the same at any length; set, it replaces warmup_epochs (which must then stay at 1.0).
    warmup: float | None = None
    decoder_dim: int = 128
    decoder_depth: int = 2  # transformer blocks (decoder=conv has FINOLA's three convolutions)
    decoder_heads: int = 4
    decoder: DecoderKind = "transformer"
    # Images: pixels per patch side (None: the dataset card's), so the grid is image / patch.
    patch_size: int | None = None
    # Tuning trials (bench tune): hold out this share of the training split (one fixed subset)
    # and score every protocol on it as val_* metrics; the test split is not read (None: an
    # ordinary run).
    val_fraction: float | None = None
    augment: bool = True
    train_limit: int | None = None  # pretrain on N training samples drawn once from the seed
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
    compile_mode: CompileMode = "default"  # reduce-overhead: CUDA graphs (bench.runtime.compiling)
    precision: Precision = "auto"  # autocast: bf16 on CUDA only, unless asked (bench.runtime.precision)
    log_every: int = 0  # also log the mean loss of every N steps, without a host sync (0: off)
    checkpoint_every_min: float = 10.0  # also checkpoint inside epochs this often (0: epoch ends)
    checkpoint_poll_steps: int = 50  # under DDP, ranks agree on a mid-epoch checkpoint this often
    strict_data: bool = False  # refuse a dataset with unreadable files (default: skip, count)
    log_to: str = ""  # also log to these trackers (comma list of TRACKERS); the run folder stays
    # Text data only (None: bench/data/text.py's defaults, stated in the dataset cards).
    vocab_size: int | None = None  # WordPiece vocabulary, trained on the train split
    block_length: int | None = None  # tokens per pretraining block = eval truncation length
    # Text level: "sentence" makes the grid a window of `sentences` consecutive sentences of one
    # document, each `sentence_length` tokens (None: bench/data/sentences.py's defaults).
    granularity: Literal["token", "sentence"] = "token"
    sentences: int | None = None
    sentence_length: int | None = None
    # Evaluation protocols run after pretraining (comma list of PROTOCOLS), fixed recipes with
    # their own batch sizes and learning rates: independent of the pretraining batch and of
    # the number of processes.
    protocols: str = "linear,knn"
    eval_batch_size: int = 256  # feature extraction, reconstruction and masked-token metrics
    tran1_epochs: int = 10  # tran1: one transformer block + linear head on frozen tokens
    tran1_min_steps: int = 1000  # ... trained for tran1_epochs, but at least this many steps
    tran1_batch_size: int = 256
    tran1_lr: float = 1e-3  # at batch 256: trains at tran1_lr x tran1_batch_size / 256
    finetune_epochs: int = 5  # finetune: end to end, linear head on pooled features
    finetune_min_steps: int = 1000  # ... for finetune_epochs, but at least this many steps
    finetune_batch_size: int = 256
    finetune_lr: float = 5e-4  # MAE's fine-tuning base lr at batch 256 (x batch / 256)
    finetune_layer_decay: float = 0.75  # lr x decay^(depth - layer) per ViT block (1: none)
    fewshot_k: int = 5  # fewshot: labelled examples per class of the k-shot probes
    fewshot_draws: int = 5  # fewshot: seeded draws of each labelled subset, scores averaged
    probe_layers: Literal["last", "all"] = "last"  # all: also a linear probe per ViT block
    # Hugging Face datasets (hf:PATH) only: the input column (text or image) and the label
    # column (None: unlabelled, like text-dir). See bench/data/hf.py.
    hf_text: str | None = None
    hf_image: str | None = None
    hf_label: str | None = None
    # What the report's headline verdict speaks of (other metrics are secondary): a report
    # setting, not part of the run's numbers (REPORT_KEYS).
    primary_metric: str = "linear_top1"

    # A resumed run ends as an uninterrupted one, so checkpointing is not part of the identity.
    # Precision and compilation are speed knobs like the device (whose default they follow).
    LOCATION_KEYS = ("device", "data_root", "compile", "compile_mode", "precision", "log_every",
                     "checkpoint_every_min", "checkpoint_poll_steps", "log_to", "strict_data")
    # Identity keys added after runs were recorded: hashed only where they differ from their
    # default, so the run ids of earlier runs (which are at the default) stay what they were.
    # How a report reads the run, not what it computes: never part of the identity (runs that
    # differ only here are the same run) nor of the settings a report splits cells by.
    REPORT_KEYS = ("primary_metric",)
    HASHED_UNLESS_DEFAULT = ("hf_text", "hf_image", "hf_label", "granularity", "sentences",
                             "sentence_length", "fewshot_k", "fewshot_draws", "probe_layers",
                             "warmup", "decoder", "patch_size", "val_fraction",
                             "tran1_min_steps", "finetune_min_steps")

    def __post_init__(self) -> None:
        protocol_list(self.protocols)
        for name, low in _LOWER_BOUNDS.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ConfigError(f"{name} must be >= {low}{_BOUND_NOTES.get(name, '')}, got {value}")
        if self.epochs < (0 if self.method in REFERENCE_ROWS else 1):  # reference rows train 0
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        for name in ("base_lr", "knn_temperature", "tran1_lr", "finetune_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        self.log_to = ",".join(tracker_list(self.log_to))
        if not 0.0 < self.finetune_layer_decay <= 1.0:
            raise ConfigError(
                f"finetune_layer_decay must be in (0, 1], got {self.finetune_layer_decay}"
            )
        if self.decoder_dim % self.decoder_heads:
            raise ConfigError(f"decoder_heads={self.decoder_heads} must divide "
                              f"decoder_dim={self.decoder_dim}")
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ConfigError(f"device={self.device!r}: expected auto, cpu, cuda or cuda:N")
        if self.probe_layers not in PROBE_LAYERS:
            raise ConfigError(f"probe_layers={self.probe_layers!r}: must be one of "
                              f"{', '.join(PROBE_LAYERS)}")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(
                f"granularity={self.granularity!r}: must be one of {', '.join(GRANULARITIES)}"
            )
        if self.sentences is not None and self.sentences < 2:
            raise ConfigError(f"sentences must be >= 2 (a window to hide some of), got "
                              f"{self.sentences}")
        if self.sentence_length is not None and self.sentence_length < 1:
            raise ConfigError(f"sentence_length must be >= 1, got {self.sentence_length}")
        self._check_schedule_and_decoder()

    def _check_schedule_and_decoder(self) -> None:
        """The warm-up given one way only; a decoder setting the chosen decoder has; a
        validation share that leaves both parts."""
        if self.warmup is not None:
            if not 0.0 <= self.warmup < 1.0:
                raise ConfigError(f"warmup must be a share of the schedule in [0, 1), got "
                                  f"{self.warmup}")
            if self.warmup_epochs != _FIELD_DEFAULTS["warmup_epochs"]:
                raise ConfigError("give the warm-up once: warmup (a share of the schedule) or "
                                  "warmup_epochs, not both")
        if self.decoder not in DECODERS:
            raise ConfigError(f"decoder={self.decoder!r}: must be one of {', '.join(DECODERS)}")
        if self.decoder == "conv" and self.decoder_depth != _FIELD_DEFAULTS["decoder_depth"]:
            raise ConfigError(f"decoder_depth={self.decoder_depth} sets the transformer "
                              "decoder's blocks; decoder=conv is FINOLA's three 3x3 "
                              "convolutions (drop decoder_depth)")
        if self.val_fraction is not None and not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    def warmup_steps(self, steps_per_epoch: int) -> int:
        """Warm-up steps of a schedule of `epochs * steps_per_epoch` steps: `warmup` of all
        of them, else `warmup_epochs` epochs."""
        if self.warmup is not None:
            return round(self.warmup * self.epochs * steps_per_epoch)
        return round(self.warmup_epochs * steps_per_epoch)

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256

    def identity(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in (*self.LOCATION_KEYS, *self.REPORT_KEYS):
            d.pop(key)
        for key in self.HASHED_UNLESS_DEFAULT:
            if d[key] == _FIELD_DEFAULTS[key]:
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


_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}


def run_config_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig) if f.name != "options"]


def apply_overrides(base: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of `base` with top-level keys overridden (typed, with errors naming valid keys)."""
    if not overrides:
        return base
    merged = {**{k: v for k, v in dataclasses.asdict(base).items()}, **overrides}
    typed = parse_options(RunConfig, merged)
    return typed


def differing_keys(runs: list[RunConfig]) -> list[str]:
    """Identity keys whose value differs between runs (what a listing should show). A method
    option counts only where runs of that method differ in it."""
    if not runs:
        return []
    dicts = [r.identity() for r in runs]
    flat = [{**{k: v for k, v in d.items() if k != "options"},
             **{f"{d['method']}.{k}": v for k, v in d["options"].items()}} for d in dicts]
    keys = sorted(set().union(*flat))
    return [k for k in keys
            if len({repr(f.get(k)) for f in flat if "." not in k or k in f}) > 1]
