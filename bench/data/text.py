"""`TextData`, the data protocol of masked language modelling on a corpus (as `ImageData`
for images): packed train blocks for pretraining, each text padded for the probes, the test
split packed for the held-out masked-token metrics; its tensors cached between runs.
(Corpora: bench.data.corpora; tokenizers: bench.data.tokenizer; tensors: bench.data.packing.)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch
from tokenizers import Tokenizer
from torch import Tensor

from bench.core.errors import ConfigError
from bench.core.spec import DataSpec
from bench.data.cache import cache_root, cached_tensors
from bench.data.corpora import TextCorpus, check_splits, hash_ordered, load_corpus
from bench.data.fingerprint import digest
from bench.data.geometry import DEFAULT_BLOCK_LENGTH
from bench.data.packing import bag_of_words, blocks_upto, pack_blocks, pad_ids, real_positions
from bench.data.protocol import EvalSplit, recut
from bench.data.tokenizer import DEFAULT_VOCAB_SIZE, get_tokenizer, special_ids, tokenize

TENSORS_FORMAT = 1  # part of the tensor cache's file name: bump when what it stores changes


def encode_corpus(tokenizer: Tokenizer, corpus: TextCorpus, length: int) -> dict[str, Tensor]:
    """Every tensor `TextData` needs, from one tokenizer pass over each split: packed blocks
    (pretraining, held-out masked-token metrics) and texts truncated/padded to `length` (probes)."""
    ids = special_ids(tokenizer)
    out: dict[str, Tensor] = {}
    for split, texts in (("train", corpus.train_texts), ("test", corpus.test_texts)):
        seqs = tokenize(tokenizer, texts, f"tokenize {split}")
        out[f"{split}_blocks"] = pack_blocks(seqs, length, ids.sep)
        out[f"{split}_x"], out[f"{split}_len"] = pad_ids(seqs, length, ids.pad)
        if split == "test":
            out["test_blocks_upto"] = blocks_upto(seqs, length)
    return out



@dataclass
class PaddedTexts:
    """The probe side of text data, at the token and the sentence level alike: each text alone,
    truncated to `length` tokens and padded with [PAD] (`train_x`, `test_x`: int64
    `[n, length]`), its real length (`train_len`, `test_len`: attention and pooling masks,
    bag-of-words), labels (`train_y`, `test_y`) and `classes` (None for an unlabelled corpus,
    which has no probes), `vocab_size`, `pad_id` and `name`. The two levels are dataclasses
    adding their pretraining fields (keyword-only)."""

    name: str
    train_x: Tensor
    train_len: Tensor
    test_x: Tensor
    test_len: Tensor
    train_y: Tensor | None
    test_y: Tensor | None
    classes: list[str] | None
    vocab_size: int
    pad_id: int
    split_fields: ClassVar[tuple[str, ...]] = ("x", "len", "y")

    @property
    def length(self) -> int:
        return self.train_x.shape[1]

    @property
    def spec(self) -> DataSpec:
        """The encoder's input: one text of `length` tokens."""
        return DataSpec("text", (self.length,), vocab_size=self.vocab_size, pad_id=self.pad_id)

    def to(self, device: torch.device):
        moved = {k: v.to(device) for k, v in self.__dict__.items() if isinstance(v, Tensor)}
        return replace(self, **moved)

    def eval_split(self, split: str, limit: int | None = None) -> EvalSplit:
        """The first `limit` texts of a split, each padded, with labels and its padding mask."""
        x, n, y = (
            (self.train_x, self.train_len, self.train_y)
            if split == "train"
            else (self.test_x, self.test_len, self.test_y)
        )
        if y is None:
            raise ConfigError(f"{self.name} is unlabelled: it has no probes, only pretraining")
        return EvalSplit(x[:limit], y[:limit], self.pad_mask(n[:limit]))

    def validation_units(self) -> int:
        return len(self.train_x)

    def divided(self, val: Tensor):
        """Training texts `val` as the test split, the others as the training split."""
        return replace(self, **recut(self, self.split_fields, val))

    def texts(self, split: str) -> list[list[int]]:
        """Each text of a split as its (truncated) token ids, padding dropped."""
        x, n = (self.train_x, self.train_len) if split == "train" else (self.test_x, self.test_len)
        return [row[:k].tolist() for row, k in zip(x.cpu(), n.tolist())]

    def pad_mask(self, lengths: Tensor) -> Tensor:
        """BoolTensor[N, length] of real tokens. A text with no token is read as one [PAD]:
        attention needs a key to attend to."""
        return real_positions(lengths.clamp_min(1), self.length)

    def eval_batch(self, x: Tensor) -> Tensor:
        return x  # token ids go to the encoder as they are

    def raw_features(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Bag-of-words counts over the vocabulary, padding excluded: the `raw-input` row."""
        real = x != self.pad_id if pad_mask is None else pad_mask
        return bag_of_words(x, real, self.vocab_size)


@dataclass(kw_only=True)
class TextData(PaddedTexts):
    """A tokenized corpus, implementing the data protocol of `ImageData` for the trainer.

    Pretraining samples are packed blocks of `length` tokens (texts joined by [SEP]); probes
    see each text on its own (`PaddedTexts`).
    """

    train_blocks: Tensor  # int64 [n_blocks, length]
    test_blocks: Tensor  # int64 [m, length]: the held-out blocks
    test_blocks_upto: Tensor  # int64 [n_test]: see `blocks_upto`
    fingerprint: str
    sep_id: int  # what joins texts in a block
    modality: str = "text"

    def divided(self, val: Tensor) -> TextData:
        """Training texts `val` as the test split and the others as the training split, each
        also packed into blocks (linear predictability reads blocks). Packed from the texts
        as the probes read them, truncated to `length`; pretraining keeps its own blocks."""
        cut = super().divided(val)
        device = self.train_blocks.device
        fit, held = cut.texts("train"), cut.texts("test")
        return replace(cut, train_blocks=pack_blocks(fit, self.length, self.sep_id).to(device),
                       test_blocks=pack_blocks(held, self.length, self.sep_id).to(device),
                       test_blocks_upto=blocks_upto(held, self.length).to(device))

    def n_pretrain(self) -> int:
        return len(self.train_blocks)

    def pretrain_batch(self, idx: Tensor, generator: torch.Generator, aug: bool) -> Tensor:
        """Packed blocks `[B, length]`; text has no augmentation (generator and aug unused)."""
        return self.train_blocks[idx]

    def heldout_blocks(self, limit: int | None = None) -> Tensor:
        """The test split packed into blocks (all of it, or the first `limit` test texts)."""
        upto = self.test_blocks_upto[:limit]
        count = int(upto[-1]) if len(upto) else 0
        if count == 0:
            raise ConfigError(
                f"the {len(upto)} test texts of {self.name} in use fill no {self.length}-token "
                "block; raise eval_test_limit"
            )
        return self.test_blocks[:count]


def load_text_data(
    name: str,
    root: str | None = None,
    vocab_size: int | None = None,
    block_length: int | None = None,
    cache_dir: Path | None = None,
) -> TextData:
    """`text_data` of the corpus `name` (see `load_corpus`; `root` is its data_root)."""
    cache_dir = cache_root() if cache_dir is None else cache_dir
    return text_data(load_corpus(name, root, cache_dir), vocab_size, block_length, cache_dir)


def text_data(
    corpus: TextCorpus,
    vocab_size: int | None = None,
    block_length: int | None = None,
    cache_dir: Path | None = None,
) -> TextData:
    """Corpus -> tokenizer -> tensors (splits in `hash_ordered` order), each cached under
    `cache_dir` (default `cache_root()`), the tensors keyed by corpus fingerprint, vocabulary
    size, tokenizer content and block length: a second run neither retrains nor re-encodes."""
    vocab_size = DEFAULT_VOCAB_SIZE if vocab_size is None else vocab_size
    length = DEFAULT_BLOCK_LENGTH if block_length is None else block_length
    if length <= 0:
        raise ConfigError(f"block_length must be positive, got {length}")
    cache_dir = cache_root() if cache_dir is None else cache_dir
    check_splits(corpus)
    tokenizer = get_tokenizer(corpus, vocab_size, cache_dir)
    corpus = hash_ordered(corpus)
    tok_digest = digest(tokenizer.to_str())
    key = f"{corpus.fingerprint[:16]}-v{vocab_size}-{tok_digest}-L{length}"
    tensors = cached_tensors(cache_dir / f"text{TENSORS_FORMAT}-{key}.pt",
                             lambda: encode_corpus(tokenizer, corpus, length))

    def labels(values: list[int] | None) -> Tensor | None:
        return None if values is None else torch.tensor(values, dtype=torch.long)

    return TextData(
        name=corpus.name,
        **tensors,
        train_y=labels(corpus.train_labels),
        test_y=labels(corpus.test_labels),
        classes=corpus.classes,
        vocab_size=tokenizer.get_vocab_size(),
        pad_id=special_ids(tokenizer).pad,
        sep_id=special_ids(tokenizer).sep,
        fingerprint=digest(corpus.fingerprint, tok_digest, str(length))[:12],
    )
