"""Run folders -> the comparison report: report.html (self-contained) and report.md with the
same content, tables.tex (booktabs), CSVs (runs, per-cell statistics, paired comparisons,
accuracy at equal compute) and figures (PNG + SVG).

Every value is a run's final-epoch value; no epoch is ever chosen on test data. Cells are
summarised over seeds with a Student-t CI and compared with a baseline by paired differences
on shared seeds (bench.report.stats).
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from bench.core import store
from bench.core.errors import DataNotFoundError, OutputError
from bench.core.exports import export_command, export_format, run_folder_of
from bench.report import figures
from bench.report.analysis import Analysis, analyse
from bench.report.cells import (
    sections,
)
from bench.report.document import (
    Block,
    Bullets,
    FigureBlock,
    Heading,
    Paragraph,
    TableBlock,
    render_markdown,
)
from bench.report.html import render_html
from bench.report.metrics import (
    CELL,
    METRICS,
    NOT_COMPARABLE,
    metric_order,
)
from bench.report.provenance import Provenance
from bench.report.recipes import tuning_tables
from bench.report.sections import Section, build_section, section_name
from bench.report.spatial import probe_figures
from bench.report.staging import staged
from bench.report.tables import (
    CI_NOTE,
    Table,
    list_table,
    to_latex,
)
from bench.runtime import progress
from methods import method_cards

log = logging.getLogger(__name__)
TITLE = "Maskbench report"
CURVE_METRICS = ("loss",)  # metrics.jsonl columns drawn besides the accuracy ones

FILL_NOTE = (
    "Where each fill breaks down. recon loss d: the held-out reconstruction loss at hidden "
    "positions whose Chebyshev distance to the nearest visible token is d (for QB-Heat's "
    "block, the steps along the farther axis), under each method's own masking; like "
    "recon_loss, not comparable across methods, and a bin mixes distance with content (on "
    "centred objects the far positions are mostly blank border, which any fill predicts "
    "well). Final epoch; also in metrics.jsonl at --eval-every points.")


VERDICT_NOTE = (
    "Per section, first the pretraining gate: each pretrained row against random-init (the "
    "untrained encoder) on the primary metric, paired by seed; where pretraining moved no row, "
    "comparing strategies compares noise, and the first line says so. Then each row against "
    "the baseline {baseline}, paired by seed, on the primary metric, then on the secondary "
    "ones, and the mask shape x fill effects where the rows cross them. Every claim is made "
    "inside one Holm-Bonferroni family per section (the gate, the baseline comparisons with at "
    "least 3 shared seeds, the claim that every strategy trails raw-input, the factorial "
    "effects: family.csv), so the chance of any false claim in a section is at most 5 %; "
    "nothing else in the report is worded as a finding. The smallest difference the primary "
    "comparisons could detect with 80 % power at the family's first Holm step (exact, from "
    "the noncentral t) is stated beside them.")


TUNING_NOTE = (
    "bench tune ran every row of the comparison at each recipe of its grid on trial seeds, "
    "fitting the probes on the training split minus a held-out validation part and scoring "
    "them there; each row then ran at its best recipe at the comparison's seeds. Trials are "
    "in tune/ and are no rows of the tables above.")


CONTRIBUTION_NOTE = (
    "The held-out reconstruction loss of each run's trained model with its own fill (test "
    "recon loss), then on the same inputs and the same masks with the fill replaced: by a "
    "constant (each sample's mean visible feature at every hidden position) and, for QB-Heat, "
    "by A = B = 0 (every hidden position a copy of its nearest block edge). Encoder and "
    "decoder stay as trained, so the gap is what the fill rule adds; a fill that is no better "
    "than the constant left the work to the decoder. Within a row only: across methods the "
    "tasks differ.")


def _make_figures(a: Analysis, out: Path) -> list[figures.Figure]:
    if a.ok.empty:
        return []
    accuracy = metric_order(a.ok.metric.unique(), "accuracy")
    run_cell = a.ok.drop_duplicates("run_dir")[["run_dir", *CELL]]
    over_epochs = [a.curve[a.curve.metric == m] for m in CURVE_METRICS if not a.curve.empty]
    names = [m for m in CURVE_METRICS if not a.curve.empty]
    if a.compute_metric is not None and not a.points.empty:
        over_epochs.append(a.points)
        names.append(a.compute_metric)
    series = {m: f[["run_dir", "epoch", "value"]].merge(run_cell, on="run_dir")
              for m, f in zip(names, over_epochs)}
    makers = [
        lambda: figures.metric_figure(a.ok, a.cells, accuracy, out),
        lambda: figures.curve_figure(series, a.cells, out),
        lambda: figures.compute_figure(a.points, a.ok, a.cells, a.compute_metric, out)
        if a.compute_metric else None,
        lambda: figures.mask_ratio_figure(a.ok, a.cells, accuracy, out),
        lambda: figures.reconstruction_figure(a.ok, a.cells, out, a.notes),
    ]
    made = [make() for make in progress.bar(makers, desc="figures", unit="figure", leave=False)]
    return [f for f in made if f is not None] + probe_figures(a.ok, a.cells, out)


def _count_table(counts: dict[str, dict[str, int]], title: str, what: str) -> Table:
    rows = [(key, value, n) for key, c in counts.items() for value, n in c.most_common()]
    return list_table(pd.DataFrame(rows, columns=[what, "value", "runs"]), title)


def _provenance_blocks(p: Provenance) -> list[Block]:
    blocks: list[Block] = [Heading("Configurations", 2, "configurations")]
    if p.varying:
        blocks += [
            Paragraph("Settings that differ between runs (they appear in brackets in row "
                      "labels, so runs that differ in anything but the seed are never pooled; "
                      "method options appear in row labels where a method has several):"),
            TableBlock(_count_table(p.varying, "Settings that differ between runs", "setting")),
        ]
    else:
        blocks.append(Paragraph("Apart from method, options, dataset, encoder and seed, every "
                                "run has the same settings."))
    shared = pd.DataFrame(list(p.constant.items()), columns=["setting", "value"])
    blocks += [TableBlock(list_table(shared, "Settings every run shares")),
               Heading("Provenance", 2, "provenance"),
               TableBlock(_count_table({"git sha": p.git_shas, "device": p.devices},
                                       "Code and hardware of the runs", "what")),
               TableBlock(_count_table(p.versions, "Package versions of the runs", "package"))]
    return blocks


def _export_table(a: Analysis) -> Table | None:
    """One `bench export` command per finished pretrained run (timm for images)."""
    runs = a.ok.drop_duplicates("run_dir")
    rows = [(r.run_id, r.method, r.seed, export_command(Path(r.run_dir), fmt))
            for r in runs.itertuples() if (fmt := export_format(a.agg.configs.get(r.run_dir, {})))]
    if not rows:
        return None
    return list_table(pd.DataFrame(rows, columns=["run_id", "method", "seed", "command"]),
                      f"Export commands: {len(rows)} runs",
                      "Writes the run's encoder as a safetensors file timm loads (text "
                      "encoders: their own state dict); the command prints how to load it.")


def _blocks(a: Analysis, dirs: Sequence[Path], section_of: dict[tuple[str, str], Section],
            figs: list[figures.Figure]) -> list[Block]:
    agg = a.agg
    n_ok = a.ok.run_dir.nunique()
    blocks: list[Block] = [
        Heading(TITLE, 1),
        Paragraph(f"{n_ok} finished runs in {len(a.cells)} rows from "
                  f"{', '.join(str(d) for d in dirs)}; {len(agg.failed)} failed; "
                  f"{len(agg.problems)} folders skipped. Generated "
                  f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC by maskbench "
                  f"{store.git_sha() or '(no git)'}."),
        Bullets((
            f"Cells: {CI_NOTE}. Values are always the final epoch's: no epoch, checkpoint or "
            "setting is ever chosen on test data.",
            f"Paired comparisons against the baseline {a.baseline!r}: per row, the mean "
            "difference on the seeds both rows have, its 95 % t CI and a paired t-test p-value "
            "(none when fewer than 3 seeds are shared).",
            "Reference rows: random-init (the same encoder, untrained) and raw-input (the "
            "same probes on the standardised input).",
            f"{', '.join(m for m, i in METRICS.items() if i.group == 'task')} are "
            f"{NOT_COMPARABLE}.",
        )),
    ]
    if section_of:
        blocks += [Heading("Verdict", 2, "verdict"), Paragraph(VERDICT_NOTE.format(
            baseline=repr(a.baseline)))]
        blocks.append(Bullets(tuple(f"{dataset} · {encoder}: {line}"
                                    for (dataset, encoder), s in section_of.items()
                                    for line in s.verdict)))
    if a.notes:
        blocks += [Heading("Notes", 2, "notes"), Bullets(tuple(a.notes))]
    for i, ((dataset, encoder), section) in enumerate(section_of.items()):
        blocks.append(Heading(section_name(a, dataset, encoder), 2, f"section-{i}"))
        if section.warnings:
            blocks.append(Bullets(tuple(section.warnings)))
        blocks += [TableBlock(c) if isinstance(c, Table) else Paragraph(c)
                   for c in section.content]
    fills = [s.fill for s in section_of.values() if s.fill is not None]
    if fills:
        blocks += [Heading("The fill by distance", 2, "fill"), Paragraph(FILL_NOTE),
                   *(TableBlock(t) for t in fills)]
    if a.tunings.records:
        blocks += [Heading("Tuning", 2, "tuning"), Paragraph(TUNING_NOTE),
                   *(TableBlock(t) for t in tuning_tables(a.tunings))]
    contributions = [s.contribution for s in section_of.values() if s.contribution is not None]
    if contributions:
        blocks += [Heading("What the learned fill contributes", 2, "contribution"),
                   Paragraph(CONTRIBUTION_NOTE), *(TableBlock(t) for t in contributions)]
    for method in dict.fromkeys(m for s in section_of.values() for m in s.methods):
        card = method_cards().get(method)
        blocks += [Heading(card.diagnostics_title or f"{method}: diagnostics", 2,
                           f"method-{method}")]
        blocks += [Paragraph(card.diagnostics_note)] if card.diagnostics_note else []
        blocks += [TableBlock(s.methods[method]) for s in section_of.values()
                   if method in s.methods]
    if figs:
        blocks.append(Heading("Figures", 2, "figures"))
        blocks += [FigureBlock(f) for f in figs]
    if not agg.failed.empty:
        failed = agg.failed[["run_id", "method", "options", "seed", "error", "run_dir"]]
        blocks += [Heading("Failed runs", 2, "failed"),
                   TableBlock(list_table(failed, f"Failed runs: {len(failed)} (in no cell)"))]
    exports = _export_table(a)
    if exports is not None:
        blocks += [Heading("Export the encoders", 2, "export"), TableBlock(exports)]
    if agg.problems:
        problems = pd.DataFrame([(str(p.path), p.reason) for p in agg.problems],
                                columns=["folder", "reason"])
        blocks += [Heading("Skipped folders", 2, "skipped"),
                   TableBlock(list_table(problems, "Folders left out (unreadable or unusable)"))]
    blocks += _provenance_blocks(a.provenance)
    blocks.append(Paragraph(f"Report written with Python {platform.python_version()} on "
                            f"{platform.platform()}."))
    return blocks


def write_report(dirs: Sequence[Path], out: Path, *, baseline: str | None = None,
                 option_defaults: dict[str, dict[str, Any]] | None = None,
                 primary: str | None = None) -> Path:
    """Aggregate every run under `dirs`, write the report into `out`, return report.html
    (report.md beside it says the same). `baseline`, `option_defaults`: see `analyse`.

    Nothing is written when there is nothing to report, nor into a run folder (`out` one, or
    inside one: OutputError, as `bench export` refuses). Every file is built in a temporary
    folder inside `out` and moved into place one by one (os.replace), report.html last: a
    reader, or another report written at the same time, never sees a torn file; a write that
    fails (a full disk) leaves the previous report as it was (OutputError)."""
    out = Path(out)
    dirs = [Path(d) for d in dirs]
    owner = run_folder_of(out)
    if owner is not None:
        raise OutputError(f"{out} is {'' if owner == out.absolute() else 'inside '}the run "
                          f"folder {owner}: a report never writes into a run folder; choose "
                          "another --out (e.g. the results folder's report/)")
    a = analyse(dirs, baseline, option_defaults, primary)
    if not a.agg.configs and not a.agg.problems:
        raise DataNotFoundError(
            f"no run folders (config.json or summary.json) under {', '.join(map(str, dirs))}")
    with staged(out) as stage:
        _write_files(a, dirs, stage)
    return out / "report.html"


def _write_files(a: Analysis, dirs: Sequence[Path], out: Path) -> None:
    a.agg.to_csv(out / "runs.csv")
    stats_cols = ["dataset", "encoder", "label", "method", "options", "variant", "metric",
                  "mean", "std", "n", "ci_low", "ci_high", "test_var", "test_examples",
                  "median", "min", "max"]
    a.stats.reindex(columns=stats_cols).to_csv(out / "stats.csv", index=False)
    a.paired.to_csv(out / "paired.csv", index=False)
    a.references.to_csv(out / "references.csv", index=False)
    a.family.hypotheses.to_csv(out / "family.csv", index=False)
    a.matched.to_csv(out / "compute_matched.csv", index=False)
    section_of = {sec: build_section(a, *sec, first=i == 0)
                  for i, sec in enumerate(sections(a.cells))}
    effects = [s.effects for s in section_of.values() if not s.effects.empty]
    if effects:
        pd.concat(effects, ignore_index=True).to_csv(out / "factorial.csv", index=False)
    tables = [t for s in section_of.values() for t in s.tables]
    tables += [s.fill for s in section_of.values() if s.fill is not None]
    tables += [s.contribution for s in section_of.values() if s.contribution is not None]
    tables += [t for s in section_of.values() for t in s.methods.values()]
    (out / "tables.tex").write_text(
        "% Maskbench tables; needs \\usepackage{booktabs}\n\n"
        + "\n\n".join(to_latex(t) for t in tables) + "\n")
    blocks = _blocks(a, dirs, section_of, _make_figures(a, out))
    (out / "report.md").write_text(render_markdown(blocks))
    (out / "report.html").write_text(render_html(blocks, TITLE))
