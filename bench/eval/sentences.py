"""Evaluation at the sentence level: the next-sentence checks on documents, and the held-out
masked-sentence metrics (the pretext task's own numbers, not comparable across methods).

Three checks, each the mean over anchors of a retrieval among 1 + `distractors` candidates by
cosine similarity with the anchor's vector:

- `next_sentence_top1`: sentence j finds j + 1 among sentences of OTHER documents. A topic
  detector scores well here: the distractors are off topic.
- `next_sentence_same_doc_top1`: j finds j + 1 among other sentences of ITS OWN document
  (j - 1 and j + 2 among them), so topic no longer helps: what is left is adjacency.
- `previous_sentence_same_doc_top1`: the reverse direction, j + 1 finds j among the other
  sentences of its document. Cosine similarity is symmetric, so the pair scores the same as
  forward; a gap between the two directions comes from which neighbours compete, and equal
  scores say the features carry adjacency, not order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.core.errors import ConfigError

NEXT_SENTENCE_DISTRACTORS = 9  # random sentences each true successor competes with: chance 10 %


def _documents(document: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """`new_doc [N]` (True at each document's first sentence), each document's start and size;
    at least two documents."""
    n = len(document)
    new_doc = torch.cat([document.new_ones(1, dtype=torch.bool), document.diff() != 0])
    starts = new_doc.nonzero().squeeze(1)
    sizes = torch.diff(starts, append=torch.tensor([n], device=starts.device))
    if len(starts) < 2:
        raise ConfigError("the next-sentence check needs at least two test documents")
    return new_doc, starts, sizes


def _scores(unit: Tensor, anchor: Tensor, target: Tensor, pick: Tensor) -> Tensor:
    """Per anchor: 1 when `target` scores highest among `pick`'s candidates, 1 / (1 + t) when
    it ties with t of them at the top (so constant features score chance exactly), else 0."""
    true = (unit[anchor] * unit[target]).sum(-1, keepdim=True)
    other = (unit[anchor].unsqueeze(1) * unit[pick]).sum(-1)
    beaten = (other > true).any(dim=1)
    ties = (other == true).sum(dim=1)
    return torch.where(beaten, 0.0, 1.0 / (1 + ties))


@torch.no_grad()
def next_sentence_scores(
    features: Tensor, document: Tensor, seed: int, distractors: int = NEXT_SENTENCE_DISTRACTORS
) -> Tensor:
    """Per anchor, the score of `next_sentence_top1` (`[anchors]`, in document order)."""
    n = len(features)
    new_doc, starts, sizes = _documents(document)
    anchor = (~new_doc[1:]).nonzero().squeeze(1)
    if len(anchor) == 0:
        raise ConfigError("no test document in use has two sentences: raise eval_test_limit")
    doc = new_doc.long().cumsum(0)[anchor] - 1  # the anchor's document, numbered in order
    gen = torch.Generator().manual_seed(seed)
    # Uniform over the sentences outside the anchor's document, which is one contiguous run.
    r = torch.rand(len(anchor), distractors, generator=gen).to(features.device)
    pick = (r * (n - sizes[doc]).unsqueeze(1)).long()
    pick = torch.where(pick >= starts[doc].unsqueeze(1), pick + sizes[doc].unsqueeze(1), pick)
    return _scores(F.normalize(features.float(), dim=1), anchor, anchor + 1, pick)


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
    return next_sentence_scores(features, document, seed, distractors).mean().item()


@torch.no_grad()
def same_document_scores(
    features: Tensor, document: Tensor, seed: int, reverse: bool = False,
    distractors: int = NEXT_SENTENCE_DISTRACTORS,
) -> Tensor:
    """Per pair (j, j + 1) of a document with at least three sentences: the anchor (j, or
    j + 1 when `reverse`) against the target (j + 1, or j) and `distractors` sentences drawn
    uniformly, with replacement, from the rest of the SAME document (neither j nor j + 1;
    seeded, the same draws for every row). Scored as `next_sentence_top1`; chance is
    1 / (1 + distractors)."""
    new_doc, starts, sizes = _documents(document)
    first = (~new_doc[1:]).nonzero().squeeze(1)  # j of every pair (j, j + 1)
    doc = new_doc.long().cumsum(0)[first] - 1
    keep = sizes[doc] >= 3  # a pair needs another sentence of its document to compete with
    first, doc = first[keep], doc[keep]
    if len(first) == 0:
        raise ConfigError("no test document in use has three sentences: the same-document "
                          "checks need them; raise eval_test_limit")
    gen = torch.Generator().manual_seed(seed)
    r = torch.rand(len(first), distractors, generator=gen).to(features.device)
    offset = (r * (sizes[doc] - 2).unsqueeze(1)).long()  # among the document's other sentences
    at = (first - starts[doc]).unsqueeze(1)
    pick = starts[doc].unsqueeze(1) + torch.where(offset >= at, offset + 2, offset)
    anchor, target = (first + 1, first) if reverse else (first, first + 1)
    return _scores(F.normalize(features.float(), dim=1), anchor, target, pick)
