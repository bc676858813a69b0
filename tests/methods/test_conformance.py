"""The method contract, checked for every registered method and each modality it supports
(QB-Heat also under a non-default reading of every open option)."""

import pytest
import torch

from bench.core.config import RunConfig
from bench.models.pretrainer import MaskedPretrainer
from bench.models.vit import TransformerEncoder
from methods import method_cards
from methods.base import FILL_SITES, method_class
from tests.helpers import CASES, ENCODER_D, SPECS, D, assert_compiles_as_one_graph, inputs, make


@pytest.mark.parametrize("name,modality,options", CASES)
def test_fill_site_and_width(name, modality, options):
    """A method fills at the encoder or the decoder, at that site's width."""
    method = make(name, modality, options)
    assert method.fill_site(method.options) in FILL_SITES
    assert method.dim == {"encoder": ENCODER_D, "decoder": D}[method.fill_site(method.options)]


@pytest.mark.parametrize("name,modality,options", CASES)
def test_fill_shapes_and_visible_pass_through(name, modality, options):
    method = make(name, modality, options)
    grid = SPECS[modality].grid
    visible = method.choose_visible(3, grid, torch.Generator().manual_seed(0))
    n = SPECS[modality].num_tokens
    assert visible.index.shape[0] == 3 and visible.index.max() < n
    assert (visible.index.diff(dim=1) > 0).all()
    latent = torch.randn(3, visible.count, method.dim)
    filled = method.fill(latent, visible, grid)
    assert filled.shape == (3, n, method.dim)
    picked = filled.gather(1, visible.index.unsqueeze(-1).expand(-1, -1, method.dim))
    assert torch.equal(picked, latent)
    assert torch.isfinite(filled).all()


@pytest.mark.parametrize("name,modality,options", CASES)
def test_same_seed_same_mask(name, modality, options):
    method = make(name, modality, options)
    grid = SPECS[modality].grid
    a = method.choose_visible(4, grid, torch.Generator().manual_seed(7))
    b = method.choose_visible(4, grid, torch.Generator().manual_seed(7))
    c = method.choose_visible(4, grid, torch.Generator().manual_seed(8))
    assert torch.equal(a.index, b.index)
    assert not torch.equal(a.index, c.index)


@pytest.mark.parametrize("name,modality,options", CASES)
def test_gradients_reach_encoder_and_decoder(name, modality, options):
    spec = SPECS[modality]
    torch.manual_seed(0)
    encoder = TransformerEncoder(spec, ENCODER_D, 1, 2)
    model = MaskedPretrainer(spec, encoder, make(name, modality, options), D, 1, 2)
    out = model(inputs(modality), torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for part in (model.encoder.blocks[0].attn.qkv, model.decoder.blocks[0].mlp.fc1, model.decoder.head):
        assert part.weight.grad is not None and part.weight.grad.abs().sum() > 0


def test_every_card_loads_the_class_it_describes():
    """Each method folder's card names a module whose class registers under the card's name
    and takes the card's modalities, encoder kinds and options (the card is the one source)."""
    cards = method_cards()
    assert {"mae", "qbheat", "interp"} <= set(cards.names()) and RunConfig().method in cards
    for name in cards.names():
        card = cards.get(name)
        cls = method_class(name)
        assert cls.card is card and cls.name == name and card.module == f"methods.{name}.method"
        assert (cls.modalities, cls.encoder_kinds, cls.Options) == (
            card.modalities, card.encoder_kinds, card.Options)
        assert card.summary == cls.__doc__.strip().splitlines()[0]


@pytest.mark.parametrize("name,modality,options", CASES)
def test_pretraining_step_compiles_as_one_graph(name, modality, options):
    """On CUDA the step is torch.compile'd by default: every method's forward traces as one
    graph, without recompiling on new masks, matching eager (see assert_compiles_as_one_graph)."""
    spec = SPECS[modality]
    torch.manual_seed(0)
    model = MaskedPretrainer(spec, TransformerEncoder(spec, ENCODER_D, 1, 2),
                             make(name, modality, options), D, 1, 2)
    assert_compiles_as_one_graph(model, inputs(modality, batch=4))
