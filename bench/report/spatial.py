"""The report's views of the spatial and label-efficiency protocols, per section: the dense
probe, the few-shot probes, the per-layer probe, linear predictability by distance, each
with its ranking of the strategies set against the linear probe's, and whether all the
protocols rank the strategies alike (bench.report.agreement); and their two figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from bench.core.files import SUMMARY
from bench.data.cards import load_card
from bench.report import figures
from bench.report.agreement import against_base, agreement_table
from bench.report.hypothesis import hypothesis_views
from bench.report.metrics import LINPRED_KINDS, metric_order
from bench.report.tables import Table, series_table, stat_table

DENSE_NOTE = ("Per-token linear probe on the frozen tokens (labels: each patch's most frequent "
              "pixel label; its L2 chosen on held-out training canvases), scored per pixel "
              "after bilinear upsampling of the logits; mIoU over the garment classes and "
              "background present, foreground mIoU over the garment classes only (background, "
              "most of every canvas, scores high for any encoder) (bench/eval/dense.py).")
DENSE_CLASSES_NOTE = ("The dense probe's IoU of each label on the test canvases (dense_iou_<k>); "
                      "descriptive, not in the verdict's family.")
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
    "(bench/eval/linpred.py). Content baseline: ridge from the position's one-hot and the "
    "input's mean token alone (no neighbour); M₁^d: the fitted d = 1 map applied d times.")
HEAT_NOTE = (
    "The (I+A)^d R² lies far below 0 (here {low:.3g} to {high:.3g}) because training never asks "
    "(I+A)^d to reproduce the encoder's features at x + d: the fill propagates the features of "
    "the visible block alone into the decoder, which learns to read them its own way, so "
    "(I+A)^d is another map than the fitted M (‖M−(I+A)^d‖/‖M‖ ≈ 1) and, with ρ(I+A) > 1, "
    "its error grows with every step to many times the features' variance.")


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


def probe_views(ok: pd.DataFrame, stats: pd.DataFrame, cells: pd.DataFrame, metrics: list[str],
                name: str) -> list[Table | str]:
    """The section's dense (and per-label IoU), few-shot, per-layer and
    linear-predictability tables (those with values; linear predictability with its gain over
    content, its composition test and what they say about the seed's hypothesis), then the
    protocols' agreement: a statement and the table of pairs."""
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
                                  f"{note} {versus}".strip()))
        if group == "dense" and (per_label := metric_order(metrics, "dense_classes")):
            out.append(dense_classes_table(ok, stats, cells, per_label, name))
    linpred = metric_order(metrics, "linpred")
    if linpred:
        measures = linpred_measures(linpred)
        columns = list(dict.fromkeys(c for m in measures.values() for c in m))
        versus = against_base(stats, "linpred_r2_d1") if "linpred_r2_d1" in linpred else ""
        heat = stats[stats.metric.str.startswith("linpred_heat_r2_d")]["mean"]
        heat_note = (HEAT_NOTE.format(low=heat.max(), high=heat.min())
                     if len(heat) and heat.min() < 0 else "")
        out.append(series_table(stats, cells, measures, columns,
                                f"{name}: linear predictability of neighbouring features",
                                " ".join(x for x in (LINPRED_NOTE, heat_note, versus) if x)))
        out += hypothesis_views(ok, cells, linpred, name)
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


def dense_class_names(ok: pd.DataFrame, dataset: str) -> list[str] | None:
    """The dense labels' names in label order: as the runs' data named them (summary.json's
    `data.dense_classes`, bench.run.records), else from the dataset card (a list under
    `dense_class_names` or `dense_classes`; runs from before the record), or None."""
    for run_dir in dict.fromkeys(ok.run_dir):
        try:
            names = json.loads((Path(run_dir) / SUMMARY).read_text())["data"]["dense_classes"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return names
    try:
        card = load_card(dataset)
    except (OSError, ValueError):  # no card (a folder or Hugging Face set), or unreadable
        return None
    for key in ("dense_class_names", "dense_classes"):
        names = card.get(key)
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return names
    return None


def dense_classes_table(ok: pd.DataFrame, stats: pd.DataFrame, cells: pd.DataFrame,
                        metrics: list[str], name: str) -> Table:
    """Per row, the dense probe's IoU of each label (`dense_iou_<k>`), columns named as the
    runs' data named the labels (`dense_class_names`), else 'class k'."""
    dataset = str(cells.dataset.iloc[0])
    names = dense_class_names(ok[ok.dataset == dataset], dataset) or []
    labels = [int(m.rsplit("_", 1)[1]) for m in metrics]
    table = stat_table(stats, cells, metrics, f"{name}: dense probe, IoU % of each label",
                       DENSE_CLASSES_NOTE)
    columns = [names[k] if k < len(names) else f"class {k}" for k in labels]
    return Table(table.title, ["row", *columns], table.rows, table.note)
