"""The metric catalogue: each summary.json metric's title, scale, direction and group (which
table shows it), and the names of a report's rows and sections. Plain data, no torch."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.core.config import PROTOCOLS
from bench.core.errors import ConfigError
from methods import method_cards

SECTION = ("dataset", "encoder")
CELL = (*SECTION, "method", "options", "variant")
NOT_COMPARABLE = "not comparable across methods: each method solves a different task"
DEFAULT_PRIMARY = "linear_top1"  # RunConfig.primary_metric's default
SENTENCE_METRICS = ("next_sentence_top1", "next_sentence_same_doc_top1",
                    "previous_sentence_same_doc_top1")  # reported at granularity=sentence


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is titled and scaled, whether higher is better (None: no best), and which
    table it belongs to: accuracy (main), compute, or task (the pretext task's own numbers).
    `machine`: a figure of the machine and its load (throughput, seconds), shown as median
    and range over seeds, never with a CI; `pretraining`: a figure of pretraining itself,
    which reference rows (nothing pretrained) show as '–'."""

    title: str
    scale: float = 1.0
    higher_is_better: bool | None = None
    group: str = "task"
    machine: bool = False
    pretraining: bool = False


METRICS: dict[str, MetricInfo] = {
    "linear_top1": MetricInfo("linear top-1 %", 100.0, True, "accuracy"),
    "knn_top1": MetricInfo("kNN top-1 %", 100.0, True, "accuracy"),
    "tran1_top1": MetricInfo("tran1 top-1 %", 100.0, True, "accuracy"),
    "finetune_top1": MetricInfo("fine-tune top-1 %", 100.0, True, "accuracy"),
    "next_sentence_top1": MetricInfo("next-sentence top-1 %", 100.0, True, "accuracy"),
    "next_sentence_same_doc_top1": MetricInfo("next-sentence, same-doc distractors top-1 %",
                                              100.0, True, "accuracy"),
    "previous_sentence_same_doc_top1": MetricInfo(
        "previous-sentence, same-doc distractors top-1 %", 100.0, True, "accuracy"),
    "linear_l2": MetricInfo("linear-probe L2 (chosen on validation)", 1.0, None, "probe"),
    "dense_l2": MetricInfo("dense-probe L2 (chosen on validation)", 1.0, None, "probe"),
    "compute.pretrain_flops_per_sample": MetricInfo("GFLOPs/sample", 1e-9, False, "compute",
                                                    pretraining=True),
    "compute.train_samples_per_s": MetricInfo("samples/s", 1.0, True, "compute", machine=True,
                                              pretraining=True),
    "compute.train_s": MetricInfo("pretrain s", 1.0, False, "compute", machine=True,
                                  pretraining=True),
    "compute.wall_s": MetricInfo("wall s", 1.0, False, "compute", machine=True),
    "compute.peak_mem_bytes": MetricInfo("peak mem GiB", 2.0**-30, False, "compute"),
    "compute.processes": MetricInfo("processes", 1.0, None, "compute"),
    "compute.load_avg": MetricInfo("load avg (1 min)", 1.0, None, "compute", machine=True),
    # CPU threads of the run's float reductions (bitwise equality holds per thread count):
    # a column of the setup table where a section's runs differ in it.
    "compute.threads": MetricInfo("threads", 1.0, None, "execution"),
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
    # Dense probe (bench/eval/dense.py), few-shot probes (fewshot.py; the k-shot names are
    # `PATTERNS`), the per-layer probe (layers.py) and linear predictability (linpred.py).
    "dense_miou": MetricInfo("dense mIoU %", 100.0, True, "dense"),
    "dense_miou_fg": MetricInfo("dense foreground mIoU %", 100.0, True, "dense"),
    "dense_pixel_acc": MetricInfo("dense pixel acc %", 100.0, True, "dense"),
    "linear_1pct_top1": MetricInfo("linear 1 % labels top-1 %", 100.0, True, "fewshot"),
    "linear_10pct_top1": MetricInfo("linear 10 % labels top-1 %", 100.0, True, "fewshot"),
    "linear_layer_best": MetricInfo("best layer (chosen on validation)", 1.0, None, "layers"),
    "linear_layer_best_top1": MetricInfo("linear top-1 % at the best layer (validation)", 100.0,
                                         True, "layers"),
    "recon_loss_d5plus": MetricInfo("recon loss d≥5", group="fill"),  # bigger grids only
    # What the learned fill contributes (bench/eval/contribution.py): recon_loss again with the
    # fill replaced; a method's own ablations (recon_loss_fill_<name>) join by prefix.
    "recon_loss_fill_const": MetricInfo("recon loss, constant fill", group="contribution"),
    "recon_loss_fill_copy": MetricInfo("recon loss, copy (A = B = 0)", group="contribution"),
}
# A method's own diagnostics (its card's `diagnostics`) are in the group "method:<name>".

# Metric families with a number in the name: (pattern, info from its groups). Higher linear
# predictability is not better in itself (it is the hypothesis tested), so it has no direction.
# content_r2: ridge from (position one-hot, the input's mean token) alone, no neighbour;
# composed_r2: the fitted d = 1 map applied d times (the seed's one map M, z(x + d) = M^d z(x)).
LINPRED_KINDS = {"r2": "linpred R²", "content_r2": "content-baseline R²",
                 "composed_r2": "M₁^d R² (d = 1 map composed)", "mean_r2": "position-mean R²",
                 "identity_r2": "identity R²", "heat_r2": "(I+A)^d R²",
                 "heat_gap": "‖M−(I+A)^d‖/‖M‖"}
PATTERNS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], MetricInfo]], ...] = (
    # The dense probe's IoU of each label k (bench/eval/dense.py; names: `dense_class_names`).
    (re.compile(r"dense_iou_(\d+)"),
     lambda m: MetricInfo(f"IoU label {m[1]} %", 100.0, None, "dense_classes")),
    (re.compile(r"linear_(\d+)shot_top1"),
     lambda m: MetricInfo(f"linear {m[1]}-shot top-1 %", 100.0, True, "fewshot")),
    (re.compile(r"knn_(\d+)shot_top1"),
     lambda m: MetricInfo(f"kNN {m[1]}-shot top-1 %", 100.0, True, "fewshot")),
    (re.compile(r"linear_layer(\d+)_top1"),
     lambda m: MetricInfo(f"linear top-1 % layer {m[1]}", 100.0, True, "layers")),
    (re.compile(rf"linpred_({'|'.join(LINPRED_KINDS)})_d(\d+)"),
     lambda m: MetricInfo(f"{LINPRED_KINDS[m[1]]} d={m[2]}", group="linpred")),
)
MAIN_COMPUTE = ("compute.pretrain_flops_per_sample", "compute.train_samples_per_s")


# summary.json records by prefix, and the fill ablations of bench/eval/contribution.py.
# Tuning trials' val_* scores (validation split of the training data) are a group of their own.
PREFIX_GROUPS = {"compute.": "compute", "setup.": "setup", "recon_loss_fill_": "contribution",
                 "val_": "validation"}


def _pattern(metric: str) -> tuple[int, re.Match[str]] | None:
    """The first of `PATTERNS` that `metric` matches in full, with its index."""
    for i, (pattern, _) in enumerate(PATTERNS):
        if (match := pattern.fullmatch(metric)) is not None:
            return i, match
    return None


@functools.cache
def method_metrics() -> dict[str, MetricInfo]:
    """The diagnostics the method cards declare, each in its method's group."""
    return {d.name: MetricInfo(f"{d.title} ({d.unit})" if d.unit else d.title,
                               group=f"method:{card.name}")
            for name in method_cards().names() for card in [method_cards().get(name)]
            for d in card.diagnostics}


def metric_info(metric: str) -> MetricInfo:
    """Catalogue entry (a method card's diagnostic, or a `PATTERNS` entry); a metric none
    knows is shown as is, never ranked, in the table of its summary.json record (compute.,
    setup.), else with the task metrics."""
    if metric in METRICS:
        return METRICS[metric]
    if metric in method_metrics():
        return method_metrics()[metric]
    if (found := _pattern(metric)) is not None:
        return PATTERNS[found[0]][1](found[1])
    group = next((g for p, g in PREFIX_GROUPS.items() if metric.startswith(p)), "task")
    return MetricInfo(metric, group=group)


def _pattern_key(metric: str) -> tuple:
    """Pattern metrics in pattern order, then by their name's words and numbers (layer 2
    before layer 10; linpred by kind, then distance)."""
    i, match = _pattern(metric)
    kinds = list(LINPRED_KINDS)
    return (i, *[(kinds.index(g) if g in kinds else int(g)) for g in match.groups()])


def metric_order(metrics: Sequence[str], group: str) -> list[str]:
    """The metrics of `group` present in `metrics`: catalogue order, then `PATTERNS` ones,
    then unknown ones sorted."""
    present = set(metrics)
    catalogue = {**METRICS, **method_metrics()}
    known = [m for m, info in catalogue.items() if info.group == group and m in present]
    rest = [m for m in present if m not in catalogue and metric_info(m).group == group]
    patterned = sorted((m for m in rest if _pattern(m)), key=_pattern_key)
    return known + patterned + sorted(m for m in rest if not _pattern(m))


# The probe scores the verdict judges, higher is better: the pooled probes' accuracies and the
# frozen per-token probe's (dense: localisation). A section's family is the ones its runs report.
JUDGED_GROUPS = ("accuracy", "dense")


def judged_metrics(metrics: Sequence[str]) -> list[str]:
    """The metrics of `metrics` a verdict compares (JUDGED_GROUPS), accuracy ones first."""
    return [m for group in JUDGED_GROUPS for m in metric_order(metrics, group)]


def check_primary(metric: str, protocols: Sequence[str] | None = None,
                  granularity: str | None = None) -> str:
    """`metric` if it can be a primary metric: a judged metric of the catalogue
    (JUDGED_GROUPS), and (when given) one that runs with `protocols` at `granularity` report;
    else ConfigError."""
    judged = [m for m, info in METRICS.items() if info.group in JUDGED_GROUPS]
    if metric not in judged:
        raise ConfigError(f"primary metric {metric!r} is not a probe score the verdict judges; "
                          f"valid: {', '.join(judged)}")
    protocol = "dense" if METRICS[metric].group == "dense" else metric.removesuffix("_top1")
    if protocols is not None and protocol in PROTOCOLS and protocol not in protocols:
        raise ConfigError(f"primary_metric={metric} needs the {protocol} protocol: add it to "
                          f"protocols (now {','.join(protocols)})")
    if granularity is not None and metric in SENTENCE_METRICS and granularity != "sentence":
        raise ConfigError(f"primary_metric={metric} is reported at granularity=sentence only")
    return metric
