"""Token-id tensors: documents packed into fixed-length blocks, texts truncated and padded,
their real positions, and bag-of-words counts (the text `raw-input` row)."""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import torch
from torch import Tensor

from bench.core.errors import ConfigError


def pack_blocks(token_lists: list[list[int]], length: int, sep_id: int) -> torch.Tensor:
    """LongTensor[n_blocks, length]: documents joined by sep_id into one stream, cut into full
    blocks (no padding; the last partial block is dropped; empty documents are skipped)."""
    if length <= 0:
        raise ConfigError(f"block length must be positive, got {length}")
    stream = array("q")  # int64 buffer: 2-3x faster to build and hand to torch than a list
    for doc in token_lists:
        if doc:
            if stream:
                stream.append(sep_id)
            stream.extend(doc)
    n_blocks = len(stream) // length
    blocks = (
        torch.frombuffer(stream, dtype=torch.long) if stream else torch.empty(0, dtype=torch.long)
    )
    return blocks[: n_blocks * length].clone().view(n_blocks, length)



def pad_ids(seqs: Sequence[Sequence[int]], max_len: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """(ids LongTensor[N, max_len], lengths LongTensor[N]): each sequence truncated to max_len,
    then padded with pad_id. One flat copy instead of a tensor per row (10x faster on 100k texts)."""
    lengths = torch.tensor([min(len(s), max_len) for s in seqs], dtype=torch.long)
    flat = array("q")
    for s in seqs:
        flat.extend(s[:max_len])
    ids = torch.full((len(seqs), max_len), pad_id, dtype=torch.long)
    if flat:
        ids[real_positions(lengths, max_len)] = torch.frombuffer(flat, dtype=torch.long)
    return ids, lengths


def real_positions(lengths: Tensor, max_len: int) -> Tensor:
    """BoolTensor[N, max_len], True on the first lengths[i] positions of row i (real tokens)."""
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(1)


def bag_of_words(ids: torch.Tensor, attention_mask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """FloatTensor[N, vocab_size] of token counts over real tokens only (raw-input probe)."""
    counts = torch.zeros((ids.shape[0], vocab_size), dtype=torch.float32, device=ids.device)
    return counts.scatter_add_(1, ids, attention_mask.to(torch.float32))


def blocks_upto(seqs: Sequence[Sequence[int]], length: int) -> Tensor:
    """LongTensor[N]: entry i is how many blocks `pack_blocks(seqs[: i + 1], length, sep)`
    makes, i.e. the packed blocks of the first i + 1 documents are a prefix of the packing of
    all of them (the same [SEP] rule: one between consecutive non-empty documents)."""
    counts, stream = [], 0
    for s in seqs:
        if s:
            stream += len(s) + (1 if stream else 0)
        counts.append(stream // length)
    return torch.tensor(counts, dtype=torch.long)
