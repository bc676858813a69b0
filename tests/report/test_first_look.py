"""What a reader of a report sees first, and what `bench report` does when it cannot finish:
machine figures (throughput, seconds) as median and range, no pretraining figures for the
reference rows, the CI caption once, the thread count where rows differ in it; a full disk
or a terminal that cannot print the tables is one line (exit 2) with the previous report
intact; a run folder is never a report's folder."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.report.build import write_report
from bench.report.tables import CI_NOTE
from tests.helpers import require, write_run

SPEED = (800.0, 1200.0, 1000.0)  # samples/s of three seeds: median 1000, range 800-1200


def _runs(root: Path, threads: tuple[int | None, ...] = (None, None, None)) -> Path:
    for s in range(3):
        for method, top1 in (("mae", 0.80), ("qbheat", 0.81)):
            compute = {"train_samples_per_s": SPEED[s]}
            if threads[s] is not None and method == "qbheat":
                compute["threads"] = threads[s]
            elif threads[s] is not None:
                compute["threads"] = 2
            write_run(root, f"{method}{s}", method, s, {"linear_top1": top1 + s / 100},
                      compute=compute)
        write_run(root, f"ri{s}", "random-init", s, {"linear_top1": 0.5})
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("first")
    write_report([_runs(root / "runs")], root / "report")
    return (root / "report" / "report.md").read_text()


def _rows(md: str, title: str) -> list[str]:
    table = md.split(f"vit-micro: {title}**")[1].split("\n\n")[1]
    return table.splitlines()


def test_throughput_is_a_median_and_range_and_reference_rows_pretrain_nothing(report):
    main = _rows(report, "main table")
    assert main[0] == "| row | linear top-1 % | GFLOPs/sample | samples/s |"
    assert main[2] == "| mae | 81.0 ± 2.5 (n=3) | 2.00 ± 0.00 (n=3) | 1000 [800–1200] (n=3) |"
    assert main[4] == "| random-init | 50.0 ± 0.0 (n=3) | – | – |"
    setup = _rows(report, "setup of each row (fairness)")
    assert setup[-1].endswith("| – | (not recorded) |")  # GFLOPs/sample, weight-decay rule
    compute = _rows(report, "compute")
    assert "| 1000 [800–1200] (n=3) | 6.00 [6.00–6.00] (n=3) |" in compute[2]
    assert "0.00 ± 0.00" not in report and "±" not in "".join(c.split("|")[4] for c in main[2:])


def test_the_ci_caption_is_said_once(report):
    assert report.count(CI_NOTE) == 1


def test_thread_counts_show_in_the_setup_table_only_where_rows_differ(tmp_path, report):
    assert "threads" not in report  # not recorded (older runs)
    write_report([_runs(tmp_path / "same", (2, 2, 2))], tmp_path / "a")
    assert "threads" not in (tmp_path / "a" / "report.md").read_text()
    write_report([_runs(tmp_path / "differ", (1, 1, 2))], tmp_path / "b")
    setup = _rows((tmp_path / "b" / "report.md").read_text(), "setup of each row (fairness)")
    assert setup[0].endswith("| weight-decay rule | threads |")
    assert setup[2].endswith("| 2 |") and setup[3].endswith("| 1, 2 |")
    assert setup[4].endswith("| – |")  # random-init recorded none


def _files(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in folder.iterdir()}


def test_a_full_disk_is_one_line_and_the_previous_report_stays(tmp_path, capsys):
    """A real tmpfs filled up to 300 KiB: the report (figures: ~1 MiB) does not fit; exit 2,
    one line naming the folder and Errno 28's words; the report written before is byte for
    byte as it was, and no stage is left behind. (Before: a traceback.)"""
    require(os.geteuid() == 0 and shutil.which("mount") is not None,
            "mounting a tmpfs needs root (CI runs as root)")
    runs = _runs(tmp_path / "runs")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], check=True)
    try:
        out = disk / "report"
        assert main(["report", str(runs), "--out", str(out), "--no-progress"]) == 0
        before = _files(out)
        free = shutil.disk_usage(disk).free
        (disk / "filler").write_bytes(b"\0" * (free - 300 * 1024))
        capsys.readouterr()
        assert main(["report", str(runs), "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: cannot write the report into {out}: "
                                                   "No space left on device")
        assert _files(out) == before
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_terminal_that_cannot_print_the_tables_is_one_line(tmp_path, capsys, monkeypatch):
    """PYTHONIOENCODING=ascii: the report is written, then printing its tables (±, ·) fails:
    one line saying where the report is and how to see it, exit 2. (Before: a traceback.)"""
    runs = _runs(tmp_path / "runs")
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    assert main(["report", str(runs), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: the report is written ({tmp_path / 'r' / 'report.html'}), but "
                   "stdout's encoding (ascii) cannot print its tables: read report.md there, "
                   "or set PYTHONIOENCODING=utf-8"]
    assert (tmp_path / "r" / "report.md").read_text().startswith("# Maskbench report")


@pytest.mark.parametrize("inside", ["", "sub"])
def test_a_run_folder_is_never_a_reports_folder(tmp_path, capsys, inside):
    runs = _runs(tmp_path / "runs")
    run = runs / "mae0"
    before = _files(run)
    assert main(["report", str(runs), "--out", str(run / inside), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {run / inside}") and err.count("\n") == 0
    assert "a report never writes into a run folder; choose another --out" in err
    assert _files(run) == before
