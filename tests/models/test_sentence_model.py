"""Text at the sentence level, model side: the method contract on the sentence grid for every
method (fills receive (S,), visible sentences pass through, float32 fills, one graph under
torch.compile, gradients), the bag-of-words loss on hidden sentences only, and the exact
next-sentence and masked-sentence metrics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.config import RunConfig
from bench.core.spec import DataSpec
from bench.eval.pretext import masked_sentence_metrics
from bench.eval.sentences import next_sentence_top1
from bench.models.build import build_model
from bench.models.pretrainer import PretrainOutput
from bench.models.sentences import SentencePretrainer, slot_spec
from bench.models.vit import TransformerEncoder
from bench.ops.masking import Visible, visible_count
from methods import method_cards
from methods.base import build_method
from tests.helpers import assert_compiles_as_one_graph, recorded_fill

S, L, V, D, E = 8, 6, 40, 16, 32  # sentences, tokens per sentence, vocabulary, decoder, encoder
TEXT_METHODS = [n for n in method_cards().names() if "text" in method_cards().get(n).modalities]
SENTENCE_SPEC = DataSpec("text", (L,), vocab_size=V)


def make_model(name: str, seed: int = 0) -> SentencePretrainer:
    torch.manual_seed(seed)
    method = build_method(name, {}, D, "text", "token", encoder_dim=E)
    with torch.no_grad():  # non-zero QB-Heat operators, so that propagation is exercised
        for p in method.parameters():
            p.normal_(std=0.05)
    encoder = TransformerEncoder(SENTENCE_SPEC, E, 1, 2)
    return SentencePretrainer(slot_spec(SENTENCE_SPEC, S), encoder, method, D, 1, 2)


def windows(batch: int = 3, seed: int = 0) -> torch.Tensor:
    """Token ids `[batch, S, L]`: sentences of 1..L real tokens, [PAD]-padded, and one empty."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, V, (batch, S, L), generator=g)
    lengths = torch.randint(1, L + 1, (batch, S), generator=g)
    x[torch.arange(L) >= lengths.unsqueeze(-1)] = 0
    x[0, 5] = 0  # an empty sentence
    return x


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_fill_receives_the_sentence_grid_and_visible_sentences_pass_through(name: str) -> None:
    model = make_model(name)
    x = windows()
    with recorded_fill(model.method) as calls:
        model(x, torch.Generator().manual_seed(0))
    ((latent, visible, grid, out),) = calls
    k, width = visible_count((S,), model.method.options.mask_ratio), model.method.dim
    assert grid == (S,) == model.spec.grid
    assert latent.shape == (3, k, width) and visible.index.shape == (3, k)
    assert out.shape == (3, S, width)
    assert torch.equal(out.gather(1, visible.index.unsqueeze(-1).expand(-1, -1, width)), latent)
    # What the fill gets comes from the visible sentences only: hidden ones can be anything.
    hidden = ~visible.mask(S)
    other = torch.where(hidden.unsqueeze(-1), torch.randint(4, V, x.shape), x)
    with recorded_fill(model.method) as again:
        model(other, None, visible)
    torch.testing.assert_close(again[0].latent, latent)


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_fill_runs_in_float32_under_bf16_autocast(name: str) -> None:
    """The sentence model fills through the shared MaskedPretrainer.fill: float32 under bf16."""
    model = make_model(name)
    with recorded_fill(model.method) as calls, torch.autocast("cpu", dtype=torch.bfloat16):
        model(windows(), torch.Generator().manual_seed(0))
    ((latent, visible, grid, out),) = calls
    assert latent.dtype == out.dtype == torch.float32
    torch.testing.assert_close(out, model.method.fill(latent, visible, grid), rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_loss_is_bag_of_words_cross_entropy_of_hidden_sentences(name: str) -> None:
    model = make_model(name)
    x = windows()
    out = model(x, torch.Generator().manual_seed(1))
    hidden = ~out.visible.mask(S)
    total, tokens = 0.0, 0
    for b in range(3):
        for s in range(S):
            real = x[b, s][x[b, s] != 0]
            if hidden[b, s] and len(real):  # an empty hidden sentence scores nothing
                total += -F.log_softmax(out.pred[b, s].double(), dim=-1)[real].sum().item()
                tokens += len(real)
    assert tokens > 0
    assert out.loss.item() == pytest.approx(total / tokens, rel=1e-5)
    assert not model.scored(x, out.visible)[0, 5]


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_every_method_sees_the_same_number_of_sentences(name: str) -> None:
    for ratio in (0.5, 0.75):
        method = build_method(name, {"mask_ratio": ratio}, D, "text", "token")
        visible = method.choose_visible(4, (S,), torch.Generator().manual_seed(0))
        assert visible.count == visible_count((S,), ratio) == round(S * (1 - ratio))
        assert visible.mask(S).sum(1).eq(visible.count).all()


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_seeded_and_gradients_reach_every_part(name: str) -> None:
    model = make_model(name)
    x = windows()
    a = model(x, torch.Generator().manual_seed(3))
    b = model(x, torch.Generator().manual_seed(3))
    assert torch.equal(a.visible.index, b.visible.index) and torch.equal(a.loss, b.loss)
    a.loss.backward()
    parts = (model.encoder.blocks[0].attn.qkv, model.encoder.tokens.embed,
             model.context.blocks[0].mlp.fc1, model.decoder.blocks[0].attn.qkv,
             model.decoder.head, model.proj)
    for part in parts:
        assert part.weight.grad is not None and part.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_pretraining_step_compiles_as_one_graph(name: str) -> None:
    assert_compiles_as_one_graph(make_model(name), windows(batch=4))


def test_fill_site_and_regularizer_hold_at_the_sentence_level() -> None:
    """The sentence model fills where the method says (QB-Heat: at the encoder's width by
    default, at the decoder's when asked) and trains on the method's regularizer too."""
    for at, width in (("encoder", E), ("decoder", D)):
        torch.manual_seed(0)
        method = build_method("qbheat", {"at": at}, D, "text", "token", encoder_dim=E)
        model = SentencePretrainer(slot_spec(SENTENCE_SPEC, S),
                                   TransformerEncoder(SENTENCE_SPEC, E, 1, 2), method, D, 1, 2)
        with recorded_fill(model.method) as calls:
            out = model(windows(), torch.Generator().manual_seed(0))
        assert calls[0].latent.shape[-1] == width == method.dim
        assert out.penalty is None and out.objective is out.loss  # 1-D QB-Heat: no penalty
        method.regularizer = lambda: torch.tensor(0.25)  # a method that has one
        out = model(windows(), torch.Generator().manual_seed(0))
        assert out.objective.item() == pytest.approx(out.loss.item() + 0.25)


def test_loss_by_distance_on_sentence_windows() -> None:
    """The distance diagnostics on the sentence grid: per-slot bag-of-words loss, binned by
    slots to the nearest visible sentence, each bin the mean over its scored slots."""
    from bench.eval.diagnostics import recon_loss_by_distance, visible_distance

    model = make_model("mae").eval()
    x = windows(batch=4)
    got = recon_loss_by_distance(model, iter([x]), torch.device("cpu"), 5)
    with torch.no_grad():
        out = model(x, torch.Generator().manual_seed(5))
    per_slot = model.position_loss(x, out.pred)
    tokens = (x != 0).sum(-1).clamp_min(1)
    torch.testing.assert_close(per_slot, model.token_nll(x, out.pred).sum(-1) / tokens)
    d = visible_distance(out.visible, (S,)).clamp_max(3)
    scored = model.scored(x, out.visible)
    names = {1: "recon_loss_d1", 2: "recon_loss_d2", 3: "recon_loss_d3plus"}
    want = {names[k]: per_slot[scored & (d == k)].mean().item()
            for k in (1, 2, 3) if (scored & (d == k)).any()}
    assert set(got) == set(want) and "recon_loss_d1" in got
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-5)


def test_build_model_makes_the_sentence_model_for_the_granularity() -> None:
    cfg = RunConfig(method="qbheat", granularity="sentence", decoder_dim=D, decoder_depth=1,
                    decoder_heads=2)
    model = build_model(cfg, SENTENCE_SPEC, sentences=S)
    assert isinstance(model, SentencePretrainer) and model.spec.grid == (S,)
    assert model.encoder.tokens.pos.shape[1] == L  # the encoder reads one sentence
    assert not isinstance(build_model(RunConfig(decoder_dim=D), SENTENCE_SPEC),
                          SentencePretrainer)


# ---------------------------------------------------------------------------------------------
# Metrics


def test_next_sentence_exact_cases() -> None:
    document = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    # One vector per document: the successor scores 1, and a distractor from the anchor's own
    # document would tie with it; that never happens, so the score is exactly 1.
    per_doc = F.normalize(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    assert next_sentence_top1(per_doc[document], document, seed=0) == 1.0
    # Constant features: every candidate ties, so each anchor earns 1 / (1 + 9): chance.
    assert next_sentence_top1(torch.ones(10, 3), document, seed=0) == pytest.approx(0.1)
    # Document 0: the successor points away from the anchor, the other document's sentences
    # do not (0 for that anchor); document 1: the successor is the anchor (1): the mean is 1/2.
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert next_sentence_top1(x, torch.tensor([0, 0, 1, 1]), seed=0, distractors=3) == 0.5
    with pytest.raises(ValueError, match="two test documents"):
        next_sentence_top1(torch.ones(3, 2), torch.zeros(3, dtype=torch.long), seed=0)


class FixedSlots(nn.Module):
    """Predicts LOGP at every slot; slot 0 of each window is visible."""

    spec = DataSpec("text", (2,), vocab_size=6)
    scored = SentencePretrainer.scored
    token_nll = SentencePretrainer.token_nll

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> PretrainOutput:
        visible = Visible(torch.zeros(len(x), 1, dtype=torch.long))
        return PretrainOutput(torch.zeros(()), LOGP.expand(len(x), 2, 6), visible)


LOGP = torch.log(torch.tensor([0.0, 0.0, 0.0, 0.5, 0.3, 0.2])).clamp_min(-1e4)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_masked_sentence_metrics_hand_case(batch_size: int) -> None:
    # Hidden sentences: [3, 3, 4] (distinct {3, 4}; the top two tokens are 3 and 4: recall 1)
    # and [5] (distinct {5}; the top token is 3: recall 0); visible slots are not scored.
    windows_ = torch.tensor([[[1, 1, 1], [3, 3, 4]], [[5, 5, 5], [5, 0, 0]]])
    m = masked_sentence_metrics(FixedSlots(), windows_, batch_size, torch.device("cpu"), 0)
    nll = -(2 * math.log(0.5) + math.log(0.3) + math.log(0.2))  # tokens 3, 3, 4 | 5
    assert m["recon_loss"] == pytest.approx(nll / 4)
    assert m["perplexity"] == pytest.approx(math.exp(nll / 4))
    assert m["masked_bow_recall"] == pytest.approx((1 + 0) / 2)
