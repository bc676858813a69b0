"""The report's figures (seaborn style, PNG + SVG): metric per cell with CI bars, curves over
epochs, accuracy versus pretraining compute, mask-ratio sweeps, series along a numbered axis
(linear predictability by distance, probe accuracy by layer) and the reconstruction grid.

Every interval drawn is the same Student-t CI over seeds as in the tables (bench.report.stats), never
seaborn's bootstrap; every figure has one row per (dataset, encoder) section.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench.core import files, tensorfile
from bench.report.cells import COMPUTE_AXES, ComputeAxis, sections, si_prefix
from bench.report.metrics import CELL, NOT_COMPARABLE, metric_info
from bench.report.stats import summarize

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

DPI = 110


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
    caption: str
    png: Path
    svg: Path


def _seaborn():
    """seaborn, imported when a figure is drawn (it loads scipy and pyplot: ~1 s at start;
    matplotlib too is imported only to draw)."""
    import seaborn

    return seaborn


@contextmanager
def _style() -> Iterator[None]:
    sns = _seaborn()
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=0.9):
        yield


def _save(fig: MplFigure, out: Path, name: str, title: str, caption: str,
          legend: bool = False) -> Figure:
    """Lay out once (legend on top when asked), then one draw per format."""
    top = _legend(fig) if legend else 1.0
    fig.tight_layout(rect=(0, 0, 1, top))
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    fig.savefig(png, dpi=DPI)
    fig.savefig(svg)
    return Figure(name, title, caption, png, svg)


def palette(cells: pd.DataFrame) -> dict[str, tuple]:
    """One colour per row label, the same in every figure."""
    labels = list(dict.fromkeys(cells.label))
    colours = _seaborn().color_palette("tab10" if len(labels) <= 10 else "husl", len(labels))
    return dict(zip(labels, colours))


def summarise_by(frame: pd.DataFrame, keys: list[str], column: str = "value") -> pd.DataFrame:
    """Mean and t CI of `column` per `keys` group (bench.report.stats.summarize: the tables' CI)."""
    rows = []
    for key, group in frame.groupby(keys, sort=True):
        s = summarize(group[column].to_numpy())
        rows.append((*key, s.mean, s.ci_low, s.ci_high, s.n))
    return pd.DataFrame(rows, columns=[*keys, "mean", "ci_low", "ci_high", "n"])


def _grid(n_rows: int, n_cols: int, width: float, height: float):
    from matplotlib.figure import Figure as MplFigure  # no pyplot: no global backend or state

    fig = MplFigure(figsize=(width * n_cols, height * n_rows))
    return fig, fig.subplots(n_rows, n_cols, squeeze=False)


def _section_title(ax, dataset: str, encoder: str, text: str) -> None:
    ax.set_title(f"{dataset} · {encoder}\n{text}", fontsize=8)


def _labelled(frame: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """`frame` (with a run_dir column or CELL columns) joined to its cell's label."""
    return frame.merge(cells[[*CELL, "label", "is_reference"]], on=list(CELL), how="inner")


def metric_figure(ok: pd.DataFrame, cells: pd.DataFrame, metrics: list[str],
                  out: Path) -> Figure | None:
    """Per section and accuracy metric: every seed (dots), the mean and its 95 % t CI."""
    data = _labelled(ok[ok.metric.isin(metrics)], cells)
    if data.empty:
        return None
    secs, colours = sections(cells), palette(cells)
    n_labels = max(len(cells[(cells.dataset == d) & (cells.encoder == e)]) for d, e in secs)
    with _style():
        fig, axes = _grid(len(secs), len(metrics), 3.4, 0.8 + 0.32 * n_labels)
        for i, (dataset, encoder) in enumerate(secs):
            labels = list(cells[(cells.dataset == dataset) & (cells.encoder == encoder)].label)
            for j, metric in enumerate(metrics):
                ax, info = axes[i, j], metric_info(metric)
                sub = data[(data.dataset == dataset) & (data.encoder == encoder)
                           & (data.metric == metric)]
                for y, label in enumerate(labels):
                    values = sub[sub.label == label].value.to_numpy() * info.scale
                    if values.size == 0:
                        continue
                    s = summarize(values)
                    jitter = (np.arange(values.size) % 5 - 2) * 0.05
                    ax.scatter(values, y + jitter, s=6, alpha=0.45, color=colours[label],
                               rasterized=True, linewidths=0)
                    err = None if np.isnan(s.ci_low) else [[s.mean - s.ci_low], [s.ci_high - s.mean]]
                    ax.errorbar([s.mean], [y], xerr=err, fmt="o", color=colours[label],
                                capsize=3, markersize=4)
                ax.set_yticks(range(len(labels)), labels if j == 0 else [""] * len(labels))
                ax.set_ylim(len(labels) - 0.5, -0.5)
                ax.set_xlabel(info.title)
                _clip_to_range(ax, metric, "x")
                _section_title(ax, dataset, encoder, info.title)
        return _save(fig, out, "metrics", "Accuracy per row",
                     "Dots: seeds. Marker and bar: mean and 95 % Student-t CI over seeds "
                     "(final-epoch values).")


def _clip_to_range(ax, metric: str, which: str) -> None:
    """Keep a percentage axis within [0, 100]: with 2-3 seeds a t interval can reach far past
    what is possible, and would squash the means into a line. Intervals are clipped, not
    changed (the tables give them in full)."""
    if metric_info(metric).scale != 100.0:
        return
    get, set_ = (ax.get_xlim, ax.set_xlim) if which == "x" else (ax.get_ylim, ax.set_ylim)
    low, high = get()
    set_(max(low, -2.0), min(high, 102.0))


def _line(ax, summary: pd.DataFrame, x: str, label: str, colour, style: str = "-") -> None:
    """Mean and CI band along `x`; a single point is a marker with its CI bar, not a line."""
    if len(summary) < 2:
        err = summary[["ci_low", "ci_high"]].to_numpy().T - summary["mean"].to_numpy()
        ax.errorbar(summary[x], summary["mean"], yerr=np.nan_to_num(np.abs(err)), fmt="o",
                    markersize=4, capsize=3, color=colour, label=label)
        return
    ax.plot(summary[x], summary["mean"], marker="o", markersize=3, color=colour, label=label,
            linestyle=style)
    ax.fill_between(summary[x], summary.ci_low, summary.ci_high, color=colour, alpha=0.18,
                    linewidth=0)


def _legend(fig: MplFigure, per_row: int = 4) -> float:
    """One legend for the whole figure, above the axes; returns the fraction of the height
    left for them."""
    handles: dict[str, object] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if not handles:
        return 1.0
    fig.legend(handles.values(), handles.keys(), loc="upper center", fontsize=7,
               ncol=min(per_row, len(handles)), frameon=False)
    rows = -(-len(handles) // per_row)
    return 1.0 - (0.08 + 0.17 * rows) / fig.get_figheight()


def curve_figure(series: dict[str, pd.DataFrame], cells: pd.DataFrame,
                 out: Path) -> Figure | None:
    """Per section: each of `series` (metric -> run_dir, epoch, value and CELL columns) over
    epochs, mean and 95 % t CI band over seeds per row. A row with fewer than two epochs is
    no curve and is left out; so is a metric without any curve (accuracy evaluated only at
    the end: that view is the compute figure's)."""
    summaries = {}
    for metric, frame in series.items():
        frame = _labelled(frame, cells)
        frame = frame[~frame.is_reference]
        scaled = frame.assign(value=frame.value * metric_info(metric).scale)
        summary = summarise_by(scaled, ["dataset", "encoder", "label", "epoch"])
        points = summary.groupby(["dataset", "encoder", "label"]).epoch.transform("size")
        if (points >= 2).any():
            summaries[metric] = summary[points >= 2]
    if not summaries:
        return None
    secs, colours = sections(cells), palette(cells)
    with _style():
        fig, axes = _grid(len(secs), len(summaries), 3.6, 2.6)
        for i, (dataset, encoder) in enumerate(secs):
            for j, (metric, summary) in enumerate(summaries.items()):
                ax, info = axes[i, j], metric_info(metric)
                sub = summary[(summary.dataset == dataset) & (summary.encoder == encoder)]
                for label in dict.fromkeys(cells.label):
                    line = sub[sub.label == label]
                    if not line.empty:
                        _line(ax, line, "epoch", label, colours[label])
                title = "pretraining loss" if metric == "loss" else info.title
                ax.set_xlabel("epoch")
                _clip_to_range(ax, metric, "y")
                _section_title(ax, dataset, encoder, title)
        return _save(fig, out, "curves", "Pretraining loss and probe accuracy versus epoch",
                     "Mean and 95 % t CI band over seeds. Accuracy: periodic evaluation "
                     "(--eval-every) and the final value. The pretraining loss is each method's "
                     f"own task: {NOT_COMPARABLE}. Rows with fewer than two points are not "
                     "drawn.", legend=True)


def series_figure(ok: pd.DataFrame, cells: pd.DataFrame, panels: dict[str, dict[str, float]],
                  xlabel: str, out: Path, name: str, title: str, caption: str
                  ) -> Figure | None:
    """Per section, one panel per entry of `panels` (panel title -> {metric: x}): each row's
    values along x, mean and 95 % t CI band over seeds; reference rows dashed. Panels and
    sections without a value are left out."""
    data = _labelled(ok[ok.metric.isin({m for p in panels.values() for m in p})], cells)
    if data.empty:
        return None
    panels = {t: p for t, p in panels.items() if data.metric.isin(p).any()}
    secs, colours = sections(cells), palette(cells)
    with _style():
        fig, axes = _grid(len(secs), len(panels), 3.6, 2.7)
        for i, (dataset, encoder) in enumerate(secs):
            sec = data[(data.dataset == dataset) & (data.encoder == encoder)]
            for j, (panel, xs) in enumerate(panels.items()):
                ax = axes[i, j]
                sub = sec[sec.metric.isin(xs)]
                sub = sub.assign(x=sub.metric.map(xs),
                                 value=sub.value * sub.metric.map(lambda m: metric_info(m).scale))
                for label in dict.fromkeys(cells.label):
                    mine = sub[sub.label == label]
                    if not mine.empty:
                        _line(ax, summarise_by(mine, ["x"]), "x", label, colours[label],
                              "--" if mine.is_reference.iloc[0] else "-")
                ax.set_xlabel(xlabel)
                ax.set_xticks(sorted(set(xs.values())))
                _section_title(ax, dataset, encoder, panel)
        return _save(fig, out, name, title, caption, legend=True)


def _axis_unit(axis: ComputeAxis, values: pd.Series) -> tuple[float, str]:
    """The divisor and axis title that put `values` (in the axis' unit) in engineering
    notation: FLOPs in GFLOP, TFLOP, ... from the largest value; seconds as they are."""
    if not axis.prefixed:
        return 1.0, axis.title
    factor, prefix = si_prefix(float(values.abs().max()) if len(values) else 0.0)
    return factor, axis.title.replace(f"({axis.unit})", f"({prefix}{axis.unit})")


def _plain_ticks(axis) -> None:
    """Tick labels as plain numbers: no '1e-5' multiplier and no '+4.35e1' offset."""
    from matplotlib.ticker import ScalarFormatter

    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    axis.set_major_formatter(formatter)


def compute_figure(points: pd.DataFrame, ok: pd.DataFrame, cells: pd.DataFrame, metric: str,
                   out: Path) -> Figure | None:
    """Per section: `metric` versus cumulative pretraining FLOPs and time (mean over seeds per
    epoch, CI band on the metric); reference rows, which pretrain nothing, as dashed lines."""
    if points.empty:
        return None
    run_cell = ok.drop_duplicates("run_dir")[["run_dir", *CELL]]
    data = _labelled(points.merge(run_cell, on="run_dir"), cells)
    secs, colours, info = sections(cells), palette(cells), metric_info(metric)
    data = data.assign(value=data.value * info.scale)
    with _style():
        fig, axes = _grid(len(secs), len(COMPUTE_AXES), 3.8, 2.8)
        for i, (dataset, encoder) in enumerate(secs):
            sec = data[(data.dataset == dataset) & (data.encoder == encoder)]
            for j, axis in enumerate(COMPUTE_AXES):
                ax = axes[i, j]
                scale, title = _axis_unit(axis, sec[axis.column] * axis.factor)
                for label in dict.fromkeys(cells.label):
                    mine = sec[sec.label == label]
                    if mine.empty:
                        continue
                    if mine.is_reference.iloc[0]:
                        ax.axhline(mine.value.mean(), ls="--", lw=1, color=colours[label],
                                   label=label)
                        continue
                    y = summarise_by(mine, ["epoch"])
                    x = mine.groupby("epoch")[axis.column].mean() * axis.factor / scale
                    _line(ax, y.assign(x=y.epoch.map(x)), "x", label, colours[label])
                ax.set_xlabel(title)
                _plain_ticks(ax.xaxis)
                _clip_to_range(ax, metric, "y")
                _section_title(ax, dataset, encoder, info.title)
        return _save(fig, out, "compute", f"{info.title} versus pretraining compute",
                     "The compute-matched view: at equal pretraining FLOPs or time, the higher "
                     "curve is the better method. x: compute spent up to each evaluation (mean "
                     "over seeds); y: mean and 95 % t CI band over seeds (a row evaluated once, "
                     "at its end: a point with its CI bar). Dashed: reference rows (no "
                     "pretraining).", legend=True)


def mask_ratio_sweeps(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells of methods whose option sets vary mask_ratio within a section, with `mask_ratio`
    and `line` (the row label without the mask ratio) columns; empty when no sweep."""
    opts = cells.options.map(json.loads)
    ratio = opts.map(lambda o: o.get("mask_ratio"))
    swept = cells.assign(mask_ratio=ratio)[ratio.notna()]
    n = swept.groupby([*CELL[:3]]).mask_ratio.transform("nunique")
    swept = swept[n > 1].copy()
    swept["line"] = swept.label.str.replace(r"\s*mask_ratio=\S+", "", regex=True)
    return swept


def mask_ratio_figure(ok: pd.DataFrame, cells: pd.DataFrame, metrics: list[str],
                      out: Path) -> Figure | None:
    """Per section with a mask-ratio sweep: each accuracy metric versus mask ratio, one line
    per method (and other option values), mean and 95 % t CI bars."""
    swept = mask_ratio_sweeps(cells)
    if swept.empty or not metrics:
        return None
    data = ok[ok.metric.isin(metrics)].merge(swept[[*CELL, "line", "mask_ratio"]], on=list(CELL))
    secs = list(dict.fromkeys(zip(swept.dataset, swept.encoder)))
    lines = list(dict.fromkeys(swept.line))
    colours = dict(zip(lines, _seaborn().color_palette(
        "tab10" if len(lines) <= 10 else "husl", len(lines))))
    with _style():
        fig, axes = _grid(len(secs), len(metrics), 3.6, 2.7)
        for i, (dataset, encoder) in enumerate(secs):
            for j, metric in enumerate(metrics):
                ax, info = axes[i, j], metric_info(metric)
                sub = data[(data.dataset == dataset) & (data.encoder == encoder)
                           & (data.metric == metric)]
                summary = summarise_by(sub.assign(value=sub.value * info.scale),
                                       ["line", "mask_ratio"])
                for line in lines:
                    pts = summary[summary.line == line]
                    if pts.empty:
                        continue
                    err = np.vstack([pts["mean"] - pts.ci_low, pts.ci_high - pts["mean"]])
                    ax.errorbar(pts.mask_ratio, pts["mean"], yerr=np.nan_to_num(err), marker="o",
                                markersize=3, capsize=3, color=colours[line], label=line)
                ax.set_xlabel("mask ratio")
                _clip_to_range(ax, metric, "y")
                _section_title(ax, dataset, encoder, info.title)
        return _save(fig, out, "mask_ratio", "Mask-ratio sweep",
                     "Mean and 95 % t CI over seeds at each mask ratio (final-epoch values).", legend=True)


def tile(images: np.ndarray, nrow: int, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """torchvision's `make_grid` in numpy (no torch for a report): `[N, C, H, W]` ->
    `[C', rows * (H + padding) + padding, nrow * (W + padding) + padding]`, one channel made
    three, `pad_value` between the images; a single image comes back as itself."""
    images = np.asarray(images)
    if images.shape[1] == 1:
        images = np.repeat(images, 3, axis=1)
    if images.shape[0] == 1:
        return images[0]
    n, c, h, w = images.shape
    across = min(nrow, n)
    down = -(-n // across)
    grid = np.full((c, down * (h + padding) + padding, across * (w + padding) + padding),
                   pad_value, dtype=images.dtype)
    for k, image in enumerate(images):
        y, x = divmod(k, across)
        top, left = y * (h + padding) + padding, x * (w + padding) + padding
        grid[:, top:top + h, left:left + w] = image
    return grid


def _strip(ax, images, title: str) -> None:
    """`images` `[N, C, H, W]` in [0, 1] side by side in one picture, 2-px white gaps: one
    image per row of the figure draws as fast as one thumbnail."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0, 1)
    grid = tile(images, nrow=images.shape[0])
    ax.imshow(grid.transpose(1, 2, 0), vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    # Above the strip, from its left edge: a label of any length fits (a label left of the
    # strip, right-aligned, was clipped at the figure's edge: "igits · vit-micro").
    ax.set_title(title, fontsize=7, loc="left", pad=2)
    for spine in ax.spines.values():
        spine.set_visible(False)


def visible_and_pasted(rec: dict) -> tuple[np.ndarray, np.ndarray]:
    """From a run's reconstructions (arrays or tensors): what the encoder saw (hidden patches
    grey) and the reconstruction pasted into the hidden patches, both `[N, C, H, W]` in
    [0, 1]."""
    p, (gh, gw) = rec["patch_size"], rec["grid"]
    images = np.asarray(rec["images"], dtype=np.float32)
    vis = np.asarray(rec["visible"]).reshape(-1, 1, gh, gw).astype(np.float32)
    vis_px = vis.repeat(p, 2).repeat(p, 3)
    shown = images * vis_px + np.float32(0.5) * (1 - vis_px)
    pasted = images * vis_px + np.asarray(rec["recon"], dtype=np.float32) * (1 - vis_px)
    return shown, pasted


def reconstruction_grid(rec: dict) -> np.ndarray:
    """One run's reconstructions as one RGB uint8 picture `[H, W, 3]` (what trackers show):
    rows original, visible, reconstruction; one column per test image; 2-px white gaps."""
    shown, pasted = visible_and_pasted(rec)
    images = np.asarray(rec["images"], dtype=np.float32)
    rows = np.clip(np.concatenate([images, shown, pasted]), 0, 1)
    grid = tile(rows, nrow=images.shape[0])
    return (grid * 255).round().astype(np.uint8).transpose(1, 2, 0)


def reconstruction_figure(ok: pd.DataFrame, cells: pd.DataFrame, out: Path,
                          notes: list[str]) -> Figure | None:
    """Per section: the same test images, then per pretrained row (lowest seed) what its
    encoder saw and the reconstruction pasted into the hidden patches. A run whose images
    differ from the section's (other data) is left out with a note. (The files are read as
    numpy arrays, bench.core.tensorfile: a report needs no torch.)"""
    runs = _labelled(ok.drop_duplicates("run_dir"), cells)
    runs = runs[~runs.is_reference].sort_values("seed").drop_duplicates("label")
    blocks: list[tuple[str, Any, list[tuple[str, dict]]]] = []
    for (dataset, encoder) in sections(cells):
        originals, samples = None, []
        for label in cells[(cells.dataset == dataset) & (cells.encoder == encoder)].label:
            run = runs[runs.label == label]
            path = Path(run.run_dir.iloc[0]) / files.RECONSTRUCTIONS if len(run) else None
            if path is None or not path.exists():
                continue
            rec = tensorfile.load_arrays(path)
            if originals is None:
                originals = rec["images"]
            elif not np.array_equal(rec["images"], originals):
                notes.append(f"{path}: other test images than the section's; left out")
                continue
            samples.append((label, rec))
        if samples:
            blocks.append((f"{dataset} · {encoder}", originals, samples))
    if not blocks:
        return None
    rows = []
    for title, originals, samples in blocks:
        rows.append((originals, f"{title} · original"))
        for label, rec in samples:
            shown, pasted = visible_and_pasted(rec)
            rows += [(shown, f"{label} · visible"), (pasted, f"{label} · reconstruction")]
    n = max(images.shape[0] for images, _ in rows)
    fig, axes = _grid(len(rows), 1, 1.2 * n, 1.25)
    for ax, (images, title) in zip(axes[:, 0], rows):
        _strip(ax, images, title)
    return _save(fig, out, "reconstructions", "Reconstructions",
                 "The same test images for every method, one per class as far as there are "
                 "classes (the first test image of each): what the encoder saw (hidden patches "
                 "grey) and the reconstruction pasted into the hidden patches.")
