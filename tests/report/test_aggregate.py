"""Aggregation of run folders: ok and failed runs, broken folders reported, curves."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

from bench.core.errors import DataNotFoundError
from bench.report.aggregate import (
    CURVE_COLUMNS,
    FAILED_COLUMNS,
    TABLE_COLUMNS,
    collect,
    curves,
    options_key,
)

COMPUTE = {
    "pretrain_flops_per_sample": 1.5e9,
    "train_samples_per_s": 4000.0,
    "peak_mem_bytes": 2048,
    "wall_s": 60.5,
    "device": "cpu",
}


def write_run(
    root: Path,
    name: str,
    *,
    seed: int = 0,
    options: dict | None = None,
    summary: dict | str | None = None,
    metrics_lines: list[str] | None = None,
) -> Path:
    """A run folder; `summary` None leaves it out, a str is written verbatim."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {
        "method": "mae",
        "options": options if options is not None else {"mask_ratio": 0.6},
        "dataset": "fashion-mnist",
        "encoder": "vit-micro",
        "seed": seed,
        "epochs": 3,
        "git_sha": "abc",
        "versions": {"torch": "2.4"},
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    if summary is not None:
        text = summary if isinstance(summary, str) else json.dumps(summary)
        (run_dir / "summary.json").write_text(text)
    if metrics_lines is not None:
        (run_dir / "metrics.jsonl").write_text("".join(metrics_lines))
    return run_dir


def summary(run_id: str, seed: int = 0, status: str = "ok", **extra) -> dict:
    metrics = {"linear_top1": 0.81, "knn_top1": 0.78, "recon_loss": 0.12} if status == "ok" else {}
    return {
        "run_id": run_id,
        "method": "mae",
        "dataset": "fashion-mnist",
        "encoder": "vit-micro",
        "seed": seed,
        "status": status,
        "metrics": metrics,
        "compute": COMPUTE,
        **extra,
    }


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    sweep = root / "sweep-a"
    write_run(sweep, "okrun", summary=summary("okrun"))
    write_run(
        sweep,
        "failrun",
        seed=1,
        summary=summary("failrun", seed=1, status="failed", error="RuntimeError: CUDA OOM"),
    )
    write_run(sweep, "truncated", summary=json.dumps(summary("truncated"))[:40])
    write_run(sweep, "running", metrics_lines=['{"epoch": 0, "loss": 1.0}\n', '{"epoch": 1, "lo'])
    return root


def test_collect_aggregates_ok_and_failed_runs_and_reports_problems(results: Path):
    agg = collect([results])
    t = agg.table
    assert list(t.columns) == list(TABLE_COLUMNS)
    ok = t[t.run_id == "okrun"].set_index("metric")
    assert ok.loc["linear_top1", "value"] == 0.81
    assert ok.loc["compute.wall_s", "value"] == 60.5
    assert ok.loc["compute.peak_mem_bytes", "value"] == 2048
    assert "compute.device" not in ok.index  # not a number
    row = ok.loc["knn_top1"]
    assert (row.sweep, row.method, row.dataset, row.encoder, row.seed, row.epochs, row.status) == (
        "sweep-a",
        "mae",
        "fashion-mnist",
        "vit-micro",
        0,
        3,
        "ok",
    )
    assert row.options == options_key({"mask_ratio": 0.6}) == '{"mask_ratio":0.6}'
    assert row.run_dir == str(results / "sweep-a" / "okrun")
    assert set(t.run_id) == {"okrun", "failrun"}  # failed run keeps its compute rows
    assert set(t[t.run_id == "failrun"].status) == {"failed"}

    assert list(agg.failed.columns) == list(FAILED_COLUMNS)
    assert len(agg.failed) == 1
    f = agg.failed.iloc[0]
    assert (f.run_id, f.method, f.seed, f.error, f.run_dir) == (
        "failrun",
        "mae",
        1,
        "RuntimeError: CUDA OOM",
        str(results / "sweep-a" / "failrun"),
    )

    problems = {p.path: p.reason for p in agg.problems}
    assert set(problems) == {results / "sweep-a" / "truncated", results / "sweep-a" / "running"}
    assert problems[results / "sweep-a" / "running"] == "no summary.json (unfinished?)"
    assert problems[results / "sweep-a" / "truncated"].startswith("summary.json: truncated")


def test_collect_other_broken_folders(tmp_path: Path):
    write_run(tmp_path / "s", "good", summary=summary("good"))
    bad_config = write_run(tmp_path / "s", "badconfig", summary=summary("badconfig"))
    (bad_config / "config.json").write_text('{"method": "ma')
    no_status = write_run(tmp_path / "s", "nostatus", summary={"metrics": {}})
    failed_no_error = write_run(tmp_path / "s", "quiet", summary=summary("quiet", status="failed"))
    agg = collect([tmp_path])
    reasons = {p.path: p.reason for p in agg.problems}
    assert reasons[bad_config].startswith("config.json: truncated")
    assert reasons[no_status] == "summary.json: no 'status'"
    assert agg.failed.set_index("run_dir").loc[str(failed_no_error), "error"] == (
        "(no error recorded)"
    )
    assert set(agg.table.run_id) == {"good", "quiet"}


def test_collect_finds_nested_runs_once(tmp_path: Path):
    write_run(tmp_path / "a" / "deeper" / "sweep", "r1", summary=summary("r1"))
    write_run(tmp_path / "b", "r2", seed=2, options={}, summary=summary("r2", seed=2))
    agg = collect([tmp_path, tmp_path / "a", tmp_path / "b" / "r2"])  # overlapping roots
    assert sorted(agg.table.drop_duplicates("run_dir").run_id) == ["r1", "r2"]
    assert set(agg.table[agg.table.run_id == "r2"].options) == {"{}"}


def test_collect_empty_and_missing(tmp_path: Path):
    agg = collect([tmp_path])
    assert agg.table.empty and agg.failed.empty and agg.problems == []
    assert list(agg.table.columns) == list(TABLE_COLUMNS)
    with pytest.raises(DataNotFoundError):
        collect([tmp_path / "nope"])


def test_to_csv_writes_table_failed_and_problems(results: Path, tmp_path: Path):
    paths = collect([results]).to_csv(tmp_path / "agg.csv")
    assert [p.name for p in paths] == ["agg.csv", "agg.failed.csv", "agg.problems.csv"]
    table = pd.read_csv(paths[0])
    assert list(table.columns) == list(TABLE_COLUMNS) and len(table) > 0
    assert pd.read_csv(paths[1]).error.tolist() == ["RuntimeError: CUDA OOM"]
    assert len(pd.read_csv(paths[2])) == 2


def test_curves_tolerate_truncated_last_line(results: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a truncated last line is normal: no warning
        c = curves([results])
    assert list(c.columns) == list(CURVE_COLUMNS)
    assert c[["run_id", "epoch", "metric", "value"]].values.tolist() == [
        ["running", 0, "loss", 1.0]
    ]
    assert c.seed.tolist() == [0] and c.options.tolist() == ['{"mask_ratio":0.6}']


def test_curves_long_format_and_bad_middle_line(tmp_path: Path):
    lines = [
        '{"epoch": 0, "loss": 2.0, "knn_top1": 0.5, "note": "warmup"}\n',
        "{garbage\n",
        '{"epoch": 1, "loss": 1.5, "knn_top1": 0.6}\n',
    ]
    run_dir = write_run(tmp_path, "r", metrics_lines=lines, summary=summary("r"))
    with pytest.warns(UserWarning, match=r"metrics.jsonl:2: invalid JSON line"):
        c = curves([tmp_path])
    assert c[["epoch", "metric", "value"]].values.tolist() == [
        [0, "loss", 2.0],
        [0, "knn_top1", 0.5],
        [1, "loss", 1.5],
        [1, "knn_top1", 0.6],
    ]
    assert set(c.run_dir) == {str(run_dir)}


def test_non_finite_values_make_a_finished_run_a_problem(tmp_path: Path):
    """json reads NaN and Infinity as floats: a diverged run is listed, never averaged; a failed
    run stays a failed run whatever it logged."""
    write_run(tmp_path / "s", "good", summary=summary("good"))
    nan = summary("nan", seed=1)
    nan["metrics"]["knn_top1"] = float("nan")
    write_run(tmp_path / "s", "nan", seed=1, summary=nan)
    inf = summary("inf", seed=2, compute={**COMPUTE, "train_samples_per_s": float("inf")})
    write_run(tmp_path / "s", "inf", seed=2, summary=inf)
    failed = summary("failed", seed=3, status="failed", metrics={"recon_loss": float("nan")})
    write_run(tmp_path / "s", "failed", seed=3, summary=failed)
    agg = collect([tmp_path])
    assert {p.path.name: p.reason for p in agg.problems} == {
        "nan": "summary.json: non-finite values (knn_top1=nan); the run is left out of every cell",
        "inf": "summary.json: non-finite values (compute.train_samples_per_s=inf); the run is "
               "left out of every cell",
    }
    assert set(agg.table.run_id) == {"good", "failed"} and list(agg.failed.run_id) == ["failed"]
