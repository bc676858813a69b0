"""The Python API (`from bench import api`): a tiny comparison end to end, a sweep given as a
dict, the long table, the report, and the same validation and errors as the CLI (exceptions)."""

from __future__ import annotations

import warnings

import pytest

from bench import api
from bench.core.errors import ConfigError, UnknownMethodError

TINY = dict(dataset="digits", epochs=1, batch_size=64, train_limit=128, eval_train_limit=128,
            eval_test_limit=64, probe_steps=10, decoder_dim=64, decoder_depth=1,
            decoder_heads=2, device="cpu", protocols="knn")


def test_run_collect_report_end_to_end(tmp_path):
    out = tmp_path / "nb"
    results = api.run(["mae", "raw-input"], seeds=[0], out=out, progress=False,
                      options={"mae": {"mask_ratio": 0.6}}, **TINY)
    assert [(r.method, r.state) for r in results] == [("mae", "done"), ("raw-input", "done")]
    mae = results[0]
    assert mae.config.options["mask_ratio"] == 0.6 and 0 <= mae.metrics["knn_top1"] <= 1
    assert mae.run_dir == out / mae.run_id and (mae.run_dir / "summary.json").is_file()
    assert (out / "report" / "report.html").is_file()  # as `bench run` writes it
    table = api.collect([out])
    assert set(table.method) == {"mae", "raw-input"} and "knn_top1" in set(table.metric)
    paths = api.report([out], out=tmp_path / "rep")
    assert paths["html"].is_file() and paths["markdown"].read_text().startswith("# Maskbench")
    again = api.run(["mae", "raw-input"], seeds=[0], out=out, progress=False,
                    options={"mae": {"mask_ratio": 0.6}}, **TINY)  # done: nothing retrained
    assert [r.metrics for r in again] == [r.metrics for r in results]


def test_sweep_from_a_dict_plans_what_the_file_would(tmp_path):
    spec = {**TINY, "seeds": [0, 1], "grid": {"method": ["mae", "interp"]}}
    plan = api.load_sweep(spec, settings={"epochs": 2}).runs()
    assert [(r.method, r.seed, r.epochs) for r in plan] == [
        ("mae", 0, 2), ("mae", 1, 2), ("interp", 0, 2), ("interp", 1, 2)]
    launched = api.launch(plan, tmp_path / "s", dry_run=True)
    assert [r.run_id for r in launched.todo] == [r.run_id for r in plan]
    assert not (tmp_path / "s").exists()  # a dry run writes nothing


def test_same_validation_and_errors_as_the_cli(tmp_path):
    with pytest.raises(UnknownMethodError, match="'qbheta'; known: interp, mae, qbheat"):
        api.plan(["qbheta"], **TINY)
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        api.plan(["mae"], **{**TINY, "epochs": -1})
    with pytest.raises(ConfigError, match="no seed given"):
        api.plan(["mae"], seeds=[], **TINY)
    with pytest.raises(ConfigError, match="exceeds the 128 pretraining samples"):
        api.run(["mae"], out=tmp_path / "x", progress=False, **{**TINY, "batch_size": 512})
    assert not (tmp_path / "x").exists()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = api.plan(["mae"], seeds=[0, 0], **TINY)
    assert len(runs) == 1 and "duplicate seed 0 dropped" in str(caught[0].message)
