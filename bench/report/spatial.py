"""The report's views of the spatial and label-efficiency protocols, per section: the dense
probe, the few-shot probes, the per-layer probe, linear predictability by distance, each
with its ranking of the strategies set against the linear probe's, and whether all the
protocols rank the strategies alike (bench.report.agreement); and their two figures."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from bench.report import figures
from bench.report.agreement import against_base, agreement_table
from bench.report.metrics import LINPRED_KINDS, metric_order
from bench.report.tables import CI_NOTE, Table, series_table, stat_table

DENSE_NOTE = ("Per-token linear probe on the frozen tokens (labels: each patch's most frequent "
              "pixel label), scored per pixel after bilinear upsampling of the logits; mIoU "
              "over the garment classes and background present (bench/eval/dense.py).")
FEWSHOT_NOTE = ("The linear and kNN probes on the same frozen features, trained on a "
                "stratified labelled subset of the probe's training split (1 % or 10 % of "
                "each class, or k per class) and scored on the whole test split; each value "
                "is the mean over the run's seeded draws of the subset (fewshot_draws, "
                "recorded in config.json), the CI is over seeds.")
LAYERS_NOTE = ("probe_layers=all: the linear probe on each layer's mean-pooled tokens (layer "
               "0: the embedding; layer i: block i's output, before the final norm). The best "
               "layer is chosen on a validation split carved from the probe's training split "
               "(never on test data); its test top-1 is reported beside it.")
LINPRED_NOTE = (
    "Held-out R² of ridge maps z(x, y) -> z(x + d, y) and z(x, y + d) fitted on training "
    "inputs (penalty chosen on a split of them), mean over the axes (text: one); beside two "
    "baselines on the same pairs: the position mean (what position alone predicts) and "
    "identity (z(x + d) = z(x)). For a fill that is a linear step map (QB-Heat at the "
    "encoder): the R² of its own (I+A)^d as the predictor and its relative distance to the "
    "fitted map. Raw-input: patch pixels (text: token one-hots over the frequent ids). "
    "Higher R² is not better in itself: it is the seed's hypothesis, measured "
    "(bench/eval/linpred.py).")


def _distances(metrics: list[str]) -> list[int]:
    found = {int(m.rsplit("_d", 1)[1]) for m in metrics}
    return sorted(found)


def linpred_measures(metrics: list[str]) -> dict[str, dict[str, str]]:
    """Measure title -> {'d=1': metric, ...} for the linpred metrics present."""
    out: dict[str, dict[str, str]] = {}
    for kind, title in LINPRED_KINDS.items():
        cols = {f"d={d}": f"linpred_{kind}_d{d}" for d in _distances(metrics)
                if f"linpred_{kind}_d{d}" in metrics}
        if cols:
            out[title] = cols
    return out


def probe_views(stats: pd.DataFrame, cells: pd.DataFrame, metrics: list[str], name: str
                ) -> list[Table | str]:
    """The section's dense, few-shot, per-layer and linear-predictability tables (those with
    values), then the protocols' agreement: a statement and the table of pairs."""
    out: list[Table | str] = []
    for group, what, note in (("dense", "dense probe", DENSE_NOTE),
                              ("fewshot", "few-shot probes", FEWSHOT_NOTE),
                              ("layers", "linear probe by layer", LAYERS_NOTE)):
        present = metric_order(metrics, group)
        if present:
            ranked = next((m for m in present if m in ("dense_miou", "linear_1pct_top1",
                                                       "linear_layer_best_top1")), None)
            versus = against_base(stats, ranked) if ranked else ""
            out.append(stat_table(stats, cells, present, f"{name}: {what}",
                                  f"{note} {CI_NOTE}. {versus}".strip()))
    linpred = metric_order(metrics, "linpred")
    if linpred:
        measures = linpred_measures(linpred)
        columns = list(dict.fromkeys(c for m in measures.values() for c in m))
        versus = against_base(stats, "linpred_r2_d1") if "linpred_r2_d1" in linpred else ""
        out.append(series_table(stats, cells, measures, columns,
                                f"{name}: linear predictability of neighbouring features",
                                f"{LINPRED_NOTE} {CI_NOTE}. {versus}".strip()))
    table, statement = agreement_table(stats, metrics, f"{name}: agreement between protocols")
    out.append(statement)
    if table is not None:
        out.append(table)
    return out


def probe_figures(ok: pd.DataFrame, cells: pd.DataFrame, out: Path) -> list[figures.Figure]:
    """R² versus distance per row, and linear-probe accuracy versus depth per row."""
    metrics = list(ok.metric.unique())
    made = []
    linpred = metric_order(metrics, "linpred")
    if linpred:
        panels = {title: {m: float(c.removeprefix("d=")) for c, m in cols.items()}
                  for title, cols in linpred_measures(linpred).items()}
        made.append(figures.series_figure(
            ok, cells, panels, "distance d (tokens)", out, "linpred",
            "Linear predictability of neighbouring features versus distance",
            f"{LINPRED_NOTE} Mean and 95 % t CI band over seeds; dashed: reference rows."))
    layers = {m: float(match[1]) for m in metric_order(metrics, "layers")
              if (match := re.fullmatch(r"linear_layer(\d+)_top1", m))}
    if layers:
        made.append(figures.series_figure(
            ok, cells, {"linear top-1 % by layer": layers}, "layer (0: embedding)", out,
            "layers", "Linear probe accuracy versus depth",
            f"{LAYERS_NOTE} Mean and 95 % t CI band over seeds; dashed: reference rows."))
    return [f for f in made if f is not None]
