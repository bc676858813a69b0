"""Run folders -> report.md (method x metric table, mean ± std over seeds, n per cell) and
reconstructions.png (the same test images for every method)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bench import store
from bench.aggregate import Aggregate, collect
from bench.stats import summarize

# Metrics shown in the main table, in order, with how to print them.
MAIN_METRICS = {
    "linear_top1": ("linear top-1 %", 100.0),
    "knn_top1": ("kNN top-1 %", 100.0),
    "recon_loss": ("test recon loss", 1.0),
    "compute.pretrain_flops_per_sample": ("GFLOPs/sample", 1e-9),
    "compute.train_samples_per_s": ("samples/s", 1.0),
}
REFERENCE_ORDER = ("random-init", "raw-input")


def format_cell(values: Sequence[float], scale: float) -> str:
    s = summarize([v * scale for v in values])
    if s.n == 0 or math.isnan(s.mean):
        return "–"
    digits = 2 if abs(s.mean) < 10 else 1
    if s.n == 1:
        return f"{s.mean:.{digits}f} (n=1)"
    return f"{s.mean:.{digits}f} ± {s.std:.{digits}f} (n={s.n})"


def row_label(method: str, options: str, varied: bool) -> str:
    return f"{method} {options}" if varied and options not in ("{}", "") else method


def method_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per method (and option set where those differ), one column per main metric."""
    ok = table[(table.status == "ok") & table.metric.isin(list(MAIN_METRICS))]
    rows = []
    for (method, options), cell in ok.groupby(["method", "options"], sort=False):
        varied = ok[ok.method == method].options.nunique() > 1
        row = {"method": row_label(method, options, varied)}
        for metric, (title, scale) in MAIN_METRICS.items():
            values = cell[cell.metric == metric].value.tolist()
            row[title] = format_cell(values, scale) if values else "–"
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    # Methods first (alphabetical), reference rows last.
    is_ref = frame.method.isin(REFERENCE_ORDER)
    return pd.concat([frame[~is_ref].sort_values("method"), frame[is_ref]]).reset_index(drop=True)


def to_markdown(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def render_markdown(agg: Aggregate, figures: list[str]) -> str:
    parts = ["# Maskbench report", ""]
    parts.append(
        "Values are final-epoch values (never a best epoch chosen on test data): "
        "mean ± sample std over seeds, n = number of seeds per cell. "
        "`random-init` and `raw-input` are reference rows (no pretraining)."
    )
    for (dataset, encoder), group in agg.table.groupby(["dataset", "encoder"], sort=True):
        parts += ["", f"## {dataset} · {encoder}", "", to_markdown(method_table(group))]
    if not agg.failed.empty:
        parts += ["", "## Failed runs", ""]
        for r in agg.failed.itertuples(index=False):
            parts.append(f"- `{r.run_id}` {r.method} seed {r.seed}: {r.error} ({r.run_dir})")
    if agg.problems:
        parts += ["", "## Skipped folders", ""]
        parts += [f"- {p.path}: {p.reason}" for p in agg.problems]
    for fig in figures:
        parts += ["", f"![{fig}]({fig})"]
    return "\n".join(parts) + "\n"


def reconstruction_figure(agg: Aggregate, out: Path) -> Path | None:
    """Rows: original, then per method its visible input and its reconstruction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = agg.table[agg.table.status == "ok"][["method", "options", "seed", "run_dir"]]
    picked = runs.drop_duplicates().sort_values(["method", "options", "seed"])
    picked = picked.drop_duplicates(["method", "options"])
    samples = []
    for r in picked.itertuples(index=False):
        path = Path(r.run_dir) / store.RECONSTRUCTIONS
        if path.exists():
            samples.append((r.method, store.load_torch(path)))
    if not samples:
        return None
    images = samples[0][1]["images"]
    n = images.shape[0]
    fig, axes = plt.subplots(1 + 2 * len(samples), n, figsize=(1.2 * n, 1.25 * (1 + 2 * len(samples))))
    axes = axes.reshape(1 + 2 * len(samples), n)

    def show(ax, img, title=None):
        ax.imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if title:
            ax.set_ylabel(title, fontsize=7, rotation=0, ha="right", va="center")

    for j in range(n):
        show(axes[0, j], images[j], "original" if j == 0 else None)
    for i, (method, rec) in enumerate(samples):
        p, (gh, gw) = rec["patch_size"], rec["grid"]
        vis = rec["visible"].view(-1, 1, gh, gw).float()
        vis_px = vis.repeat_interleave(p, 2).repeat_interleave(p, 3)
        shown = rec["images"] * vis_px + 0.5 * (1 - vis_px)  # hidden patches grey
        pasted = rec["images"] * vis_px + rec["recon"] * (1 - vis_px)
        for j in range(n):
            show(axes[1 + 2 * i, j], shown[j], f"{method}\nvisible" if j == 0 else None)
            show(axes[2 + 2 * i, j], pasted[j], f"{method}\nreconstruction" if j == 0 else None)
    fig.tight_layout()
    path = out / "reconstructions.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(dirs: Sequence[Path], out: Path) -> Path:
    """Aggregate every run under `dirs` and write the report into `out`; returns report.md."""
    out = store.ensure_writable(Path(out))
    agg = collect([Path(d) for d in dirs])
    agg.to_csv(out / "runs.csv")
    figures = []
    fig = reconstruction_figure(agg, out)
    if fig is not None:
        figures.append(fig.name)
    path = out / "report.md"
    path.write_text(render_markdown(agg, figures))
    return path
