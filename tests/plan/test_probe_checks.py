"""The new protocols' bad inputs are refused in one line (exit 2) before anything is written:
`dense` on data without per-pixel labels and `probe_layers=all` on a CNN at planning (dry runs
too), a few-shot k above the smallest class at preflight; and the new run fields leave the
ids of earlier runs as they were."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.core.config import RunConfig
from bench.core.errors import ConfigError
from bench.plan.sweep import expand
from tests.helpers import TINY


def refused(capsys, tmp_path, *args: str) -> str:
    out = tmp_path / "out"
    code = main(["run", "--out", str(out), *TINY, *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert not out.exists()
    return err


@pytest.mark.parametrize("dry", [True, False])
def test_dense_needs_per_pixel_labels(capsys, tmp_path, dry):
    err = refused(capsys, tmp_path, "--methods", "mae,raw-input", "--protocols", "linear,dense",
                  *(["--dry-run"] if dry else []))
    assert "protocols=dense needs per-pixel labels and digits has none" in err
    assert "fashion-mosaic" in err  # where to find them


def test_probe_layers_all_needs_blocks(capsys, tmp_path):
    err = refused(capsys, tmp_path, "--methods", "qbheat", "--encoder", "cnn-resnet-micro",
                  "probe_layers=all", "--dry-run")
    assert "probe_layers=all" in err and "cnn-resnet-micro" in err
    with pytest.raises(ConfigError, match="probe_layers='some'"):
        RunConfig(probe_layers="some")


def test_fewshot_k_above_the_smallest_class(capsys, tmp_path):
    # digits' first 512 training images hold about 50 of each digit
    err = refused(capsys, tmp_path, "--methods", "random-init", "--protocols", "fewshot",
                  "fewshot_k=60")
    assert "fewshot_k=60" in err and "lower fewshot_k or raise eval_train_limit" in err


def test_new_fields_keep_earlier_run_ids():
    """Pinned: these ids are what the code before the new fields gave (checked on 3ec0409)."""
    assert RunConfig().run_id == "d5e23660b7be"
    assert RunConfig(method="qbheat", dataset="digits",
                     protocols="linear,knn,tran1").run_id == "155c8d11e753"
    base = RunConfig().run_id
    for changed in ({"probe_layers": "all"}, {"fewshot_k": 3}, {"fewshot_draws": 2}):
        assert RunConfig(**changed).run_id != base
    (run,) = expand({"method": "random-init", "dataset": "digits", "protocols": "fewshot"})
    assert run.fewshot_k == 5 and run.fewshot_draws == 5 and "probe_layers" not in run.identity()
