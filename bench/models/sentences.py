"""The shared sentence-level pretraining model: every method's fill works on a window of S
sentences, the 1-D grid `(S,)`, exactly as it works on a block of tokens at the token level.

sentence encoder (the run's encoder over one sentence's tokens, mean-pooled over real tokens)
on the VISIBLE sentences -> context encoder (transformer over their slots, 1-D positions) ->
method.fill on (S,) and project, in the method's order (`MaskedPretrainer.decode`, the fill in
float32) -> decoder over all S slots
-> per slot, logits over the vocabulary -> loss on the hidden sentences only.

The target is each hidden sentence's bag of words, scored as cross-entropy: the mean, over the
sentence's tokens, of -log softmax(slot logits)[token]. That is the token level's masked-token
cross-entropy with the position inside the sentence dropped: a slot vector stands for a whole
sentence, so it is asked what the sentence says, in nats per token like the token level, while
word order stays the sentence encoder's business; and it costs one vocabulary-wide head per
slot instead of one per token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bench.core.spec import DataSpec
from bench.models.parts import Encoder, init_weights, transformer_blocks
from bench.models.pretrainer import MaskedPretrainer, PretrainOutput
from bench.ops.masking import Visible, gather_tokens
from bench.ops.posembed import sincos_table
from methods.base import MaskingMethod

CONTEXT_DEPTH = 2  # blocks of the context encoder, at the sentence encoder's width and heads


def slot_spec(sentence_spec: DataSpec, sentences: int) -> DataSpec:
    """The pretraining grid: `sentences` slots, each predicting logits over the vocabulary."""
    return DataSpec("text", (sentences,), vocab_size=sentence_spec.vocab_size,
                    pad_id=sentence_spec.pad_id)


def sentence_pad_mask(ids: Tensor, pad_id: int) -> Tensor:
    """BoolTensor of real tokens of `ids [N, L]`; a sentence with no token reads as one [PAD]
    (attention needs a key), as the probes read it."""
    real = ids != pad_id
    real[:, 0] |= ~real.any(dim=1)
    return real


class ContextEncoder(nn.Module):
    """Pre-norm transformer over sentence slots: the visible sentences' vectors plus the fixed
    1-D sin-cos positions of their slots (MAE's positions, on the sentence grid)."""

    def __init__(self, slots: int, dim: int, depth: int, heads: int):
        super().__init__()
        self.register_buffer("pos", sincos_table((slots,), dim), persistent=False)
        self.blocks = transformer_blocks(dim, depth, heads)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(init_weights)

    def forward(self, vectors: Tensor, index: Tensor) -> Tensor:
        """`vectors [B, K, dim]` of the sentences at slots `index [B, K]` -> `[B, K, dim]`."""
        return self.norm(self.blocks(vectors + self.pos[index]))


class SentencePretrainer(MaskedPretrainer):
    """The token level's pretrainer on sentence windows: `spec` is the slot grid (`slot_spec`),
    `encoder` the sentence encoder (what the probes read), the fill and decoder are shared."""

    def __init__(
        self,
        spec: DataSpec,
        encoder: Encoder,
        method: MaskingMethod,
        decoder_dim: int,
        decoder_depth: int,
        decoder_heads: int,
        context_depth: int = CONTEXT_DEPTH,
        decoder: str = "transformer",
    ):
        super().__init__(spec, encoder, method, decoder_dim, decoder_depth, decoder_heads,
                         decoder)
        heads = encoder.blocks[0].attn.num_heads
        self.context = ContextEncoder(spec.grid[0], encoder.dim, context_depth, heads)

    def sentence_vectors(self, ids: Tensor) -> Tensor:
        """`ids [..., L]` -> `[..., dim]`: each sentence encoded alone, pooled over its real
        tokens (the vectors the probes read)."""
        flat = ids.reshape(-1, ids.shape[-1])
        pooled = self.encoder.pooled(flat, sentence_pad_mask(flat, self.spec.pad_id))
        return pooled.view(*ids.shape[:-1], -1)

    def forward(
        self, x: Tensor, generator: torch.Generator | None, visible: Visible | None = None
    ) -> PretrainOutput:
        """`x [B, S, L]` token ids of S sentences; `visible` as `MaskedPretrainer.forward`."""
        if visible is None:
            visible = self.method.choose_visible(x.shape[0], self.spec.grid, generator)
        vectors = self.sentence_vectors(gather_tokens(x, visible.index))  # visible only
        pred = self.decode(self.context(vectors, visible.index), visible)
        return PretrainOutput(self.loss(x, pred, visible), pred, visible, self.penalty(x))

    def scored(self, x: Tensor, visible: Visible) -> Tensor:
        """BoolTensor[B, S]: the hidden sentences that have a token."""
        return ~visible.mask(self.spec.num_tokens) & (x != self.spec.pad_id).any(dim=-1)

    def token_nll(self, x: Tensor, pred: Tensor) -> Tensor:
        """`[B, S, L]`: -log p(token) under its slot's distribution, 0 at padding."""
        logp = pred.float().log_softmax(dim=-1).gather(-1, x)
        return -logp * (x != self.spec.pad_id)

    def position_loss(self, x: Tensor, pred: Tensor) -> Tensor:
        """`[B, S]`: each slot's bag-of-words cross-entropy, the mean `token_nll` over its
        sentence's tokens (the per-slot figure the distance diagnostics bin)."""
        tokens = (x != self.spec.pad_id).sum(dim=-1)
        return self.token_nll(x, pred).sum(dim=-1) / tokens.clamp_min(1)

    def loss(self, x: Tensor, pred: Tensor, visible: Visible) -> Tensor:
        """Bag-of-words cross-entropy: the mean of `token_nll` over every token of the scored
        (hidden) sentences, each token counting once."""
        scored = self.scored(x, visible).unsqueeze(-1)
        tokens = ((x != self.spec.pad_id) & scored).sum()
        return (self.token_nll(x, pred) * scored).sum() / tokens.clamp_min(1)
