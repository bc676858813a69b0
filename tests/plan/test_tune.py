"""bench tune: a [tune] grid per row, trials scored on a validation split of the training data
(never the test split), each row's best recipe, then the comparison at it; warm-up as a share
of the schedule; bad input refused in one line."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.core.config import RunConfig
from bench.core.errors import ConfigError
from bench.data.validation import split_sizes
from bench.plan.sweep import spec_from_dict
from bench.plan.tune import choose, final_runs, plan_rows, tune_spec

SWEEP = {"dataset": "digits", "epochs": 1, "seeds": [0, 1, 2],
         "grid": {"method": ["mae", "qbheat", "random-init"]},
         "tune": {"base_lr": [1.5e-4, 1.5e-3], "warmup": [0.05, 0.2], "val_fraction": 0.2}}


def _plan(raw=SWEEP):
    sweep = spec_from_dict("s", raw)
    tune = tune_spec(sweep.tune)
    return sweep, tune, plan_rows(sweep, tune)


def test_each_row_gets_every_grid_point_as_a_trial_on_a_validation_split():
    sweep, tune, rows = _plan()
    assert [r.base.method for r in rows] == ["mae", "qbheat", "random-init"]
    mae, qbheat, reference = rows
    assert reference.trials == [] and not reference.tuned  # reference rows are not tuned
    assert len(mae.trials) == len(qbheat.trials) == 4  # 2 x 2 points x trial seed 0
    for t in mae.trials:
        assert t.val_fraction == 0.2 and t.seed == 0 and t.epochs == 1 and t.method == "mae"
    assert {(t.base_lr, t.warmup) for t in mae.trials} == {
        (lr, w) for lr in (1.5e-4, 1.5e-3) for w in (0.05, 0.2)}
    assert len({t.run_id for r in rows for t in r.trials}) == 8


def _summaries(rows, scores):
    """Finished trials: val_linear_top1 by (method, base_lr, warmup)."""
    return {t.run_id: {"metrics": {"val_linear_top1": scores[(t.method, t.base_lr, t.warmup)]}}
            for r in rows for t in r.trials}


def test_the_best_mean_validation_score_is_chosen_ties_first_then_the_comparison():
    sweep, tune, rows = _plan()
    scores = {(m, lr, w): 0.5 for m in ("mae", "qbheat") for lr in (1.5e-4, 1.5e-3)
              for w in (0.05, 0.2)}
    scores[("mae", 1.5e-3, 0.2)] = 0.9  # mae's best; qbheat: all equal -> the first point
    choices = choose(rows, tune, _summaries(rows, scores))
    assert [c.chosen for c in choices] == [{"base_lr": 1.5e-3, "warmup": 0.2},
                                           {"base_lr": 1.5e-4, "warmup": 0.05}]
    finals = final_runs(rows, choices, sweep)
    assert [(r.method, r.seed) for r in finals] == [
        (m, s) for m in ("mae", "qbheat", "random-init") for s in (0, 1, 2)]
    mae = [r for r in finals if r.method == "mae"]
    assert all(r.base_lr == 1.5e-3 and r.warmup == 0.2 and r.val_fraction is None for r in mae)
    assert all(r.base_lr == 1.5e-4 for r in finals if r.method == "qbheat")
    assert all(r.base_lr == RunConfig().base_lr for r in finals if r.method == "random-init")


def test_no_choice_while_a_trial_is_unfinished_or_failed():
    sweep, tune, rows = _plan()
    scores = {(m, lr, w): 0.5 for m in ("mae", "qbheat") for lr in (1.5e-4, 1.5e-3)
              for w in (0.05, 0.2)}
    summaries = _summaries(rows, scores)
    del summaries[rows[0].trials[0].run_id]  # still running
    summaries[rows[1].trials[1].run_id] = {"status": "failed", "metrics": {}}
    choices = choose(rows, tune, summaries)
    assert [c.chosen for c in choices] == [None, None]
    with pytest.raises(ConfigError, match="not every row"):
        final_runs(rows, choices, sweep)


@pytest.mark.parametrize("tune, message", [
    ({"lr": [1e-3]}, "unknown key tune.lr; tune grids: base_lr, weight_decay, decoder_depth, "
                     "warmup, warmup_epochs; settings: metric, val_fraction, seeds"),
    ({"base_lr": []}, "tune.base_lr must be a non-empty list"),
    ({"base_lr": [-1.0]}, "base_lr must be > 0"),
    ({"base_lr": [1e-3], "metric": "recon_loss"}, "tune metric 'recon_loss': must be one of"),
    ({"base_lr": [1e-3], "val_fraction": 1.5}, "tune.val_fraction must be in (0, 1)"),
    ({"metric": "knn_top1"}, "[tune] has no grid"),
    ({}, "no [tune] table"),
])
def test_bad_tune_tables_are_refused(tune, message):
    with pytest.raises(ConfigError) as err:
        tune_spec(tune)
    assert message in str(err.value)


def test_a_grid_point_a_row_cannot_run_is_refused():
    raw = {**SWEEP, "decoder": "conv", "tune": {"decoder_depth": [1, 2]}}
    with pytest.raises(ConfigError, match="decoder=conv is FINOLA's"):
        _plan(raw)


def test_an_empty_validation_split_is_refused_when_planning():
    """The validation split is a share of the whole training split (digits: 1,437 images),
    whatever eval_train_limit: only a share too small for one image leaves none."""
    assert split_sizes(100, 0.1) == (90, 10)
    _plan({**SWEEP, "eval_train_limit": 4})  # fitting on 4 images, validating on 287
    raw = {**SWEEP, "tune": {**SWEEP["tune"], "val_fraction": 0.0005}}
    with pytest.raises(ConfigError, match="val_fraction=0.0005 of 1437 training samples leaves "
                                          "no validation sample"):
        _plan(raw)


def test_warmup_as_a_share_keeps_the_schedules_shape_at_any_length():
    """warmup=0.05: 5 % of the steps whatever the epochs (MAE: 40 of 800 epochs); given in
    epochs it is a fixed count. Both at once are refused; the default keeps run ids."""
    for epochs in (10, 800):
        cfg = RunConfig(epochs=epochs, warmup=0.05)
        assert cfg.warmup_steps(100) == round(0.05 * epochs * 100)
        assert RunConfig(epochs=epochs).warmup_steps(100) == 100
    assert RunConfig(warmup=None).run_id == RunConfig().run_id
    with pytest.raises(ConfigError, match="give the warm-up once"):
        RunConfig(warmup=0.05, warmup_epochs=2)
    with pytest.raises(ConfigError, match=r"warmup must be a share of the schedule in \[0, 1\)"):
        RunConfig(warmup=1.0)


def test_cli_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys):
    out = tmp_path / "out"
    for body, message in (
        ('dataset = "digits"\n[tune]\nlr = [1e-3]\n', "unknown key tune.lr"),
        ('dataset = "digits"\n', "no [tune] table"),
        ('dataset = "digits"\n[tune]\nbase_lr = [1e-3]\nval_fraction = 0.0001\n',
         "leaves no validation sample"),
    ):
        path = tmp_path / "s.toml"
        path.write_text(body)
        assert main(["tune", str(path), "--out", str(out), "--dry-run"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and not out.exists()


@pytest.mark.slow
def test_tune_end_to_end_then_resume_skips_everything(tmp_path, capsys):
    """Two trials (ordinary runs in OUT/tune, val_* scores, no test metric), the comparison at
    the chosen recipe, tuning.json, a report saying so; rerun: nothing to run."""
    spec = tmp_path / "t.toml"
    spec.write_text(
        'dataset = "digits"\nmethod = "mae"\nepochs = 1\nbatch_size = 32\ntrain_limit = 64\n'
        'eval_train_limit = 100\neval_test_limit = 40\nprobe_steps = 5\ndecoder_dim = 32\n'
        'decoder_depth = 1\ndecoder_heads = 2\ndevice = "cpu"\nseeds = [0]\n'
        '[tune]\nbase_lr = [1e-4, 1e-3]\nval_fraction = 0.2\n')
    out = tmp_path / "out"
    assert main(["tune", str(spec), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    tuning = json.loads((out / "tuning.json").read_text())
    (row,) = tuning["rows"]
    trials = [json.loads((out / "tune" / t["run_ids"][0] / "summary.json").read_text())
              for t in row["trials"]]
    for t in trials:  # every protocol on the validation split, nothing else
        assert {m for m in t["metrics"] if not m.startswith("val_linpred_")} == {
            "val_linear_top1", "val_linear_l2", "val_knn_top1", "pretrain_loss"}
    best = max(row["trials"], key=lambda t: t["score"])
    assert row["chosen"] == best["recipe"] and f"mae: base_lr={best['recipe']['base_lr']}" in printed
    (final,) = row["runs"]
    summary = json.loads((out / final / "summary.json").read_text())
    assert "linear_top1" in summary["metrics"] and "recon_loss_fill_const" in summary["metrics"]
    report = (out / "report" / "report.md").read_text()
    assert "each at its tuned recipe" in report and "## Tuning" in report
    assert main(["tune", str(spec), "--out", str(out), "--no-progress"]) == 0
    again = capsys.readouterr().out
    assert "2 runs (2 already done, 0 to run)" in again
    assert "1 runs (1 already done, 0 to run)" in again
