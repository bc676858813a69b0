"""Golden numbers: one seeded, tiny digits run per row (1 epoch), its loss and probe figures
pinned in tests/e2e/golden/numbers.json. A change that moves any of them fails here until
the pins are rewritten on purpose:

    .venv/bin/python -m tests.e2e.test_golden --update    # then say why in the commit

Tolerances (TOLERANCE): losses to 0.2 % relative (float reassociation across CPUs and thread
counts moves them by about 1e-6), accuracies by at most two of the 128 test examples (a
reassociated sum may flip an example at a decision boundary; a real change moves more), the
chosen probe penalty exactly.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from bench.run.train import train_run
from tests.helpers import tiny_config

PINS = Path(__file__).parent / "golden" / "numbers.json"
ROWS = ("qbheat", "mae", "interp", "random-init", "raw-input")
TEST_EXAMPLES = 128  # tiny_config's eval_test_limit
TOLERANCE = {  # metric kind -> (relative, absolute)
    "loss": (2e-3, 0.0),
    "accuracy": (0.0, 2 / TEST_EXAMPLES + 1e-9),
    "penalty": (0.0, 0.0),
}
PINNED = {  # summary.json metric -> its kind (those a row reports are pinned)
    "pretrain_loss": "loss",
    "recon_loss": "loss",
    "recon_loss_fill_const": "loss",
    "recon_loss_fill_copy": "loss",
    "linear_top1": "accuracy",
    "knn_top1": "accuracy",
    "linear_l2": "penalty",
}


def golden_run(method: str, run_dir: Path) -> dict[str, float]:
    """The pinned figures of `method`'s seeded digits run: 1 epoch on 256 images, probes on
    512 / 128, everything at tiny_config's sizes, on the CPU."""
    summary = train_run(tiny_config(method=method, epochs=1, seed=0), run_dir, progress=False)
    assert summary["status"] == "ok", summary.get("error")
    return {k: float(v) for k, v in summary["metrics"].items() if k in PINNED}


def close(metric: str, got: float, pinned: float) -> bool:
    rel, abs_ = TOLERANCE[PINNED[metric]]
    return math.isclose(got, pinned, rel_tol=rel, abs_tol=abs_)


@pytest.mark.parametrize("method", ROWS)
def test_numbers_match_their_pins(method, tmp_path):
    pinned = json.loads(PINS.read_text())[method]
    got = golden_run(method, tmp_path / method)
    assert set(got) == set(pinned), "the row reports other metrics than are pinned"
    moved = {m: (pinned[m], got[m]) for m in pinned if not close(m, got[m], pinned[m])}
    assert not moved, (f"{method}: numbers moved (pinned, now): {moved}; if on purpose, run "
                       "`python -m tests.e2e.test_golden --update` and say why")


def test_the_tolerance_catches_a_real_change():
    """One more test example right (or a 1 % loss change) is inside or outside as stated."""
    assert close("linear_top1", 0.5 + 2 / TEST_EXAMPLES, 0.5)
    assert not close("linear_top1", 0.5 + 3 / TEST_EXAMPLES, 0.5)
    assert close("recon_loss", 1.0015, 1.0) and not close("recon_loss", 1.01, 1.0)
    assert not close("linear_l2", 1e-3, 1e-4)


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python -m tests.e2e.test_golden --update  (rewrites the pins)")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pins = {m: golden_run(m, Path(tmp) / m) for m in ROWS}
    PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
    print(f"wrote {PINS}")
