"""A validation split held out from the TRAINING data, for tuning trials (bench tune): the
probes' training split (its first `eval_train_limit` samples, as every run) is divided once
into a fitting part and a validation part, so a trial fits its probes on the one and scores
them on the other, and never reads the test split.

The validation part is `floor(n * fraction)` samples drawn by a permutation with a fixed seed
(`VAL_SEED`), the same for every trial whatever its seed, so trials of one comparison are
scored on the same samples. Pretraining is unchanged (label-free, on the training data, as in
every run). Planning checks the sizes from the dataset cards (`split_sizes`) without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.core.errors import ConfigError
from bench.data.cards import card_names, load_card

VAL_SEED = 20_221_123  # the validation samples' permutation: one draw for every trial


def split_sizes(n: int, fraction: float) -> tuple[int, int]:
    """(fitting, validation) sizes of `n` training samples at `fraction` (0 < fraction < 1, so
    the fitting part is never empty); no validation sample raises ConfigError: a tune that
    could score nothing."""
    val = math.floor(n * fraction)
    if val < 1:
        raise ConfigError(f"val_fraction={fraction} of {n} training samples leaves no "
                          "validation sample; raise val_fraction or eval_train_limit")
    return n - val, val


def check_validation(cfg: Any, labelled: bool) -> None:
    """A run with `val_fraction` must have labels to score and, where the dataset card states
    its training size, a non-empty validation split (before any data is loaded)."""
    if cfg.val_fraction is None:
        return
    if not labelled:
        raise ConfigError(f"val_fraction: {cfg.dataset} has no labels, so a validation split "
                          "has nothing to score")
    if cfg.granularity == "sentence":
        raise ConfigError("val_fraction: the sentence level's next-sentence check reads the "
                          "test documents; tune at granularity=token")
    name = cfg.dataset.partition(":")[0]
    n = load_card(name).get("n_train") if name in card_names() else None
    if cfg.eval_train_limit is not None:
        n = cfg.eval_train_limit if n is None else min(n, cfg.eval_train_limit)
    if n is not None:
        split_sizes(n, cfg.val_fraction)


@dataclass
class ValidationData:
    """`data` whose evaluation splits are the fitting (`"train"`) and validation (any other
    name) parts of its training split; everything else is `data`'s own. A trial's evaluation
    reads only `eval_split`: the test split is out of reach."""

    data: Any
    fraction: float

    def __getattr__(self, name: str) -> Any:
        if name == "data":  # not yet set (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.data, name)

    def to(self, device) -> ValidationData:
        return ValidationData(self.data.to(device), self.fraction)

    def eval_split(self, split: str, limit: int | None = None):
        import torch

        from bench.data.protocol import EvalSplit

        whole = self.data.eval_split("train", limit)
        fit, val = split_sizes(len(whole), self.fraction)
        order = torch.randperm(len(whole), generator=torch.Generator().manual_seed(VAL_SEED))
        rows = (order[val:] if split == "train" else order[:val]).sort().values
        take = lambda t: None if t is None else t[rows.to(t.device)]  # noqa: E731
        return EvalSplit(take(whole.x), take(whole.y), take(whole.pad_mask))
