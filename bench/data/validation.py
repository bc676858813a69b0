"""A validation split held out from the TRAINING data, for tuning trials (bench tune): a trial
fits every probe on the training split less the validation units and scores every protocol
(the probes, the dense probe, few-shot, per layer, tran1, fine-tuning, linear predictability,
the next-sentence checks) on the validation units, and never reads the test split: the data a
trial's evaluation sees (`TrainingData.divided`) holds no test data at all.

The validation units are one fixed subset of the whole labelled training split (inputs;
documents at the sentence level, so no document is in both parts): `floor(n * fraction)` of
its n units, drawn by a permutation with a fixed seed (`VAL_SEED`), the same for every trial
whatever its seed and whatever the eval limits, so the trials of one comparison are scored on
the same units and no fitting row is ever a validation row. As a run's test split is read
up to `eval_test_limit`, a trial scores the first `eval_test_limit` validation units of that
permutation (a seeded random sample of them); its probes fit on the first `eval_train_limit`
of the other training units, in their order. Pretraining is unchanged (label-free, on the
whole training data, as in the runs the trials choose a recipe for). Planning checks the sizes
from the dataset cards (`split_sizes`) without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bench.core.errors import ConfigError
from bench.data.cards import card_names, load_card

VAL_SEED = 20_221_123  # the validation units' permutation: one draw for every trial
PRETRAINING = ("n_pretrain", "pretrain_batch", "iter_pretrain")  # what reads the whole data


def split_sizes(n: int, fraction: float) -> tuple[int, int]:
    """(fitting, validation) sizes of `n` training units at `fraction` (0 < fraction < 1, so
    the fitting part is never empty); no validation unit raises ConfigError: a tune that
    could score nothing."""
    val = math.floor(n * fraction)
    if val < 1:
        raise ConfigError(f"val_fraction={fraction} of {n} training samples leaves no "
                          "validation sample; raise val_fraction")
    return n - val, val


def check_validation(cfg: Any, labelled: bool) -> None:
    """A run with `val_fraction` must have labels to score and, where the dataset card states
    its training size, a non-empty validation split (before any data is loaded)."""
    if cfg.val_fraction is None:
        return
    if not labelled:
        raise ConfigError(f"val_fraction: {cfg.dataset} has no labels, so a validation split "
                          "has nothing to score")
    name = cfg.dataset.partition(":")[0]
    n = load_card(name).get("n_train") if name in card_names() else None
    if n is not None and cfg.granularity == "token":  # the sentence level draws documents
        split_sizes(n, cfg.val_fraction)


@dataclass
class ValidationData:
    """`data` as a tuning trial sees it: pretraining (`PRETRAINING`) reads `data` itself,
    everything else (every split a protocol asks for, by whatever method) reads `view`, the
    data divided into its fitting and validation units, with no test split in it."""

    data: Any
    fraction: float
    view: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import torch

        n = self.data.validation_units()
        _, val = split_sizes(n, self.fraction)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SEED))
        self.view = self.data.divided(order[:val])

    def __getattr__(self, name: str) -> Any:
        if name in ("data", "view"):  # not yet set (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.data if name in PRETRAINING else self.view, name)

    def to(self, device) -> ValidationData:
        return ValidationData(self.data.to(device), self.fraction)
