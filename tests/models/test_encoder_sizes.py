"""`bench encoders`: the spec a dataset's card implies, and presets' sizes and FLOPs (exact on
small cases), attention included on a CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

from bench.core.spec import DataSpec
from bench.models.sizes import card_spec, format_sizes, preset_size
from bench.runtime.flops import flop_counter


@pytest.mark.parametrize("dataset, spec", [
    ("fashion-mnist", DataSpec("image", (8, 8), patch_size=4, in_chans=1)),
    ("cifar10", DataSpec("image", (8, 8), patch_size=4, in_chans=3)),
    ("stl10", DataSpec("image", (12, 12), patch_size=8, in_chans=3)),
    ("imagefolder:/any/where", DataSpec("image", (14, 14), patch_size=16, in_chans=3)),
    ("wordnet-glosses", DataSpec("text", (64,), vocab_size=8000)),
])
def test_card_spec_is_what_a_run_gets(dataset, spec):
    assert card_spec(dataset) == spec


def test_attention_on_a_cpu_is_counted():
    q = torch.randn(2, 4, 16, 8, requires_grad=True)
    counter = flop_counter()
    with counter:
        out = F.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == sdpa_flop_count(q.shape, q.shape, q.shape) > 0
    with counter:
        out.sum().backward()
    assert counter.get_total_flops() == sdpa_backward_flop_count(q.shape, q.shape, q.shape, q.shape)


def test_vit_micro_flops_are_the_analytic_count():
    """Per block on N tokens of width D: qkv, projection and the 4x MLP are 24 N D^2, the two
    attention products 4 N^2 D; the patch embedding 2 N (C p^2) D."""
    row = preset_size("vit-micro", card_spec("fashion-mnist"))
    n, k, d, depth = 64, 16, 128, 4
    embed = 2 * n * 16 * d  # every patch is embedded; the block path then keeps k tokens
    blocks = lambda tokens: depth * (24 * tokens * d * d + 4 * tokens * tokens * d)  # noqa: E731
    assert row["flops_full"] == embed + blocks(n)
    assert row["flops_block"] == embed + blocks(k)
    assert (row["grid"], row["block"], row["kind"]) == ("8x8", "4x4", "token")


def test_resnet18_preset_size_on_fashion_mnist():
    """Stem + layer1 (151,232), the projection to 192 and its LayerNorm: 0.16M in all."""
    row = preset_size("cnn-resnet18", card_spec("fashion-mnist"))
    assert row["params"] == 151_232 + (64 * 192 + 192) + 2 * 192 == 164_096
    assert row["kind"] == "dense" and 0 < row["flops_block"] < row["flops_full"]
    table = format_sizes([{**row, "dataset": "fashion-mnist"}])
    assert "cnn-resnet18" in table and "0.164M" in table and "8x8 grid" in table


def test_list_and_encoders_show_the_sizes_on_the_dataset(capsys):
    """`bench list --dataset` and `bench encoders --dataset` print every image preset's
    parameters and FLOPs on that dataset's grid (the name alone hides a CNN cut at stride 4)."""
    import json

    from bench.cli import main
    from bench.models.sizes import preset_size

    assert main(["list", "--dataset", "digits", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["encoder_sizes"]
    by_name = {r["encoder"]: r for r in rows}
    spec = card_spec("digits")
    assert by_name["cnn-resnet18"]["params"] == preset_size("cnn-resnet18", spec)["params"]
    assert {r["grid"] for r in rows} == {"8x8"} and "cnn-mobilenetv3" in by_name
    assert main(["list", "--dataset", "digits"]) == 0
    text = capsys.readouterr().out
    assert "encoder sizes on digits:" in text and "methods:" in text
    assert main(["encoders", "--dataset", "digits"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("cnn-resnet18") for line in lines)
