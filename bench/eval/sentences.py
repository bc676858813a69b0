"""Evaluation at the sentence level: the next-sentence check on documents, and the held-out
masked-sentence metrics (the pretext task's own numbers, not comparable across methods)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.core.errors import ConfigError

NEXT_SENTENCE_DISTRACTORS = 9  # random sentences each true successor competes with: chance 10 %


@torch.no_grad()
def next_sentence_top1(
    features: Tensor, document: Tensor, seed: int, distractors: int = NEXT_SENTENCE_DISTRACTORS
) -> float:
    """Is the sentence after j in its document found among random sentences by its vector?

    `features [N, D]` are the sentences' vectors in document order, `document [N]` each one's
    document (documents contiguous, at least two). Every sentence j with a successor j + 1 in
    its document is an anchor; its candidates are j + 1 and `distractors` sentences drawn
    uniformly, with replacement, from the OTHER documents (seeded: the same draws for every
    row of a comparison). Each candidate is scored by cosine similarity with j. An anchor earns
    1 when j + 1 scores highest, 1 / (1 + t) when it ties with t distractors at the top (so
    constant features score chance exactly), else 0; the result is the mean over anchors, and
    chance is 1 / (1 + distractors).
    """
    n = len(features)
    new_doc = torch.cat([document.new_ones(1, dtype=torch.bool), document.diff() != 0])
    starts = new_doc.nonzero().squeeze(1)
    sizes = torch.diff(starts, append=torch.tensor([n], device=starts.device))
    if len(starts) < 2:
        raise ConfigError("the next-sentence check needs at least two test documents")
    anchor = (~new_doc[1:]).nonzero().squeeze(1)
    if len(anchor) == 0:
        raise ConfigError("no test document in use has two sentences: raise eval_test_limit")
    doc = new_doc.long().cumsum(0)[anchor] - 1  # the anchor's document, numbered in order
    gen = torch.Generator().manual_seed(seed)
    # Uniform over the sentences outside the anchor's document, which is one contiguous run.
    r = torch.rand(len(anchor), distractors, generator=gen).to(features.device)
    pick = (r * (n - sizes[doc]).unsqueeze(1)).long()
    pick = torch.where(pick >= starts[doc].unsqueeze(1), pick + sizes[doc].unsqueeze(1), pick)
    unit = F.normalize(features.float(), dim=1)
    true = (unit[anchor] * unit[anchor + 1]).sum(-1, keepdim=True)
    other = (unit[anchor].unsqueeze(1) * unit[pick]).sum(-1)
    beaten = (other > true).any(dim=1)
    ties = (other == true).sum(dim=1)
    return torch.where(beaten, 0.0, 1.0 / (1 + ties)).mean().item()
