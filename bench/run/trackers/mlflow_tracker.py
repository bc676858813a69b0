"""MLflow: `$MLFLOW_TRACKING_URI`, else a local file store in the results folder
(`file:OUT/mlruns`; MLflow keeps that backend in maintenance mode, so
`MLFLOW_ALLOW_FILE_STORE=true` is set for it). Experiment = the results folder's name (the
sweep); a run is found again by its tags `maskbench.run_id` and `maskbench.run_dir`, so a
resumed run continues it. A resumed run skips the steps the run's metric history already has,
so no step is logged twice."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bench.core.errors import TrackerError
from bench.run.trackers import TrackerSite

STATUS = {"ok": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
BATCH = 100  # params per log_batch call (MLflow's limit)
_REFUSED = re.compile(r"[^\w\-. :/]")  # what MLflow refuses in a metric name


def metric_name(name: str) -> str:
    """`name` as MLflow takes it: each character it refuses (e.g. a method's `d3+`) becomes
    `_`, so a plugin's metric never stops the tracker."""
    return _REFUSED.sub("_", name)


def tracking_uri(site: TrackerSite) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or (site.out / "mlruns").as_uri()


def client(uri: str) -> MlflowClient:
    """A client of `uri` that has answered one query, else TrackerError."""
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        c = MlflowClient(uri)
        c.search_experiments(max_results=1)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise TrackerError(f"MLflow tracking URI {uri!r} cannot be used: {first}") from None
    return c


def check(site: TrackerSite) -> None:
    client(tracking_uri(site))


def _experiment(c: MlflowClient, name: str) -> str:
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return c.create_experiment(name)
    except MlflowException:  # another process created it just now
        return c.get_experiment_by_name(name).experiment_id


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = str(value)
    return out


class MlflowTracker:
    def __init__(self, site: TrackerSite, resume_step: int):
        self.client = client(tracking_uri(site))
        experiment = _experiment(self.client, site.group)
        tags = {"maskbench.run_id": site.run_id, "maskbench.run_dir": str(site.run_dir)}
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        found = self.client.search_runs([experiment], query, max_results=1)
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            self.logged = {key: max(m.step for m in self.client.get_metric_history(self.run_id, key))
                           for key in found[0].data.metrics}
        else:
            self.run_id = self.client.create_run(experiment, run_name=site.run_id,
                                                 tags=tags).info.run_id
            self.logged = {}

    def log_config(self, config: Mapping[str, Any]) -> None:
        params = [Param(k, v) for k, v in _flat(config).items()]
        for i in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + BATCH])
        # not config.json: the report takes any folder holding one for a run folder
        self.client.log_dict(self.run_id, dict(config), "maskbench-config.json")

    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        named = ((metric_name(k), v) for k, v in values.items())
        fresh = [Metric(k, v, now, step) for k, v in named if step > self.logged.get(k, -1)]
        if fresh:
            self.client.log_batch(self.run_id, metrics=fresh)
            self.logged.update({m.key: step for m in fresh})

    def log_image(self, name: str, image: Any, step: int) -> None:
        self.client.log_image(self.run_id, image, f"{name}.png")

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, STATUS[status])


start = MlflowTracker
