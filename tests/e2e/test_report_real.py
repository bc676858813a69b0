"""The report on real tiny runs (two methods and the reference rows, two seeds each, periodic
kNN and the tran1 probe), and its report.html opened in headless Chromium (Debian `chromium`):
every figure must decode and the main table must be there. Without Chromium the browser test
skips, except under CI=true, where it fails."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.core import files, store
from bench.core.references import REFERENCE_ROWS
from bench.data.streaming import load_imagefolder
from bench.plan.sweep import resolve_run
from bench.report.build import write_report
from bench.run.reconstructions import recon_indices
from bench.run.train import train_run
from tests.helpers import require_fashion_mnist, tiny_config, tiny_text_corpus, write_cifar


@pytest.fixture(scope="module")
def real_report(tmp_path_factory, digits) -> Path:
    root = tmp_path_factory.mktemp("real")
    small = dict(epochs=2, eval_every=1, train_limit=128, eval_train_limit=64, eval_test_limit=32,
                 probe_steps=10, protocols="linear,knn,tran1", tran1_epochs=1, tran1_min_steps=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # models this small only lose to thread contention on a busy CPU
    try:
        for method in ("mae", "qbheat", *REFERENCE_ROWS):
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


def test_recon_indices_take_the_first_image_of_each_class_in_turn():
    labels = torch.tensor([5, 0, 5, 0, 2, 5, 0])
    assert recon_indices(labels, 8).tolist() == [1, 4, 0, 3, 2, 6, 5]  # 0 2 5, 0 5, 0 5
    assert recon_indices(labels, 2).tolist() == [1, 4]
    assert recon_indices(torch.arange(20) % 10, 8).tolist() == list(range(8))


def test_reconstructions_show_test_images_across_classes(real_report, digits):
    """digits' test split opens 0, 5, 0, 5, ...: the grid shows the first test image of each
    class instead, the same for every method."""
    test = digits.eval_split("test", 32)
    assert set(test.y[:8].tolist()) == {0, 5}
    index = recon_indices(test.y)
    assert test.y[index].tolist() == sorted(set(test.y.tolist()))[:8]
    paths = list(real_report.parent.glob(f"*/{files.RECONSTRUCTIONS}"))
    assert len(paths) == 4  # mae and qbheat, two seeds each
    for path in paths:
        images = store.load_torch(path)["images"]
        assert torch.allclose(images, test.x[index].float() / 255, atol=1e-6)


def test_qbheat_runs_record_fill_diagnostics(real_report):
    """At the end (summary.json) and at --eval-every points (metrics.jsonl): QB-Heat's operator
    figures and every method's loss by distance; the report's fill table and QB-Heat's own section show them."""
    runs = [json.loads(p.read_text()) for p in real_report.parent.glob("*/summary.json")]
    heat = {"heat_commutator", "heat_radius_right", "heat_radius_left", "heat_radius_down",
            "heat_radius_up", "heat_norm_A", "heat_norm_B"}
    for summary in runs:
        metrics = set(summary["metrics"])
        assert (heat <= metrics) == (summary["method"] == "qbheat"), summary["method"]
        if summary["method"] in ("qbheat", "mae"):
            assert "recon_loss_d1" in metrics
            curve = (real_report.parent / summary["run_id"] / "metrics.jsonl").read_text()
            first = json.loads(curve.splitlines()[0])
            assert first["epoch"] == 1 and "recon_loss_d1" in first
            assert (heat <= set(first)) == (summary["method"] == "qbheat")
    qbheat = [s["metrics"] for s in runs if s["method"] == "qbheat"]
    assert all(m["heat_norm_A"] > 0 and m["heat_commutator"] >= 0 for m in qbheat)  # trained
    md = (real_report / "report.md").read_text()
    assert "## The fill by distance" in md and "## QB-Heat: the learned operators" in md


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def page_state(page: Path, profile: Path, width: int = 1024) -> dict[str, str]:
    """The data attributes report.html's script sets on <body> after load, as Chromium sees."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={profile}", f"--window-size={width},800", "--virtual-time-budget=10000",
           "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body))


@pytest.mark.browser
def test_report_opens_in_headless_chromium(real_report, tmp_path):
    """Every figure decodes, the main table has rows and the page does not scroll sideways
    (at 1024 or 640 px: wide tables wrap their text cells or scroll in their own box); a
    corrupted figure is caught."""
    page = (real_report / "report.html").read_text()
    n = page.count("data:image/png;base64,iVBOR")
    assert n >= 5  # loss and linear predictability by distance, the curves, reconstructions
    state = page_state(real_report / "report.html", tmp_path / "profile")
    assert state == {"figures-total": str(n), "figures-loaded": str(n), "main-table": "present",
                     "overflow": "none"}
    assert page_state(real_report / "report.html", tmp_path / "profile", 640)["overflow"] == "none"
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1))
    assert page_state(broken, tmp_path / "profile")["figures-loaded"] == str(n - 1)


# ---------------------------------------------------------------- every dataset kind, end to end
# One tiny run folder per kind the README lists (labelled ones also hold a random-init row),
# trained once and reported through `bench report`; text is written in each source's own
# format (WordNet data.* lines, `bible -f` output, .txt paragraphs), images and CIFAR files
# as tests/data/test_streaming.py writes them.

TINY = dict(epochs=1, batch_size=16, train_limit=16, eval_train_limit=48, eval_test_limit=24,
            probe_steps=5, protocols="linear,knn", decoder_dim=32, decoder_depth=1,
            decoder_heads=2)
TEXT = dict(vocab_size=120, block_length=16)
KJV_BOOKS = ("Ge", "Mat", "Rom")  # law, gospels, epistles


def write_wordnet(folder: Path) -> None:
    """data.noun/verb/adj/adv in WordNet's format (offset, lex_filenum, ... | gloss)."""
    corpus = tiny_text_corpus()
    folder.mkdir()
    lines = [f"{i:08d} {3 + label:02d} n 01 word 0 000 | {text}\n"
             for i, (text, label) in enumerate(zip(corpus.train_texts + corpus.test_texts,
                                                   corpus.train_labels + corpus.test_labels))]
    (folder / "data.noun").write_text("  license header\n" + "".join(lines))
    for pos in ("verb", "adj", "adv"):
        (folder / f"data.{pos}").write_text("  license header\n")


def write_kjv(path: Path) -> None:
    """`bible -f` output: one 'REF TEXT' line per verse, the book deciding the genre."""
    corpus = tiny_text_corpus()
    texts = corpus.train_texts + corpus.test_texts
    labels = corpus.train_labels + corpus.test_labels
    path.write_text("".join(f"{KJV_BOOKS[label]}1:{i + 1} {text}\n"
                            for i, (text, label) in enumerate(zip(texts, labels))))


def write_text_dir(folder: Path) -> None:
    folder.mkdir()
    texts = tiny_text_corpus().train_texts
    (folder / "a.txt").write_text("\n\n".join(" ".join(texts[i:i + 4]) for i in range(0, 160, 4)))


KINDS = ("fashion-mnist", "wordnet-glosses", "kjv-verses", "text-dir", "imagefolder",
         "cifar10")


@dataclass
class KindReports:
    """The runs of every kind, one `bench report` over all labelled kinds together and one on
    the unlabelled text alone (a report with no accuracy anywhere)."""

    folders: dict[str, Path]
    labelled: str  # report.md
    unlabelled: str
    printed: str  # what both `bench report` printed (stdout and stderr)


def train_kind(root: Path, kind: str, images: Path) -> Path:
    """A results folder with the kind's runs: mae and random-init, or mae and interp on text-dir
    (unlabelled data refuses reference rows)."""
    methods, data, extra = ("mae", "random-init"), None, {}
    if kind == "wordnet-glosses":
        write_wordnet(root / "wordnet")
        extra = dict(TEXT, data_root=str(root / "wordnet"))
    elif kind == "kjv-verses":
        write_kjv(root / "kjv.txt")
        extra = dict(TEXT, data_root=str(root / "kjv.txt"))
    elif kind == "text-dir":
        write_text_dir(root / "texts")
        methods, extra = ("mae", "interp"), TEXT
    elif kind == "imagefolder":
        data = load_imagefolder(str(images), image_size=32, patch_size=4)
    name = {"text-dir": f"text-dir:{root / 'texts'}",
            "imagefolder": f"imagefolder:{images}"}.get(kind, kind)
    if kind == "cifar10":
        extra = dict(data_root=str(root / "cifar"))
    for method in methods:
        cfg = resolve_run(tiny_config(method=method, dataset=name, **TINY, **extra))
        assert train_run(cfg, root / kind / cfg.run_id, progress=False, data=data)["status"] == "ok"
    return root / kind


@pytest.fixture(scope="module")
def kind_reports(tmp_path_factory, image_folder) -> KindReports:
    """Fashion-MNIST needs Debian's package: left out without it (its test skips, or fails
    under CI)."""
    root = tmp_path_factory.mktemp("kinds")
    kinds = list(KINDS)
    try:
        require_fashion_mnist()
    except pytest.skip.Exception:
        kinds.remove("fashion-mnist")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MASKBENCH_CACHE", str(root / "cache"))
        mp.setenv("MASKBENCH_DATA_WORKERS", "0")
        write_cifar(root / "cifar", mp, "cifar10", n_train=50, n_test=20)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as real_report: tiny models lose to thread contention
        try:
            folders = {kind: train_kind(root, kind, image_folder) for kind in kinds}
        finally:
            torch.set_num_threads(threads)
    labelled = [str(f) for k, f in folders.items() if k != "text-dir"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        assert main(["report", *labelled, "--out", str(root / "labelled")]) == 0
        assert main(["report", str(folders["text-dir"])]) == 0
    return KindReports(folders, (root / "labelled" / "report.md").read_text(),
                       (folders["text-dir"] / "report" / "report.md").read_text(),
                       out.getvalue())


@pytest.mark.parametrize("kind", KINDS)
def test_bench_report_on_every_dataset_kind(kind_reports, kind):
    """`bench report` exits 0 with each kind's section and its verdict line: the probes'
    accuracy for labelled data (and reconstructions for images), the masked-token metrics and
    no verdict for unlabelled text. digits: test_report_on_real_runs."""
    if kind == "fashion-mnist":
        require_fashion_mnist()
    assert "Traceback" not in kind_reports.printed
    folder = kind_reports.folders[kind]
    md = kind_reports.unlabelled if kind == "text-dir" else kind_reports.labelled
    name = json.loads(next(folder.glob("*/config.json")).read_text())["dataset"]
    assert name.split(":")[0] == kind
    verdict = md.split("## Verdict")[1].split("\n## ")[0]
    # one seed: nothing tested (on labelled data the primary metric's line says why)
    assert re.search(rf"\n- {re.escape(name)} · vit-micro: (\S[^\n]*: )?no verdict: ", verdict)
    section = md.split(f"\n## {name} · vit-micro\n")[1].split("\n## ")[0]
    main_table = section.split("main table**")[1].split("\n\n")[1]
    number = r"\d+(\.\d+)?"  # 1000 and above without decimals (samples/s on a fast machine)
    assert re.search(rf"\n\| mae \| {number} \(n=1\) \| {number} \(n=1\) \|", main_table)
    if kind == "text-dir":  # GFLOPs and samples/s only; masked-token metrics apart
        assert "2 finished runs in 2 rows" in md and "0 failed; 0 folders skipped" in md
        assert main_table.startswith("| row | GFLOPs/sample | samples/s |\n")
        assert "no probe accuracy (unlabelled data" in md and "| masked-token acc % |" in section
        assert not (folder / "report" / "reconstructions.png").exists()
    else:
        assert main_table.startswith("| row | linear top-1 % | kNN top-1 % |")
        assert "\n| random-init |" in main_table
    recon = list(folder.glob(f"*/{files.RECONSTRUCTIONS}"))
    assert len(recon) == (kind in ("fashion-mnist", "imagefolder", "cifar10"))
    if recon:  # in the figure: the same pictures for every row, so no note leaves it out
        assert store.load_torch(recon[0])["images"].shape[0] == 8
        assert "![Reconstructions](reconstructions.png)" in md and str(recon[0]) not in md
