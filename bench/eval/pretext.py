"""The pretext task's own held-out numbers: reconstruction loss, masked-token and
masked-sentence metrics, under each method's own seeded masks (not comparable across methods)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.core.config import RunConfig
from bench.data.packing import bag_of_words
from bench.data.protocol import EvalSplit
from bench.eval.heldout import Batches, heldout_outputs
from bench.models.pretrainer import MaskedPretrainer
from bench.models.sentences import SentencePretrainer


@torch.no_grad()
def reconstruction_loss(
    model: MaskedPretrainer, data, split: EvalSplit, batch_size: int, device: torch.device, seed: int
) -> float:
    """Mean pretraining loss on held-out inputs under the method's own (seeded) masking."""
    total, count = torch.zeros((), device=device), 0
    batches = Batches(split.x, batch_size, device, data.eval_batch)
    for x, out in heldout_outputs(model, batches, device, seed, "recon"):
        total += out.loss.float() * len(x)
        count += len(x)
    return (total / max(count, 1)).item()


@torch.no_grad()
def masked_token_metrics(
    model: MaskedPretrainer, blocks: Tensor, batch_size: int, device: torch.device, seed: int
) -> dict[str, float]:
    """Held-out masked language modelling under the method's own (seeded) masking: accuracy of
    the arg-max token, mean cross-entropy (`recon_loss`, nats) and perplexity = exp(mean CE),
    over every scored (hidden, non-padding) token of `blocks`, each token counting once.
    Not comparable across methods: each hides different positions (one span vs a subset)."""
    nll = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    count = torch.zeros((), dtype=torch.long, device=device)
    for x, out in heldout_outputs(model, Batches(blocks, batch_size, device), device, seed,
                                  "masked tokens"):
        scored = model.scored(x, out.visible)
        logits, target = out.pred.float()[scored], x[scored]
        nll += F.cross_entropy(logits, target, reduction="sum").double()
        correct += (logits.argmax(-1) == target).sum()
        count += scored.sum()
    n = int(count.clamp_min(1))
    ce = nll.item() / n
    return {"recon_loss": ce, "masked_token_acc": correct.item() / n, "perplexity": math.exp(ce)}


@torch.no_grad()
def masked_sentence_metrics(
    model: SentencePretrainer, windows: Tensor, batch_size: int, device: torch.device, seed: int
) -> dict[str, float]:
    """Held-out sentence windows under the method's own (seeded) masking, over every scored
    (hidden, non-empty) sentence: `recon_loss`, the bag-of-words cross-entropy (nats per token
    of the hidden sentences, each token counting once: the pretraining loss), `perplexity` =
    exp(recon_loss), and `masked_bow_recall`, the mean over hidden sentences of the share of its
    R distinct tokens among the R highest-scored tokens of its slot (R-precision). Not
    comparable across methods: each hides different sentences (one span vs a subset)."""
    nll = torch.zeros((), dtype=torch.float64, device=device)
    tokens = torch.zeros((), dtype=torch.long, device=device)
    recall = torch.zeros((), dtype=torch.float64, device=device)
    sentences = torch.zeros((), dtype=torch.long, device=device)
    vocab = model.spec.vocab_size
    for x, out in heldout_outputs(model, Batches(windows, batch_size, device), device, seed,
                                  "masked sentences"):
        scored = model.scored(x, out.visible)
        ids, logits = x[scored], out.pred.float()[scored]  # [M, L], [M, V]
        real = ids != model.spec.pad_id
        nll += model.token_nll(x, out.pred)[scored].sum().double()
        tokens += real.sum()
        present = bag_of_words(ids, real, vocab) > 0  # [M, V]
        r = present.sum(dim=1)
        top = logits.topk(int(r.max()), dim=1).indices if len(r) else logits[:, :0].long()
        within = torch.arange(top.shape[1], device=device) < r.unsqueeze(1)
        hits = (present.gather(1, top) & within).sum(dim=1)
        recall += (hits / r).sum().double()
        sentences += len(r)
    ce = nll.item() / max(int(tokens), 1)
    return {"recon_loss": ce, "perplexity": math.exp(ce),
            "masked_bow_recall": recall.item() / max(int(sentences), 1)}


def pretext_metrics(cfg: RunConfig, model: MaskedPretrainer, data, device: torch.device
                    ) -> dict[str, float]:
    """The run's held-out pretext numbers, by what its grid holds: `recon_loss` is the
    bag-of-words cross-entropy of hidden sentences (sentence level), the masked-token
    cross-entropy (text), or the normalised-pixel MSE (images)."""
    if cfg.granularity == "sentence":
        windows = data.heldout_windows(cfg.eval_test_limit)
        return masked_sentence_metrics(model, windows, cfg.eval_batch_size, device, cfg.seed)
    if model.spec.modality == "text":
        blocks = data.heldout_blocks(cfg.eval_test_limit)
        return masked_token_metrics(model, blocks, cfg.eval_batch_size, device, cfg.seed)
    test = data.eval_split("test", cfg.eval_test_limit)
    return {"recon_loss": reconstruction_loss(model, data, test, cfg.eval_batch_size, device,
                                              cfg.seed)}
