"""Sweep files and run expansion: grid x zip x seeds, stable run ids, one-line errors for bad
specs, `sweep --dry-run`, and `run` going through the same expansion."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from bench.api import split_launcher_settings
from bench.cli import main
from bench.core.config import differing_keys
from bench.core.errors import ConfigError, IncompatibleError
from bench.launch.slurm import slurm_settings
from bench.plan.sweep import expand, load_spec

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"

SPEC = """
dataset = "digits"
epochs = 1
# extra
seeds = [0, 1]

[grid]
method = ["mae", "interp"]
mae.mask_ratio = [0.5, 0.75]

[zip]
batch_size = [32, 64]
base_lr = [1e-3, 2e-3]

[slurm]
partition = "gpu"
gpus_per_task = 1
"""


def spec_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def good_spec(tmp_path: Path) -> Path:
    return spec_file(tmp_path, SPEC)


def test_grid_zip_seeds_expand_to_every_combination(tmp_path):
    runs = load_spec(good_spec(tmp_path)).runs()
    # method x mae.mask_ratio (interp ignores MAE's option: its runs coincide) x zip x seeds
    assert len(runs) == (2 + 1) * 2 * 2
    assert len({r.run_id for r in runs}) == len(runs)
    assert {(r.batch_size, r.base_lr) for r in runs} == {(32, 1e-3), (64, 2e-3)}
    assert {r.options.get("mask_ratio") for r in runs if r.method == "mae"} == {0.5, 0.75}
    assert differing_keys(runs) == ["base_lr", "batch_size", "mae.mask_ratio", "method", "seed"]


def test_run_id_ignores_paths_hardware_and_launcher_settings(tmp_path):
    base = load_spec(good_spec(tmp_path)).runs()
    moved = load_spec(spec_file(tmp_path, SPEC.replace(
        'partition = "gpu"', 'partition = "other"\ncpus_per_task = 32'))).override(
        {"device": "cuda:1", "data_root": "/elsewhere"}).runs()
    assert [r.run_id for r in base] == [r.run_id for r in moved]
    assert {r.device for r in moved} == {"cuda:1"}
    assert expand({"dataset": "digits", "epochs": 2})[0].run_id != base[0].run_id


@pytest.mark.parametrize(
    "change,message",
    [
        (("# extra", "epochz = 3\n"), r"unknown key epochz; valid: seeds, out, grid, zip, slurm, .*epochs"),
        (("# extra", "mae.decoder = 1"), r"unknown option mae.decoder; valid: mae.block_position, mae.mask_ratio"),
        (("epochs = 1", 'epochs = "many"'), r"epochs='many': expected int"),
        (("# extra", "[maee]\nx = 1\n"), r"unknown key maee.x: 'maee' is not a method; methods: interp, mae, qbheat"),
        (("# extra", "random-init.x = 1\n"), r"random-init is a reference row and takes no options"),
        (("# extra", "seed = 3\n"), r"give seeds = \[0, 1, 2\]"),
        (("seeds = [0, 1]", "seeds = 2"), r"seeds must be a non-empty list of integers"),
        (('mae.mask_ratio = [0.5, 0.75]', 'mae.mask_ratio = 0.5'), r"grid.mae.mask_ratio must be a non-empty list"),
        (('mae.mask_ratio = [0.5, 0.75]', 'mae.mask_ratio = [0.5, 1.5]'), r"mask_ratio must be in \(0, 1\)"),
        (('method = ["mae", "interp"]', 'methods = ["mae"]'), r"unknown key grid.methods; valid:"),
        (("base_lr = [1e-3, 2e-3]", "base_lr = [1e-3]"), r"the lists in \[zip\] differ in length: \[1, 2\]"),
        (('partition = "gpu"', 'partitoin = "gpu"'), r"unknown option slurm.partitoin; valid: slurm.account, .*slurm.time_min"),
        (("gpus_per_task = 1", "gpus_per_task = -1"), r"slurm: gpus_per_task must be >= 0"),
        (("gpus_per_task = 1", "sbatch = 3"), r"sbatch must be a table"),
        (("[grid]", "[grid"), r"not valid TOML"),
    ],
)
def test_bad_spec_one_line_error_naming_key(tmp_path, change, message):
    path = spec_file(tmp_path, SPEC.replace(*change))
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    text = str(err.value)
    assert re.search(message, text), text
    assert text.startswith(f"{path}: ") and "\n" not in text


def test_cli_reports_spec_errors_in_one_line_and_writes_nothing(tmp_path, capsys):
    path = spec_file(tmp_path, SPEC.replace("# extra", "mae.decoder = 1"))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "mae.decoder" in err and len(err.splitlines()) == 1
    assert main(["sweep", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read sweep spec" in capsys.readouterr().err
    assert not out.exists()


def test_dry_run_lists_runs_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sweep", str(good_spec(tmp_path)), "--dry-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    runs = load_spec(good_spec(tmp_path)).runs()
    assert printed[0] == f"{len(runs)} runs (0 already done, {len(runs)} to run) -> {out}"
    assert printed[1] == "runs differ in: base_lr, batch_size, mae.mask_ratio, method, seed"
    listed = [line.split()[1] for line in printed[2:] if line.startswith("+ ")]
    assert listed == [r.run_id for r in runs]
    assert "+ " + runs[0].run_id + "  new" in printed[2]
    assert not out.exists()


def test_command_line_settings_override_spec_axes(tmp_path, capsys):
    path = good_spec(tmp_path)
    assert main(["sweep", str(path), "--dry-run", "--seeds", "3", "method=mae",
                 "mae.mask_ratio=0.6", "slurm.partition=x"]) == 0
    listed = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line[0] == "+"]
    spec = load_spec(path).override({"method": "mae", "mae.mask_ratio": 0.6})
    spec.seeds = [3]
    runs = spec.runs()
    assert listed == [r.run_id for r in runs] and len(runs) == 2
    assert {(r.method, r.seed, r.options["mask_ratio"]) for r in runs} == {("mae", 3, 0.6)}


def test_run_and_sweep_expand_the_same_runs(tmp_path, capsys):
    """`bench run --methods a,b --seeds ...` is a sweep with a method grid: same run ids."""
    path = spec_file(tmp_path, 'dataset = "digits"\nepochs = 1\nseeds = [0, 2]\n\n'
                               '[grid]\nmethod = ["mae", "random-init"]\n')
    assert main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "a")]) == 0
    from_spec = capsys.readouterr().out.splitlines()[2:]
    assert main(["run", "--methods", "mae,random-init", "--seeds", "0,2", "--dataset", "digits",
                 "--epochs", "1", "--dry-run", "--out", str(tmp_path / "a")]) == 0
    assert capsys.readouterr().out.splitlines()[2:] == from_spec
    assert len(from_spec) == 4


def test_example_sweeps_load_and_expand():
    specs = sorted(SWEEPS.glob("*.toml"))
    assert {p.stem for p in specs} >= {"fmnist-compare", "mask-ratio"}
    for path in specs:
        spec = load_spec(path)
        runs = spec.runs()
        assert len(runs) == len({r.run_id for r in runs}) > 1, path
        slurm_settings(spec.slurm)


def test_slurm_words_become_the_slurm_table():
    run, slurm = split_launcher_settings({"epochs": "3", "slurm.partition": "gpu",
                                          "slurm.sbatch.exclusive": "true",
                                          "slurm.sbatch.reservation": "r"})
    assert run == {"epochs": "3"}
    assert slurm == {"partition": "gpu", "sbatch": {"exclusive": "true", "reservation": "r"}}
    settings = slurm_settings({**slurm, "setup": "module load cuda"})
    assert settings.sbatch == {"exclusive": True, "reservation": "r"}
    assert settings.setup == ["module load cuda"]


def test_qbheat_readings_dry_run(tmp_path, capsys):
    """16 QB-Heat cells (position x step x norm x at) + MAE, and the 16x16 cell (QB-Heat's
    paper reading and MAE at 2-px patches), 3 seeds: 57 runs, differing in exactly those four
    options, the patch size, the method and the seed; every combination once per seed."""
    path = SWEEPS / "qbheat-readings.toml"
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--dry-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"57 runs (0 already done, 57 to run) -> {out}"
    assert printed[1] == ("runs differ in: method, patch_size, qbheat.at, qbheat.norm, "
                          "qbheat.position, qbheat.step, seed")
    runs = load_spec(path).runs()
    assert [line.split()[1] for line in printed[2:] if line.startswith("+ ")] == [
        r.run_id for r in runs]
    big = [r for r in runs if r.patch_size == 2]
    assert sorted((r.method, r.seed) for r in big) == [
        ("mae", s) for s in range(3)] + [("qbheat", s) for s in range(3)]
    assert all(r.options.get("position", "quadrant") == "quadrant" for r in big)
    runs = [r for r in runs if r.patch_size is None]
    cells = {}
    for r in runs:
        key = r.method if r.method == "mae" else tuple(
            r.options[k] for k in ("position", "step", "norm", "at"))
        cells.setdefault(key, []).append(r.seed)
    assert cells.pop("mae") == [0, 1, 2]
    assert set(cells) == set(itertools.product(("quadrant", "random"), ("token", "block"),
                                               (False, True), ("encoder", "decoder")))
    assert all(sorted(seeds) == [0, 1, 2] for seeds in cells.values())
    assert {(r.dataset, r.encoder, r.epochs) for r in runs} == {("fashion-mnist", "vit-micro", 20)}
    assert not out.exists()


def test_a_dry_run_checks_the_grid_the_run_trains_on(tmp_path, monkeypatch):
    """Planning (a dry run too) checks the mask ratio against `planned_grid`, read from the
    dataset cards and the text defaults without loading data: it is the grid of the loaded
    data (images: the encoder's; text: the token block, or the window of sentences)."""
    from bench.core.config import RunConfig
    from bench.data import dataset_key, load_dataset
    from bench.data.geometry import planned_grid

    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp_path / "cache"))
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(30):
        (texts / f"{i}.txt").write_text(f"Doc {i} has words. It has more words here.\n\n"
                                        f"A second part {i}. It ends now.\n")
    cases = [RunConfig(dataset="digits"),
             RunConfig(dataset=f"text-dir:{texts}", vocab_size=60),
             RunConfig(dataset=f"text-dir:{texts}", vocab_size=60, block_length=16),
             RunConfig(dataset=f"text-dir:{texts}", vocab_size=60, granularity="sentence",
                       sentences=3, sentence_length=8)]
    for cfg in cases:
        data = load_dataset(*dataset_key(cfg))
        grid = (data.sentences,) if cfg.granularity == "sentence" else data.spec.grid
        assert planned_grid(cfg, data.spec.modality) == grid, cfg.dataset


def test_seeds_out_of_range_are_refused_when_planning():
    """Seeds beyond what the run's generators take failed inside the real run (an overflow
    naming no seed) and passed a dry run; planning refuses them, naming the seed."""
    from bench import api

    for seed in (-1, 2**32, 10**20):
        with pytest.raises(ConfigError, match=f"seed {seed} is out of range"):
            api.plan(["mae"], seeds=[seed], dataset="digits")
    assert api.plan(["mae"], seeds=[2**32 - 1], dataset="digits")[0].seed == 2**32 - 1


@pytest.mark.parametrize("encoder, method, options, works", [
    ("cnn-resnet-micro", "mae", {}, True),  # masked convolution
    ("cnn-convnext-micro", "interp", {}, True),
    ("cnn-mobilenetv3", "mae", {}, False),  # squeeze-excitation: blocks only
    ("cnn-mobilenetv3", "mae", {"mae.visible": "block"}, True),
    ("cnn-mobilenetv3", "interp", {"interp.visible": "block"}, True),
    ("cnn-mobilenetv3", "qbheat", {}, True),
    ("vit-micro", "interp", {}, True),
])
def test_every_fill_plans_on_a_cnn_where_its_layout_can_be_encoded(encoder, method, options,
                                                                   works):
    """One check (MethodCard.check, with the options) decides; it names what would work."""
    settings = {"method": method, "encoder": encoder, "dataset": "digits", **options}
    if works:
        assert expand(settings)[0].encoder == encoder
        return
    with pytest.raises(IncompatibleError, match=r"visible=random needs a masked-convolution or "
                                                r"token encoder.*cnn-resnet-micro.*visible=block"):
        expand(settings)


def test_patch_size_is_a_run_field_checked_when_planning(tmp_path, capsys):
    """None keeps the card's patch size and every earlier run id; a size that does not divide
    the images, a patch size on text, or one no stage of a CNN has: one line, exit 2, dry run
    too."""
    from bench.core.config import RunConfig

    assert RunConfig(patch_size=None).run_id == RunConfig().run_id
    assert RunConfig(patch_size=2).run_id != RunConfig().run_id
    (run,) = expand({"dataset": "fashion-mnist", "patch_size": 2})
    assert run.patch_size == 2
    out = tmp_path / "o"
    for args, message in (
        (["patch_size=3"], "patch_size=3: fashion-mnist images are 32x32 px, not whole patches; "
                           "sizes that fit: 1, 2, 4, 8, 16, 32"),
        (["--dataset", "wordnet-glosses", "patch_size=2"], "patch_size=2: images only"),
        (["--encoder", "cnn-convnext-micro", "patch_size=2"],
         "encoder 'cnn-convnext-micro' has no stage at stride 2 (the patch size); its strides: "
         "4, 8, 16, 32; encoders that work at patch_size=2: cnn-mobilenetv3, cnn-resnet-micro"),
    ):
        assert main(["run", "--methods", "qbheat", "--dry-run", "--out", str(out), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and not out.exists()


def test_extra_cells_run_beside_the_grid_at_every_seed(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('dataset = "digits"\nseeds = [0, 1]\n[grid]\nmethod = ["mae", "qbheat"]\n'
                    '[[cell]]\nmethod = "qbheat"\npatch_size = 2\n'
                    '[[cell]]\nmethod = "mae"\n')  # the second repeats a grid cell: kept once
    runs = load_spec(path).runs()
    assert [(r.method, r.patch_size, r.seed) for r in runs] == [
        ("mae", None, 0), ("mae", None, 1), ("qbheat", None, 0), ("qbheat", None, 1),
        ("qbheat", 2, 0), ("qbheat", 2, 1)]
    path.write_text('[[cell]]\npatch_size = "x"\n')
    with pytest.raises(ConfigError, match="patch_size='x': expected int"):
        load_spec(path)
