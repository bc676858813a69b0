"""Issue 3 end to end: the three strategies on a ViT, and QB-Heat on both CNN presets."""

from bench.cli import main
from bench.core import store
from tests.helpers import TINY, run_dirs


def test_three_methods_vit_end_to_end(tmp_path):
    out = tmp_path / "vit"
    assert main(["run", "--methods", "qbheat,mae,interp", "--out", str(out), *TINY, "--epochs", "1"]) == 0
    summaries = [store.read_json(d / "summary.json") for d in run_dirs(out)]
    assert sorted(s["method"] for s in summaries) == ["interp", "mae", "qbheat"]
    assert all(s["status"] == "ok" for s in summaries)
    report = (out / "report" / "report.md").read_text()
    assert all(f"| {m} |" in report for m in ("qbheat", "mae", "interp"))


def test_qbheat_with_both_cnn_presets(tmp_path):
    for encoder in ("cnn-resnet-micro", "cnn-convnext-micro"):
        out = tmp_path / encoder
        assert main(["run", "--methods", "qbheat", "--encoder", encoder, "--out", str(out), *TINY, "--epochs", "1"]) == 0
        (run_dir,) = run_dirs(out)
        s = store.read_json(run_dir / "summary.json")
        assert s["status"] == "ok" and s["encoder"] == encoder
        assert 0.0 < s["metrics"]["knn_top1"] <= 1.0


def test_mask_versus_fill_ablation_grid(tmp_path):
    """{random, block} x {mask token, predicted}: all four cells run; interp on a block says
    it extrapolates."""
    out = tmp_path / "grid"
    args = ["run", "--out", str(out), *TINY, "--epochs", "1"]
    assert main([*args, "--methods", "mae,qbheat,interp"]) == 0
    assert main([*args, "--methods", "mae", "mae.visible=block"]) == 0
    summaries = [store.read_json(d / "summary.json") for d in run_dirs(out)]
    assert len(summaries) == 4 and all(s["status"] == "ok" for s in summaries)
    from methods.base import build_method

    interp_block = build_method("interp", {"visible": "block"}, 16, "image", "token")
    assert "extrapolat" in interp_block.describe((8, 8)).lower()
