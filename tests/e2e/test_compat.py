"""Old import paths keep working after the move to packages: user method files written
against them, and the pickled jobs of SLURM runs in flight across an upgrade."""

from __future__ import annotations

import pickle
import warnings

from tests.helpers import ROOT


def test_old_import_paths_are_the_new_objects():
    import bench.config
    import bench.errors
    import bench.jobs
    import bench.masking
    import bench.options
    import methods.base
    from bench.core import config, errors, options
    from bench.launch import jobs
    from bench.ops import masking

    assert bench.config.RunConfig is config.RunConfig
    assert bench.config.parse_options is config.parse_options
    assert bench.errors.ConfigError is errors.ConfigError
    assert bench.options.MethodOptions is options.MethodOptions
    assert bench.options.LayoutOptions is options.LayoutOptions
    assert bench.masking.Visible is masking.Visible
    assert bench.masking.scatter_tokens is masking.scatter_tokens
    assert bench.jobs.RunJob is jobs.RunJob
    assert methods.base.register_method and methods.base.MaskingMethod


def test_a_job_pickled_by_the_old_layout_still_runs(tmp_path):
    """tests/e2e/golden/runjob-84e94f1.pkl: a submitit DelayedSubmission of a RunJob pickled
    at 84e94f1 (bench.jobs.RunJob, bench.config.RunConfig, an `interrupt` attribute). It
    unpickles into today's classes and trains its run to the end."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job = pickle.loads((ROOT / "tests" / "e2e" / "golden" / "runjob-84e94f1.pkl").read_bytes())
    runjob = job.function
    assert runjob.hooks == () and runjob.cfg.run_id == "3fe49d5c1ee0"
    runjob.run_dir = tmp_path / runjob.cfg.run_id
    summary = job.result()
    assert summary["status"] == "ok" and 0 <= summary["metrics"]["knn_top1"] <= 1
