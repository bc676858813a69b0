"""Experiment trackers (bench/trackers) with the real libraries, offline: what a run logs is
read back with each library's own reader and equals the run folder, a resumed run is one
tracker run with every step once, and a tracker that cannot work fails before training."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.core import files, store
from bench.core.config import RunConfig
from bench.core.errors import TrackerError
from bench.plan.sweep import load_spec, resolve_run
from bench.report.figures import reconstruction_grid
from bench.run import trackers
from bench.run.hooks import StopAfterEpoch
from bench.run.loop import RunInterrupted
from bench.run.train import train_run
from bench.runtime.distributed import Dist
from tests.helpers import kill_at_step, require_module, tiny_config

TINY = dict(epochs=2, batch_size=32, train_limit=128, log_every=2, eval_every=1,
            eval_train_limit=128, eval_test_limit=64, probe_steps=10)
STEPS_PER_EPOCH = 4  # 128 samples / 32


@pytest.fixture(autouse=True)
def offline_defaults(monkeypatch):
    """The trackers' own defaults (offline W&B, MLflow file store under OUT), whatever the
    environment of the machine running the tests says."""
    for var in ("WANDB_MODE", "WANDB_PROJECT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)


def same_points(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> bool:
    """The same steps, in order, and the same values (TensorBoard keeps float32)."""
    return ([s for s, _ in got] == [s for s, _ in want]
            and [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6))


def wandb_records(folder: Path) -> list[dict]:
    """An offline W&B run folder's records, read by wandb's own reader (`wandb leet inspect`)."""
    proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(folder)],
                          capture_output=True, text=True, timeout=120, check=True)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_a_resumed_run_is_one_tracker_run_with_each_value_once(tmp_path, digits):
    """Interrupted after epoch 1, then killed inside epoch 2 after it logged step 6, then run to
    the end: TensorBoard, MLflow and W&B each hold one run whose values equal the run folder's
    steps.jsonl, metrics.jsonl and summary.json, each step exactly once."""
    event_accumulator = require_module("tensorboard.backend.event_processing.event_accumulator")
    mlflow_tracking = require_module("mlflow.tracking")
    require_module("wandb")
    cfg = resolve_run(tiny_config(**TINY, log_to="tensorboard,wandb,mlflow"))
    out = tmp_path / "sweep-a"
    run_dir = out / cfg.run_id
    with pytest.raises(RunInterrupted):
        train_run(cfg, run_dir, progress=False, data=digits, hooks=[StopAfterEpoch(1)])
    kill_at_step(3, lambda: train_run(cfg, run_dir, progress=False, data=digits))  # at step 8
    summary = train_run(cfg, run_dir, progress=False, data=digits)
    steps = {r["step"]: r["loss"] for r in store.read_jsonl(run_dir / files.STEPS)}
    epochs = store.read_jsonl(run_dir / files.METRICS)
    assert list(steps) == [2, 4, 6, 8] and [e["epoch"] for e in epochs] == [1, 2]
    assert "knn_top1" in epochs[0]  # --eval-every 1: kNN after epoch 1 (the last is final)
    last = 2 * STEPS_PER_EPOCH
    final = summary["metrics"]
    grid = reconstruction_grid(store.load_torch(run_dir / files.RECONSTRUCTIONS))

    # TensorBoard: event files in the run folder; the killed attempt's step 6 is purged.
    acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    scalars = lambda tag: [(e.step, e.value) for e in acc.Scalars(tag)]  # noqa: E731
    per_epoch = [(STEPS_PER_EPOCH * e["epoch"], e["loss"]) for e in epochs]
    assert same_points(scalars("steps/loss"), list(steps.items()))
    assert same_points(scalars("epoch/loss"), per_epoch)
    assert same_points(scalars("epoch/knn_top1"), [(4, epochs[0]["knn_top1"])])
    for name in ("linear_top1", "knn_top1", "recon_loss"):
        assert same_points(scalars(f"final/{name}"), [(last, final[name])])
    assert same_points(scalars("compute/wall_s"), [(last, summary["compute"]["wall_s"])])
    (image,) = acc.Images("reconstructions")
    assert (image.step, image.height, image.width) == (last, *grid.shape[:2])
    assert "config/text_summary" in acc.Tags()["tensors"]

    # MLflow: the file store under OUT, one run (found again on resume), each step once.
    client = mlflow_tracking.MlflowClient((out / "mlruns").as_uri())
    experiment = client.get_experiment_by_name(out.name)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["maskbench.run_id"] == cfg.run_id and run.info.status == "FINISHED"
    history = lambda key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]  # noqa: E731
    assert same_points(sorted(history("steps/loss")), list(steps.items()))
    assert same_points(sorted(history("epoch/loss")), per_epoch)
    assert same_points(history("final/linear_top1"), [(last, final["linear_top1"])])
    assert run.data.params["method"] == "mae" and run.data.params["options.mask_ratio"] == "0.75"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"maskbench-config.json", "reconstructions.png"}

    # W&B: one offline folder per attempt, all of the same run; each (step, key) once.
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 3
    site = trackers.TrackerSite.of(cfg.run_id, run_dir)
    logged: dict[tuple[int, str], object] = {}
    config_keys: set[str] = set()
    for folder in folders:
        records = wandb_records(folder)
        (info,) = [r["run"] for r in records if r["type"] == "run"]
        assert (info["run_id"], info["display_name"], info["run_group"], info["project"]) == (
            site.unique_id, cfg.run_id, out.name, "maskbench")
        for r in records:
            if r["type"] == "config":
                config_keys |= set(r["config"].get("update", {}))
            if r["type"] == "history":
                item, step = r["history"]["item"], r["history"]["step"]["num"]
                for key, value in item.items():
                    if not key.startswith("_"):
                        assert (step, key) not in logged, f"{key} logged twice at step {step}"
                        logged[step, key] = value
    assert same_points(sorted((s, v) for (s, k), v in logged.items() if k == "steps/loss"),
                       list(steps.items()))
    assert logged[last, "final/linear_top1"] == pytest.approx(final["linear_top1"])
    assert logged[4, "epoch/knn_top1"] == pytest.approx(epochs[0]["knn_top1"])
    assert logged[last, "reconstructions._type"] == "image-file"
    assert {"method", "options", "data_fingerprint"} <= config_keys


def test_tracker_problems_are_one_line_errors_before_anything_trains(tmp_path, capsys,
                                                                     monkeypatch):
    """A missing package, a bad MLflow URI and an unknown tracker: exit 2, one line, no run."""
    require_module("mlflow")
    args = ["run", "--methods", "mae", "--dataset", "digits", "--epochs", "1", "--no-progress"]

    def fails(out: Path, *extra: str) -> str:
        assert main([*args, "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert not list(out.glob("*/config.json")) and not list(out.glob("*/job.json"))
        return err

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "bench.run.trackers.wandb_tracker", raising=False)
    assert "needs the wandb package" in fails(tmp_path / "a", "--log-to", "wandb")
    assert "maskbench[trackers]" in fails(tmp_path / "a", "--log-to", "tensorboard,wandb")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://nowhere")
    assert "MLflow tracking URI 'bogus://nowhere' cannot be used" in fails(
        tmp_path / "b", "--log-to", "mlflow")
    assert "unknown tracker 'tensorbored'" in fails(tmp_path / "c", "log_to=tensorbored")
    # train_run itself (a SLURM job, a worker) checks first too: nothing is written.
    cfg = resolve_run(tiny_config(log_to="mlflow"))
    with pytest.raises(TrackerError):
        train_run(cfg, tmp_path / "d" / cfg.run_id, progress=False)
    assert not (tmp_path / "d" / cfg.run_id / files.CONFIG).exists()


def test_a_tracker_failing_mid_run_is_dropped_and_the_run_goes_on(tmp_path, digits, caplog,
                                                                  monkeypatch):
    require_module("tensorboard")
    from bench.run.trackers import tensorboard_tracker

    def disk_full(self, values, step):
        raise OSError("No space left on device")

    monkeypatch.setattr(tensorboard_tracker.TensorBoardTracker, "log_metrics", disk_full)
    cfg = resolve_run(tiny_config(method="random-init", log_to="tensorboard",
                                  eval_train_limit=128, eval_test_limit=64, probe_steps=10))
    with caplog.at_level(logging.WARNING, logger="bench.run.trackers"):
        summary = train_run(cfg, tmp_path / cfg.run_id, progress=False, data=digits)
    assert summary["status"] == "ok" and "linear_top1" in summary["metrics"]
    assert "log_to=tensorboard failed (OSError: No space left on device)" in caplog.text


def test_only_rank_zero_logs(tmp_path, monkeypatch):
    monkeypatch.setattr(trackers.distributed, "current", lambda: Dist(1, 2))
    cfg = tiny_config(log_to="tensorboard,wandb,mlflow")
    with trackers.open_run(cfg, tmp_path / "run") as tracker:
        tracker.start(0)
        tracker.log_metrics({"loss": 1.0}, 1, "steps")
    assert tracker.names == () and not (tmp_path / "run").exists()


def test_log_to_is_a_location_setting(tmp_path, capsys):
    """log_to (sweep file or --log-to) never changes a run id: a resumed run stays itself."""
    spec = tmp_path / "s.toml"
    spec.write_text('dataset = "digits"\nlog_to = "tensorboard"\n[grid]\nmethod = ["mae", "interp"]\n')
    runs = load_spec(spec).runs()
    assert [r.log_to for r in runs] == ["tensorboard", "tensorboard"]
    plain = [resolve_run(RunConfig(method=m, dataset="digits")) for m in ("mae", "interp")]
    assert [r.run_id for r in runs] == [r.run_id for r in plain]
    assert main(["sweep", str(spec), "--dry-run", "--log-to", "mlflow,wandb",
                 "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert all(r.run_id in printed for r in plain)


def test_mlflow_metric_names_are_ones_mlflow_takes():
    """A method's metric named with a character MLflow refuses (it failed the whole tracker
    on `recon_loss_d3+`) is logged under a name it takes."""
    require_module("mlflow")
    from bench.run.trackers.mlflow_tracker import metric_name

    assert metric_name("final/recon_loss_d3+") == "final/recon_loss_d3_"
    assert metric_name("epoch/knn_top1 a:b-c.d") == "epoch/knn_top1 a:b-c.d"
    from mlflow.utils.validation import validate_param_and_metric_name

    for name in ("final/recon_loss_d3+", "heat ‖A‖(I+A)", "x=y,z;%"):
        assert not validate_param_and_metric_name(name)
        assert validate_param_and_metric_name(metric_name(name))
