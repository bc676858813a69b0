"""Names every layer shares, importing no torch: the reference rows every table carries.

(`bench list`, `status`, `report` and `sweep --dry-run` read names from here, so they start
without loading models.)"""

from __future__ import annotations

# Reference rows: what the same probes give without pretraining, so a reader sees what
# pretraining adds. They train nothing (epochs 0) and take no method options. In table order.
REFERENCES: dict[str, str] = {
    "random-init": "the same encoder, untrained (probes on its random features)",
    "raw-input": "the same probes on the standardised input (pixels, or bag-of-words for text)",
}
