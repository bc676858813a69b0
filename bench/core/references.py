"""Reference rows: what the same probes give without pretraining, so a reader sees what
pretraining adds. Each is a plugin stating what its probes read and which protocols it can
report; it trains nothing (epochs 0) and takes no options. Plain data, no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ReferenceRow:
    """A row every table carries beside the methods.

    `features`: what its probes read: `input` (the standardised input itself: pixels, or
    bag-of-words for text) or `untrained-encoder` (the run's encoder at its seeded random
    initialisation). `protocols`: the evaluation protocols it can report; a run's other
    protocols are skipped for it (an input has no encoder to put a transformer block on or to
    fine-tune).
    """

    name: str
    description: str
    features: Literal["input", "untrained-encoder"]
    protocols: frozenset[str]

    def reports(self, selected: tuple[str, ...]) -> tuple[str, ...]:
        """The run's selected protocols this row reports, in their order."""
        return tuple(p for p in selected if p in self.protocols)


# In table order.
REFERENCE_ROWS: dict[str, ReferenceRow] = {row.name: row for row in (
    ReferenceRow("random-init", "the same encoder, untrained (probes on its random features)",
                 "untrained-encoder",
                 frozenset({"linear", "knn", "tran1", "finetune", "dense", "fewshot"})),
    ReferenceRow("raw-input", "the same probes on the standardised input (pixels, or "
                 "bag-of-words for text; per position: a patch's pixels)", "input",
                 frozenset({"linear", "knn", "dense", "fewshot"})),
)}
