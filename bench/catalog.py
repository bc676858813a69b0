"""Names every layer shares, importing nothing: the reference rows every table carries (the
methods' names are read from their files by bench.method_cards)."""

from __future__ import annotations

# Reference rows: what the same probes give without pretraining, so a reader sees what
# pretraining adds. They train nothing (epochs 0) and take no method options. In table order.
REFERENCES: dict[str, str] = {
    "random-init": "the same encoder, untrained (probes on its random features)",
    "raw-input": "the same probes on the standardised input (pixels, or bag-of-words for text)",
}
