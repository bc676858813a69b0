"""The comparison report on synthetic run folders: statistics against hand-computed values,
bold and n < 3 rules, a failed run, a truncated JSON and a missing summary listed, a mask-ratio
sweep, several results folders, the CLI. Real runs and the browser: test_report_real.py."""

from __future__ import annotations

import json
import math
import re
import threading
import warnings
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.core.references import REFERENCE_ROWS
from bench.report import figures
from bench.report.analysis import analyse
from bench.report.build import write_report
from bench.report.cells import engineering
from bench.report.sections import build_section
from bench.report.tables import best_rows, stat_table, to_latex, to_markdown
from tests.helpers import write_run

T_975_2 = 4.302652729749464  # t_{0.975, 2} from tables
FIGURES = ("metrics", "curves", "compute", "mask_ratio")


MAE = [0.80, 0.82, 0.84]
QBHEAT = [0.90, 0.91, 0.92]  # differences to MAE 0.10, 0.09, 0.08: mean 0.09, sd 0.01


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, Path]:
    a, b = tmp_path_factory.mktemp("results-a"), tmp_path_factory.mktemp("results-b")
    for s in range(3):
        write_run(a, f"mae{s}", "mae", s, {"linear_top1": MAE[s], "knn_top1": 0.7 + s / 10,
                                            "recon_loss": 0.3})
        write_run(a, f"qb{s}", "qbheat", s, {"linear_top1": QBHEAT[s], "knn_top1": 0.72 + s / 10,
                                             "recon_loss": 0.1}, options={"mask_ratio": 0.75, "order": "xy"},
                  train_s=3.0)  # half MAE's compute
        for ref in REFERENCE_ROWS:
            write_run(a, f"{ref}{s}", ref, s, {"linear_top1": 0.5 + s / 100, "knn_top1": 0.4})
    for s in range(2):  # two seeds only: no p-value
        write_run(a, f"interp{s}", "interp", s, {"linear_top1": 0.85, "knn_top1": 0.75})
    write_run(a, "mae-deep", "mae", 0, {"linear_top1": 0.70}, decoder_depth=4)
    write_run(a, "qbfail", "qbheat", 3, status="failed", options={"mask_ratio": 0.75, "order": "xy"})
    (write_run(a, "truncated", "mae", 5, {"linear_top1": 0.8}) / "summary.json").write_text('{"run_id": "trunc')
    (write_run(a, "unfinished", "mae", 6, {"linear_top1": 0.8}) / "summary.json").unlink()
    for ratio, acc in ((0.5, 0.70), (0.75, 0.78), (0.9, 0.74)):  # a mask-ratio sweep, folder b
        for s in range(3):
            write_run(b, f"sweep{ratio}-{s}", "mae", s, {"linear_top1": acc + s / 100, "knn_top1": acc},
                      options={"mask_ratio": ratio}, encoder="vit-tiny")
    return a, b


@pytest.fixture(scope="module")
def synthetic_report(synthetic, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert write_report(list(synthetic), out, baseline="mae") == out / "report.html"
    return out


def test_cell_statistics_match_hand_computed_values(synthetic_report):
    stats = pd.read_csv(synthetic_report / "stats.csv")
    row = stats[(stats.label == "qbheat") & (stats.metric == "linear_top1")].iloc[0]
    half = T_975_2 * 0.01 / math.sqrt(3)
    assert (row["mean"], row["std"], row.n) == (pytest.approx(0.91), pytest.approx(0.01), 3)
    assert row.ci_low == pytest.approx(0.91 - half) and row.ci_high == pytest.approx(0.91 + half)
    mae = stats[(stats.label == "mae") & (stats.metric == "linear_top1")].iloc[0]
    assert mae.n == 3 and mae["mean"] == pytest.approx(0.82)  # the decoder_depth=4 run is apart
    deep = stats[stats.label == "mae [decoder_depth=4]"]
    assert list(deep.n.unique()) == [1]


def test_paired_difference_and_p_value(synthetic_report):
    paired = pd.read_csv(synthetic_report / "paired.csv")
    row = paired[(paired.label == "qbheat") & (paired.metric == "linear_top1")].iloc[0]
    t = 0.09 / (0.01 / math.sqrt(3))
    p = 1 - t / math.sqrt(2 + t * t)  # two-sided p of Student's t with 2 df, closed form
    half = T_975_2 * 0.01 / math.sqrt(3)
    assert row.baseline == "mae" and row.n == 3 and row.seeds == "0 1 2"
    assert row.mean_diff == pytest.approx(0.09) and row.p_value == pytest.approx(p, rel=1e-6)
    assert row.ci_low == pytest.approx(0.09 - half) and row.ci_high == pytest.approx(0.09 + half)
    few = paired[(paired.label == "interp") & (paired.metric == "linear_top1")].iloc[0]
    assert few.n == 2 and few.too_few and math.isnan(few.p_value)
    md = (synthetic_report / "report.md").read_text()
    assert "+9.00 ± 2.48 (n=3), p = 0.0041" in md and "n < 3: no test" in md


def test_accuracy_at_equal_compute(synthetic_report):
    """qbheat spent half MAE's compute (3 s vs 6 s at the same FLOPs/sample and samples/s):
    the budget is its total, where MAE is half-way between its epoch 1 and 2 evaluations
    (kNN - 0.2 and - 0.1), so MAE's value there is its final kNN - 0.15."""
    matched = pd.read_csv(synthetic_report / "compute_matched.csv")
    sec = matched[matched.encoder == "vit-micro"].set_index(["axis", "label"])
    assert sec.loc[("flops", "qbheat"), "budget"] == pytest.approx(2e9 * 1000 * 3.0 / 1e15)
    assert sec.loc[("time", "qbheat"), "budget"] == pytest.approx(3.0)
    for axis in ("flops", "time"):
        assert sec.loc[(axis, "mae"), "mean"] == pytest.approx(0.8 - 0.15)
        assert sec.loc[(axis, "mae"), "n"] == 3
        assert sec.loc[(axis, "qbheat"), "mean"] == pytest.approx(0.82)


def test_bold_only_where_cis_do_not_overlap(synthetic_report):
    md = (synthetic_report / "report.md").read_text()
    assert "| qbheat | **91.0 ± 2.5 (n=3)** |" in md  # linear: CI apart from the runner-up's
    assert "| qbheat | **91.0 ± 2.5 (n=3)** | 82.0 ± 24.8 (n=3) |" in md  # kNN: CIs overlap
    tex = (synthetic_report / "tables.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\textbf{91.0 $\pm$ 2.5 (n=3)}" in tex


def test_verdict_says_who_wins_in_words(synthetic_report):
    """qbheat - mae on linear top-1: mean 9.0 points, 95 % CI 9.0 ± 2.48, 3 seeds: a win; the
    kNN differences are the constant 0.02 (a degenerate CI that excludes 0); interp has 2
    seeds: not tested; vit-tiny has one method row only."""
    md = (synthetic_report / "report.md").read_text()
    verdict = md.split("## Verdict")[1].split("\n## ")[0]
    assert ("fashion-mnist · vit-micro: linear top-1 (primary): qbheat beats mae by 9.0 points, "
            "95 % CI [6.5, 11.5], Holm-adjusted p = 0.0041, 3 seeds; 2 other row(s) not "
            "distinguishable from mae; at 3 seeds a difference under") in verdict
    assert ("secondary, kNN top-1: qbheat beats mae by 2.0 points, 95 % CI [2.0, 2.0], "
            "Holm-adjusted p = 0, 3 seeds") in verdict
    assert ("one Holm-Bonferroni family of 4 hypotheses for the section (2 pretraining-gate "
            "comparisons, 2 baseline comparisons (1 row(s) x 2 metric(s)))" in verdict
            and "intervals hold seed variance only" in verdict)
    assert ("fashion-mnist · vit-micro: Pretraining gate: pretraining moved 2 of 2 pretrained "
            "rows away from random-init (the untrained encoder) on linear top-1 (2 more with "
            "fewer than 3 shared seeds: not tested)") in verdict
    judged = [line for line in verdict.splitlines()
              if line.startswith("- ") and "Pretraining gate" not in line]
    assert not any("raw-input" in x or "random-init" in x for x in judged)  # not strategies
    assert "fashion-mnist · vit-tiny: no verdict: the baseline 'mae'" not in verdict


def test_nothing_distinguishable_is_said_plainly(tmp_path):
    for s, (a, b) in enumerate(((0.80, 0.81), (0.82, 0.80), (0.81, 0.82))):
        write_run(tmp_path / "res", f"mae{s}", "mae", s, {"linear_top1": a})
        write_run(tmp_path / "res", f"interp{s}", "interp", s, {"linear_top1": b})
    write_report([tmp_path / "res"], tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert ("fashion-mnist · vit-micro: linear top-1 (primary): no row is distinguishable from "
            "mae (3 seeds; no Holm-adjusted p below 0.05); at 3 seeds a difference under") in md


def test_fairness_table_and_warnings(tmp_path):
    """Each row's setup; a warning where compared rows differ in what should be equal (visible
    tokens here), a separate one for what differs by design (method parameters)."""
    same = dict(scored_positions=48, encoder_params=800_000, decoder_params=200_000, epochs=3,
                batch_size=256)
    for s in range(2):
        write_run(tmp_path / "res", f"mae{s}", "mae", s, {"linear_top1": 0.8},
                  setup=dict(same, visible_tokens=16, method_params=128),
                  weight_decay_rule="rule one")
        write_run(tmp_path / "res", f"qb{s}", "qbheat", s, {"linear_top1": 0.8},
                  setup=dict(same, visible_tokens=12, method_params=32768),
                  weight_decay_rule="rule one")
    write_report([tmp_path / "res"], tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert ("| row | visible tokens | scored positions | encoder params M | decoder params M | "
            "epochs | batch | method params M | GFLOPs/sample | weight-decay rule |") in md
    assert "| mae | 16 | 48 | 0.8 | 0.2 | 3 | 256 | 0.000128 | 2 | R1 |" in md
    assert "R1: rule one" in md
    assert ("⚠ compared rows differ in visible tokens in setup: the comparison is not like for "
            "like: mae 16, qbheat 12") in md
    assert "⚠ compared rows differ in method params M by design" in md
    assert "differ in epochs" not in md and "differ in weight-decay rule" not in md


def test_failed_truncated_and_missing_are_listed(synthetic, synthetic_report):
    md = (synthetic_report / "report.md").read_text()
    assert "RuntimeError: CUDA out of memory" in md and "qbfail" in md
    assert str(synthetic[0] / "truncated") in md and "truncated or invalid JSON" in md
    assert str(synthetic[0] / "unfinished") in md and "no summary.json" in md
    assert "| qbheat | 91.0" not in md.split("Failed runs")[1]  # failed runs are in no cell
    assert (synthetic_report / "runs.failed.csv").read_text().count("CUDA out of memory") == 1


def test_sections_sweep_and_configurations(synthetic_report):
    md = (synthetic_report / "report.md").read_text()
    assert "## fashion-mnist · vit-micro" in md and "## fashion-mnist · vit-tiny" in md
    for ratio in ("0.5", "0.75", "0.9"):
        assert f"| mae mask_ratio={ratio} |" in md
    assert "decoder_depth" in md.split("## Configurations")[1]
    vit_micro, vit_tiny = md.split("## fashion-mnist · vit-tiny")[0], md.split("## fashion-mnist · vit-tiny")[1]
    assert "Rows without [brackets] have decoder_depth=2" in vit_micro
    assert "brackets" not in vit_tiny.split("## Figures")[0]  # nothing differs there
    assert NOT_COMPARABLE_TEXT in md and "pretext-task metrics" in md
    assert "accuracy at equal pretraining compute" in md
    for name in FIGURES:
        assert (synthetic_report / f"{name}.png").stat().st_size > 5000
        assert (synthetic_report / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    assert not (synthetic_report / "reconstructions.png").exists()  # no reconstructions.pt here


NOT_COMPARABLE_TEXT = "not comparable across methods: each method solves a different task"


def test_html_is_self_contained(synthetic_report):
    page = (synthetic_report / "report.html").read_text()
    sources = re.findall(r'<img [^>]*src="([^"]{0,30})', page)
    assert len(sources) == len(FIGURES) and all(s.startswith("data:image/png;base64,") for s in sources)
    assert 'id="main-table"' in page and "<link" not in page and "http" not in page.split("<body")[0]
    assert "Package versions of the runs" in page and "abc123" in page


def test_only_failed_runs_still_report_and_no_runs_is_an_error(tmp_path, capsys):
    write_run(tmp_path / "res", "boom", "mae", 0, status="failed")
    write_report([tmp_path / "res"], tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Failed runs: 1" in md and "CUDA out of memory" in md and "no tables" in md
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no run folders" in capsys.readouterr().err
    assert list((tmp_path / "empty").iterdir()) == []  # no empty report/ left behind


def test_cli_report_several_dirs_and_unknown_baseline(synthetic, tmp_path, capsys):
    """A baseline named that is not a row is a one-line error naming the rows (it used to
    write a report without comparisons); without --baseline, a folder without mae runs is
    reported with a note."""
    out = tmp_path / "r"
    assert main(["report", *map(str, synthetic), "--baseline", "nope", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("error: baseline 'nope' is not a row of this report; its rows: "
                           "interp, mae, qbheat, random-init, raw-input") and not out.exists()
    assert main(["report", *map(str, synthetic), "--baseline", "qbheat", "--out", str(out)]) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert "paired difference to the baseline qbheat" in md
    assert "24 finished runs" in md  # both folders
    assert main(["report", str(tmp_path / "missing")]) == 2


# ------------------------------------------------------------------------------------------
# Runs evaluated only at their end, on two machines, two of them diverged (NaN, inf)

NAN_RUN, INF_RUN = "qb-nan", "mae-inf"


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> dict:
    """The report of runs without --eval-every (qbheat cheaper, on another device), every
    warning it raised, and its figures as drawn (matplotlib objects)."""
    root = tmp_path_factory.mktemp("plain")
    for s in range(3):
        write_run(root / "res", f"mae{s}", "mae", s,
                  {"linear_top1": MAE[s], "knn_top1": 0.7, "recon_loss": 0.3},
                  periodic=False, compute={"processes": 1, "load_avg": 0.5})
        qb = write_run(root / "res", f"qb{s}", "qbheat", s,
                       {"linear_top1": QBHEAT[s], "knn_top1": 0.72, "recon_loss": 0.1},
                       train_s=3.0, periodic=False,
                       compute={"processes": 1, "load_avg": 3.0, "device": "cuda:0 (H200)"})
        write_run(root / "res", f"ri{s}", "random-init", s, {"linear_top1": 0.5, "knn_top1": 0.4},
                  compute={"processes": 1})
    curve = (qb / "metrics.jsonl").read_text().replace('"loss": 0.5', '"loss": Infinity')
    (qb / "metrics.jsonl").write_text(curve)  # a loss spike mid-run: no warning either
    write_run(root / "res", NAN_RUN, "qbheat", 3, {"linear_top1": math.nan, "knn_top1": 0.7})
    write_run(root / "res", INF_RUN, "mae", 3, {"linear_top1": 0.8, "knn_top1": math.inf})
    drawn = {}
    save = figures._save

    def keep(fig, out, name, *args, **kwargs):
        drawn[name] = fig
        return save(fig, out, name, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mp.setattr(figures, "_save", keep)
        write_report([root / "res"], root / "out")
    return {"root": root, "md": (root / "out" / "report.md").read_text(), "out": root / "out",
            "warnings": [str(w.message) for w in caught], "figures": drawn}


def test_equal_compute_view_absent_without_periodic_evaluation(plain):
    """Evaluated only at their end, the mae runs have no kNN at qbheat's (smaller) budget: no
    table that would crown the cheapest runs, but why and how to get it."""
    assert pd.read_csv(plain["out"] / "compute_matched.csv").empty
    assert "accuracy at equal pretraining compute**" not in plain["md"]
    assert ("Accuracy at equal pretraining FLOPs and time is not shown: 3 of the 6 pretrained "
            "runs have no knn_top1 evaluation at or below the budget every pretrained run "
            "reached (6 TFLOP; 3 s of pretraining)") in plain["md"]
    assert "Run with --eval-every K (evaluate every K epochs) to get this view." in plain["md"]


def test_equal_compute_view_shown_when_every_run_reaches_the_budget(synthetic_report):
    md = (synthetic_report / "report.md").read_text()
    assert "| row | at 6 TFLOP of pretraining | at 3 s of pretraining |" in md
    assert "Accuracy at equal pretraining" not in md


def test_compute_table_has_processes_load_and_devices(plain):
    section = plain["md"].split("## fashion-mnist · vit-micro")[1]
    compute = section.split("vit-micro: compute**")[1].split("\n\n**")[0]
    assert ("| row | GFLOPs/sample | samples/s | pretrain s | wall s | processes | "
            "load avg (1 min) | device |") in compute
    assert "| 1.00 ± 0.00 (n=3) | 0.50 [0.50–0.50] (n=3) | cpu (test) |" in compute
    assert "| 1.00 ± 0.00 (n=3) | 3.00 [3.00–3.00] (n=3) | cuda:0 (H200) |" in compute
    assert ("not comparable across runs measured on different machines or under different "
            "loads") in compute
    task = section.split("pretext-task metrics**")[1].split("\n\n")[1]
    assert task.startswith("| row | test recon loss |\n")


def test_shared_settings_state_the_reference_rows_own_epochs(plain, synthetic_report):
    for md in (plain["md"], (synthetic_report / "report.md").read_text()):
        shared = md.split("**Settings every run shares**")[1]
        assert "| epochs | 3 (reference rows: 0) |" in shared


def test_non_finite_runs_are_listed_and_left_out_without_warnings(plain):
    assert plain["warnings"] == []
    skipped = plain["md"].split("## Skipped folders")[1].split("\n## ")[0]
    for name, value in ((NAN_RUN, "linear_top1=nan"), (INF_RUN, "knn_top1=inf")):
        assert (f"| {plain['root'] / 'res' / name} | summary.json: non-finite values ({value}); "
                "the run is left out of every cell |") in skipped
    stats = pd.read_csv(plain["out"] / "stats.csv")
    assert set(stats.n) == {3}  # seeds 0-2 only: neither seed 3 counts anywhere


def test_bold_only_accuracy_columns_whose_cis_are_apart():
    """Rows 'a' and 'b' are far apart in every column; only the accuracy one is ranked."""
    rows = [dict(label=label, metric=metric, is_reference=False, mean=v, std=0.01 * v, n=3,
                 ci_low=0.99 * v, ci_high=1.01 * v)
            for label, scale in (("a", 1.0), ("b", 3.0))
            for metric, v in (("linear_top1", 0.9 / scale), ("knn_top1", 0.3 * scale),
                              ("compute.pretrain_flops_per_sample", 1e9 * scale),
                              ("compute.train_samples_per_s", 100.0 * scale))]
    stats = pd.DataFrame(rows)
    assert best_rows(stats, "linear_top1") == {"a"} and best_rows(stats, "knn_top1") == {"b"}
    assert best_rows(stats, "compute.pretrain_flops_per_sample") == set()
    assert best_rows(stats, "compute.train_samples_per_s") == set()
    table = stat_table(stats, pd.DataFrame({"label": ["a", "b"]}),
                       ["linear_top1", "compute.pretrain_flops_per_sample"], "t")
    assert [[c.bold for c in row[1:]] for row in table.rows] == [[True, False], [False, False]]


def test_compute_axis_ticks_are_plain_numbers_in_engineering_units(plain):
    fig = plain["figures"]["compute"]
    flops, time = fig.axes[:2]
    assert flops.get_xlabel() == "pretraining compute (TFLOP)"
    assert time.get_xlabel() == "pretraining time (s)"
    for ax in (flops, time):
        ticks = [t.get_text().replace("−", "-") for t in ax.get_xticklabels()]
        assert ax.xaxis.get_offset_text().get_text() == ""
        assert len(set(ticks)) == len(ticks) >= 3 and all(float(t) >= -10 for t in ticks)
    assert engineering(6e12, "FLOP") == "6 TFLOP" and engineering(999.7e6, "FLOP") == "1 GFLOP"
    assert engineering(3.2e-7, "s") == "320 ns" and engineering(0.0, "FLOP") == "0 FLOP"


def test_no_line_through_a_single_evaluation(plain):
    """Evaluated once, a row is a point with its CI bar in the compute figure, and no curve
    (and no kNN panel at all) in the figure over epochs."""
    for name in ("compute", "curves"):
        for ax in plain["figures"][name].axes:
            for line in ax.get_lines():
                assert line.get_linestyle() == "None" or len(line.get_xdata()) >= 2
    (loss,) = plain["figures"]["curves"].axes
    assert loss.get_title().endswith("pretraining loss")
    assert {len(line.get_xdata()) for line in loss.get_lines()} == {3}


# ------------------------------------------------------------------------------------------
# Writing the report: nothing on error, never a torn file


@pytest.fixture(scope="module")
def lean(tmp_path_factory) -> Path:
    """Two runs whose report is quick to write: CSVs, tables, pages and one figure (loss)."""
    root = tmp_path_factory.mktemp("lean")
    for s in range(2):
        write_run(root, f"mae{s}", "mae", s, {"recon_loss": 0.3}, periodic=False)
    return root


def test_a_failing_report_writes_nothing_and_keeps_the_previous_one(lean, tmp_path,
                                                                    monkeypatch):
    import bench.report.build as report

    def broken(*args):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(report, "_make_figures", broken)
    with pytest.raises(RuntimeError, match="figure failed"):
        write_report([lean], tmp_path / "new")
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    before = write_report([lean], tmp_path / "old").parent
    files = {f.name: f.read_bytes() for f in before.iterdir()}
    monkeypatch.setattr(report, "_make_figures", broken)
    with pytest.raises(RuntimeError):
        write_report([lean], before)
    assert {f.name: f.read_bytes() for f in before.iterdir()} == files  # no temp folder left


def complete(path: Path) -> bool:
    """Whether a report file is whole (each format's own ending) and parses."""
    data = path.read_bytes()
    match path.suffix:
        case ".html":
            return data.endswith(b"</html>\n")
        case ".md":
            return data.startswith(b"# Maskbench report") and data.endswith(b"\n")
        case ".tex":
            return data.endswith(b"\\end{tabular}\n")
        case ".png":
            return data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82")
        case ".svg":
            return data.rstrip().endswith(b"</svg>")
        case ".csv":
            return len(pd.read_csv(path).columns) > 0 and data.endswith(b"\n")
    raise AssertionError(f"unexpected report file {path}")


def test_concurrent_reports_never_leave_a_torn_file(lean, tmp_path):
    """Two writers on the same folder (two `bench run` of the same runs finishing together)
    while a reader reads every file over and over: each file it sees is whole."""
    out = tmp_path / "report"
    write_report([lean], out)
    torn, errors, done = [], [], threading.Event()

    def read() -> None:
        while not done.is_set():
            for f in out.iterdir():
                if not f.name.startswith(".") and f.is_file() and not complete(f):
                    torn.append(f.name)

    def write() -> None:
        try:
            write_report([lean], out)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write) for _ in range(2)]
    reader.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    done.set()
    reader.join()
    assert errors == [] and torn == []
    names = {f.name for f in out.iterdir()}
    assert {"report.html", "report.md", "stats.csv", "curves.png", "tables.tex"} <= names
    assert all(complete(out / n) for n in names)


def test_fill_by_distance_for_every_method_and_qbheats_own_table(synthetic_report, tmp_path):
    """Every row that reports the fill by distance gets it in the fill table; QB-Heat's own
    diagnostics (declared by its card) get a table of their own, titled by the card; neither
    lands in the pretext-task table; no such runs, no such tables.
    (write_report's sections on real runs: test_report_real.py.)"""
    assert "QB-Heat: the learned operators" not in (synthetic_report / "report.md").read_text()
    radius = [1.02, 1.05, 1.08]  # mean 1.05, sd 0.03: half-width t * 0.03 / sqrt(3)
    for s in range(3):
        write_run(tmp_path, f"qb{s}", "qbheat", s, {
            "knn_top1": 0.7, "recon_loss": 0.4, "recon_loss_d1": 0.2, "recon_loss_d2": 0.4,
            "recon_loss_d3plus": 0.6, "heat_radius_right": radius[s], "heat_commutator": 0.25})
        write_run(tmp_path, f"mae{s}", "mae", s, {"knn_top1": 0.7, "recon_loss_d1": 0.3})
    a = analyse([tmp_path], "mae")
    section = build_section(a, "fashion-mnist", "vit-micro", True)
    fill = to_markdown(section.fill)
    assert fill.splitlines()[0] == "| row | recon loss d=1 | recon loss d=2 | recon loss d≥3 |"
    assert "| qbheat | 0.20 ± 0.00 (n=3) | 0.40 ± 0.00 (n=3) | 0.60 ± 0.00 (n=3) |" in fill
    assert "| mae | 0.30 ± 0.00 (n=3) | – | – |" in fill
    assert list(section.methods) == ["qbheat"]
    table = section.methods["qbheat"]
    assert table.title == "fashion-mnist · vit-micro: QB-Heat: the learned operators"
    md = to_markdown(table)
    assert md.splitlines()[0] == "| row | ρ(I+A) | ‖AB−BA‖/(‖A‖‖B‖) |"
    half = T_975_2 * 0.03 / math.sqrt(3)
    assert f"| qbheat | 1.05 ± {half:.2f} (n=3) | 0.25 ± 0.00 (n=3) |" in md
    task = next(t for t in section.tables if "pretext-task" in t.title)
    assert task.columns == ["row", "test recon loss"]  # the fill figures are not task metrics
    assert r"$\rho$(I+A)" in to_latex(table)
    out = tmp_path / "report"
    write_report([tmp_path], out, baseline="mae")
    md = (out / "report.md").read_text()
    assert md.index("## The fill by distance") < md.index("## QB-Heat: the learned operators")


def test_a_killed_reports_staging_folder_is_removed_by_the_next_report(lean, tmp_path):
    """A report killed while writing (SIGKILL: no cleanup ran) leaves OUT/.report-*; the next
    report removes it, and never the stage of a report still writing (its process holds the
    stage's lock), nor one just being set up (younger than STAGE_GRACE_S)."""
    import os
    import signal
    import subprocess
    import sys

    from bench.report.staging import STAGE_GRACE_S, STAGE_LOCK, _remove_abandoned_stages

    out = tmp_path / "report"
    code = ("import sys, time\nfrom pathlib import Path\nfrom bench.report.staging import staged\n"
            "with staged(Path(sys.argv[1])) as stage:\n"
            "    (stage / 'runs.csv').write_text('x')\n    print(stage, flush=True)\n"
            "    time.sleep(120)\n")
    writer = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[2])
    stage = Path(writer.stdout.readline().strip())
    old = os.stat(stage).st_mtime - 2 * STAGE_GRACE_S
    os.utime(stage / STAGE_LOCK, (old, old))
    _remove_abandoned_stages(out)
    assert stage.is_dir()  # its writer is alive
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    young = tmp_path / "report" / ".report-young"  # no lock yet: being set up, or pre-lock
    young.mkdir()
    write_report([lean], out)
    assert not stage.exists() and young.is_dir()
    os.utime(young, (old, old))
    write_report([lean], out)
    assert not young.exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_fill_contribution_table_beside_the_fill_by_distance(tmp_path):
    """recon_loss with the learned fill, the constant fill and QB-Heat's copy, one row per
    method (mae has no copy), in a section after the fill by distance; not a task metric."""
    for s in range(3):
        write_run(tmp_path, f"qb{s}", "qbheat", s, {
            "knn_top1": 0.7, "recon_loss": 0.7, "recon_loss_fill_const": 1.6,
            "recon_loss_fill_copy": 0.85, "recon_loss_d1": 0.2})
        write_run(tmp_path, f"mae{s}", "mae", s, {"knn_top1": 0.7, "recon_loss": 0.5,
                                                  "recon_loss_fill_const": 0.9})
    section = build_section(analyse([tmp_path], "mae"), "fashion-mnist", "vit-micro", True)
    md = to_markdown(section.contribution)
    assert md.splitlines()[0] == ("| row | test recon loss | recon loss, constant fill | "
                                  "recon loss, copy (A = B = 0) |")
    assert "| qbheat | 0.70 ± 0.00 (n=3) | 1.60 ± 0.00 (n=3) | 0.85 ± 0.00 (n=3) |" in md
    assert "| mae | 0.50 ± 0.00 (n=3) | 0.90 ± 0.00 (n=3) | – |" in md
    task = next(t for t in section.tables if "pretext-task" in t.title)
    assert task.columns == ["row", "test recon loss"]
    write_report([tmp_path], tmp_path / "report", baseline="mae")
    report = (tmp_path / "report" / "report.md").read_text()
    assert report.index("## The fill by distance") < report.index(
        "## What the learned fill contributes")


def test_recipes_one_shared_or_tuned_and_trials_are_no_rows(tmp_path):
    """Rows at one recipe: "one shared recipe". A trial (val_fraction set) is no row; with
    tuning.json naming each row's runs: "each at its tuned recipe" and the tuning table; rows
    that differ untuned are said to mix strategy with recipe."""
    shared = tmp_path / "shared"
    for s in range(2):
        write_run(shared, f"mae{s}", "mae", s, {"linear_top1": 0.8}, base_lr=1.5e-3)
        write_run(shared, f"qb{s}", "qbheat", s, {"linear_top1": 0.8}, base_lr=1.5e-3)
    write_run(shared / "tune", "trial", "mae", 0, {"val_linear_top1": 0.9}, base_lr=1e-4,
              val_fraction=0.1)
    a = analyse([shared], "mae")
    assert "trial" not in set(a.ok.run_id) and set(a.cells.method) == {"mae", "qbheat"}
    content = build_section(a, "fashion-mnist", "vit-micro", True).content
    assert any(isinstance(c, str) and c.startswith("Recipes: one shared recipe for every row "
                                                   "(base_lr 0.0015") for c in content)
    tuned = tmp_path / "tuned"
    for s in range(2):
        write_run(tuned, f"mae{s}", "mae", s, {"linear_top1": 0.8}, base_lr=1e-4, warmup=0.05)
        write_run(tuned, f"qb{s}", "qbheat", s, {"linear_top1": 0.8}, base_lr=1.5e-3)
        write_run(tuned, f"ref{s}", "random-init", s, {"linear_top1": 0.7}, base_lr=2e-3)
    (tuned / "tuning.json").write_text(json.dumps({
        "metric": "linear_top1", "scored_as": "val_linear_top1", "val_fraction": 0.1,
        "grid": {"base_lr": [1e-4, 1.5e-3]}, "trial_seeds": [0],
        "rows": [{"method": m, "options": {}, "row": m, "chosen": {"base_lr": lr},
                  "runs": [f"{name}{s}" for s in range(2)],
                  "trials": [{"recipe": {"base_lr": x}, "score": sc, "scores": [sc],
                              "run_ids": ["t"]} for x, sc in ((1e-4, 0.9), (1.5e-3, 0.7))]}
                 for m, name, lr in (("mae", "mae", 1e-4), ("qbheat", "qb", 1.5e-3))]}))
    a = analyse([tuned], "mae")
    section = build_section(a, "fashion-mnist", "vit-micro", True)
    assert any(isinstance(c, str) and "each at its tuned recipe" in c for c in section.content)
    recipe = next(t for t in section.tables if t.title.endswith("recipe of each row"))
    md = to_markdown(recipe)
    assert "| 0.0001 | 0.05 | transformer, depth 2 | 0.05 of the schedule | bench tune |" in md
    # A reference row pretrains nothing: its recipe is no setting its label brackets.
    assert "| random-init | 0.002 |" in md and "– (reference row)" in md
    write_report([tuned], tuned / "report", baseline="mae")
    report = (tuned / "report" / "report.md").read_text()
    assert "## Tuning" in report and "| **mae** | **0.0001** | **90.0** | **1** |" in report
    (tuned / "tuning.json").unlink()
    content = build_section(analyse([tuned], "mae"), "fashion-mnist", "vit-micro", True).content
    assert any(isinstance(c, str) and "rows differ in recipe and not all were tuned" in c
               for c in content)
