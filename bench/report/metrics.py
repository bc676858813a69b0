"""The metric catalogue: each summary.json metric's title, scale, direction and group (which
table shows it), and the names of a report's rows and sections. Plain data, no torch."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from methods import method_cards

SECTION = ("dataset", "encoder")
CELL = (*SECTION, "method", "options", "variant")
NOT_COMPARABLE = "not comparable across methods: each method solves a different task"


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is titled and scaled, whether higher is better (None: no best), and which
    table it belongs to: accuracy (main), compute, or task (the pretext task's own numbers)."""

    title: str
    scale: float = 1.0
    higher_is_better: bool | None = None
    group: str = "task"


METRICS: dict[str, MetricInfo] = {
    "linear_top1": MetricInfo("linear top-1 %", 100.0, True, "accuracy"),
    "knn_top1": MetricInfo("kNN top-1 %", 100.0, True, "accuracy"),
    "tran1_top1": MetricInfo("tran1 top-1 %", 100.0, True, "accuracy"),
    "finetune_top1": MetricInfo("fine-tune top-1 %", 100.0, True, "accuracy"),
    "next_sentence_top1": MetricInfo("next-sentence top-1 %", 100.0, True, "accuracy"),
    "compute.pretrain_flops_per_sample": MetricInfo("GFLOPs/sample", 1e-9, False, "compute"),
    "compute.train_samples_per_s": MetricInfo("samples/s", 1.0, True, "compute"),
    "compute.train_s": MetricInfo("pretrain s", 1.0, False, "compute"),
    "compute.wall_s": MetricInfo("wall s", 1.0, False, "compute"),
    "compute.peak_mem_bytes": MetricInfo("peak mem GiB", 2.0**-30, False, "compute"),
    "compute.processes": MetricInfo("processes", 1.0, None, "compute"),
    "compute.load_avg": MetricInfo("load avg (1 min)", 1.0, None, "compute"),
    "setup.visible_tokens": MetricInfo("visible tokens", 1.0, None, "setup"),
    "setup.scored_positions": MetricInfo("scored positions", 1.0, None, "setup"),
    "setup.encoder_params": MetricInfo("encoder params M", 1e-6, None, "setup"),
    "setup.decoder_params": MetricInfo("decoder params M", 1e-6, None, "setup"),
    "setup.method_params": MetricInfo("method params M", 1e-6, None, "setup"),
    "setup.decoder_flops": MetricInfo("decoder GFLOPs", 1e-9, None, "setup"),
    "setup.epochs": MetricInfo("epochs", 1.0, None, "setup"),
    "setup.batch_size": MetricInfo("batch", 1.0, None, "setup"),
    "recon_loss": MetricInfo("test recon loss"),
    "pretrain_loss": MetricInfo("final pretrain loss"),
    "masked_token_acc": MetricInfo("masked-token acc %", 100.0),
    "perplexity": MetricInfo("perplexity"),
    "masked_bow_recall": MetricInfo("masked-sentence word recall %", 100.0),
    # The fill by distance (bench/eval/diagnostics.py), every method: the report's fill table.
    # Distance d: Chebyshev distance in tokens to the nearest visible position.
    "recon_loss_d1": MetricInfo("recon loss d=1", group="fill"),
    "recon_loss_d2": MetricInfo("recon loss d=2", group="fill"),
    "recon_loss_d3plus": MetricInfo("recon loss d≥3", group="fill"),
    "recon_loss_d5plus": MetricInfo("recon loss d≥5", group="fill"),  # bigger grids only
    # What the learned fill contributes (bench/eval/contribution.py): recon_loss again with the
    # fill replaced; a method's own ablations (recon_loss_fill_<name>) join by prefix.
    "recon_loss_fill_const": MetricInfo("recon loss, constant fill", group="contribution"),
    "recon_loss_fill_copy": MetricInfo("recon loss, copy (A = B = 0)", group="contribution"),
}
# A method's own diagnostics (its card's `diagnostics`) are in the group "method:<name>".
MAIN_COMPUTE = ("compute.pretrain_flops_per_sample", "compute.train_samples_per_s")


# summary.json records by prefix, and the fill ablations of bench/eval/contribution.py.
# Tuning trials' val_* scores (validation split of the training data) are a group of their own.
PREFIX_GROUPS = {"compute.": "compute", "setup.": "setup", "recon_loss_fill_": "contribution",
                 "val_": "validation"}


@functools.cache
def method_metrics() -> dict[str, MetricInfo]:
    """The diagnostics the method cards declare, each in its method's group."""
    return {d.name: MetricInfo(f"{d.title} ({d.unit})" if d.unit else d.title,
                               group=f"method:{card.name}")
            for name in method_cards().names() for card in [method_cards().get(name)]
            for d in card.diagnostics}


def metric_info(metric: str) -> MetricInfo:
    """Catalogue entry (or a method card's diagnostic); a metric neither knows is shown as is,
    never ranked, in the table of its summary.json record (compute., setup.), else with the
    task metrics."""
    if metric in METRICS:
        return METRICS[metric]
    if metric in method_metrics():
        return method_metrics()[metric]
    group = next((g for p, g in PREFIX_GROUPS.items() if metric.startswith(p)), "task")
    return MetricInfo(metric, group=group)


def metric_order(metrics: Sequence[str], group: str) -> list[str]:
    """The metrics of `group` present in `metrics`: catalogue order, then unknown ones sorted."""
    present = set(metrics)
    catalogue = {**METRICS, **method_metrics()}
    known = [m for m, info in catalogue.items() if info.group == group and m in present]
    unknown = sorted(m for m in present if m not in catalogue and metric_info(m).group == group)
    return known + unknown
