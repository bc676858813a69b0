"""The report on real tiny runs (two methods and the reference rows, two seeds each, periodic
kNN and the tran1 probe), and its report.html opened in headless Chromium (Debian `chromium`):
every figure must decode and the main table must be there. Without Chromium the browser test
skips, except under CI=true, where it fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from bench.report import write_report
from bench.sweep import resolve_run
from bench.tables import REFERENCES
from bench.train import train_run
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def real_report(tmp_path_factory, digits) -> Path:
    root = tmp_path_factory.mktemp("real")
    small = dict(epochs=2, eval_every=1, train_limit=128, eval_train_limit=64, eval_test_limit=32,
                 probe_steps=10, protocols="linear,knn,tran1", tran1_epochs=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # models this small only lose to thread contention on a busy CPU
    try:
        for method in ("mae", "qbheat", *REFERENCES):
            for seed in (0, 1):
                cfg = resolve_run(tiny_config(method=method, seed=seed, **small))
                train_run(cfg, root / cfg.run_id, progress=False, data=digits)
    finally:
        torch.set_num_threads(threads)
    write_report([root], root / "report")
    return root / "report"


def test_report_on_real_runs(real_report):
    md = (real_report / "report.md").read_text()
    main_table = md.split("main table**")[1].split("\n\n")[1]
    rows = [line.split(" | ")[0].strip("| ") for line in main_table.splitlines()[2:]]
    assert rows == ["mae", "qbheat", "random-init", "raw-input"]
    assert "tran1 top-1 %" in main_table and main_table.count("(n=2)") >= 12
    assert "n < 3: no test" in md  # two seeds: differences, no p-values
    for name in ("metrics", "curves", "compute", "reconstructions"):
        assert (real_report / f"{name}.png").stat().st_size > 5000
    assert "8 finished runs in 4 rows" in md and "0 failed; 0 folders skipped" in md


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def page_state(page: Path, profile: Path) -> dict[str, str]:
    """The data attributes report.html's script sets on <body> after load, as Chromium sees."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body))


@pytest.mark.browser
def test_report_opens_in_headless_chromium(real_report, tmp_path):
    """Every figure decodes and the main table has rows; a corrupted figure is caught."""
    state = page_state(real_report / "report.html", tmp_path / "profile")
    assert state == {"figures-total": "4", "figures-loaded": "4", "main-table": "present"}
    broken = tmp_path / "broken.html"
    page = (real_report / "report.html").read_text()
    broken.write_text(page.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1))
    assert page_state(broken, tmp_path / "profile")["figures-loaded"] == "3"
