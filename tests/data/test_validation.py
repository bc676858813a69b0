"""Tuning trials' validation split (bench.data.validation): one fixed, seeded subset of the
training split, disjoint from every fitting row whatever the eval limits; every split a
protocol reads (images, dense canvases, texts and their blocks, documents) comes from it; a
trial never reads the test split, and its scores do not move when the test data changes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from bench.data import sentences as S
from bench.data.images import ImageData
from bench.data.text import text_data
from bench.data.validation import VAL_SEED, ValidationData
from bench.run.train import train_run
from tests.helpers import tiny_config, tiny_mosaic, tiny_text_corpus


def numbered_images(n: int) -> ImageData:
    """`n` tiny images whose label is their row number, so a split's rows can be read back."""
    x = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    return ImageData("numbered", x, torch.arange(n), x[:10], torch.arange(10), ["a"], (0.5,),
                     (0.5,), 4, "f")


@pytest.mark.parametrize("limits", [(5000, 2000), (1000, 500), (None, None), (200, 5000)])
def test_validation_rows_are_fixed_and_never_fitting_rows_whatever_the_limits(limits):
    """The issue's case: at limits 5,000 / 2,000, 178 of the 200 validation images were also
    fitting images. Now the validation rows are the first 10 % of one seeded permutation of
    the whole training split; a trial scores the first eval_test_limit of them and fits on
    the first eval_train_limit of the others."""
    n, fraction = 6000, 0.1
    data = ValidationData(numbered_images(n), fraction)
    fit = data.eval_split("train", limits[0]).y
    val = data.eval_split("test", limits[1]).y
    assert not set(fit.tolist()) & set(val.tolist())
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SEED))[:600]
    assert val.tolist() == chosen[: limits[1]].tolist()  # the same units at every limit
    others = sorted(set(range(n)) - set(chosen.tolist()))
    assert fit.tolist() == others[: limits[0]]
    assert data.n_pretrain() == n  # pretraining still reads the whole training split


def test_every_split_a_protocol_reads_comes_from_the_training_split():
    mosaic = tiny_mosaic(n_train=40, n_test=8)
    view = ValidationData(mosaic, 0.25)
    chosen = torch.randperm(40, generator=torch.Generator().manual_seed(VAL_SEED))[:10]
    assert torch.equal(view.dense_split("test").masks, mosaic.train_masks[chosen].long())
    assert torch.equal(view.eval_split("test").x, mosaic.train_x[chosen])
    assert len(view.dense_split("train")) == 30 and view.test_y.tolist() == mosaic.train_y[
        chosen].tolist()


def test_streamed_images_are_divided_and_decoded_afresh(image_folder, monkeypatch):
    from bench.data import streaming

    monkeypatch.setenv("MASKBENCH_DATA_WORKERS", "0")
    data = streaming.load_imagefolder(str(image_folder), image_size=32, patch_size=4)
    whole = data.eval_split("train")
    view = ValidationData(data, 0.25)
    n = len(whole)
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SEED))[: n // 4]
    assert torch.equal(view.eval_split("test").x, whole.x[chosen])
    others = sorted(set(range(n)) - set(chosen.tolist()))
    assert torch.equal(view.eval_split("train").y, whole.y[others])
    assert view.n_pretrain() == data.n_pretrain()


def test_texts_blocks_and_documents_are_divided_by_unit(tmp_path):
    texts = text_data(tiny_text_corpus(), vocab_size=60, block_length=8, cache_dir=tmp_path)
    view = ValidationData(texts, 0.2)
    n = len(texts.train_x)
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SEED))[: n // 5]
    assert torch.equal(view.eval_split("test").x, texts.train_x[chosen])
    # the blocks linear predictability reads: the validation texts packed, and the others
    held = [texts.train_x[i, : texts.train_len[i]].tolist() for i in chosen.tolist()]
    stream = [t for text in held for t in (*text, texts.sep_id)][:-1]
    assert view.heldout_blocks().flatten().tolist() == stream[: len(view.heldout_blocks()) * 8]
    assert view.n_pretrain() == texts.n_pretrain()

    docs = _labelled_documents(tmp_path)
    view = ValidationData(docs, 0.25)
    units = docs.validation_units()
    chosen = torch.randperm(units, generator=torch.Generator().manual_seed(VAL_SEED))
    chosen = chosen[: math.floor(units * 0.25)]
    held = view.document_split(None)  # the validation documents, in the permutation's order
    for place, d in enumerate(chosen.tolist()):
        rows = docs.train_docs[docs.train_offsets[d] : docs.train_offsets[d + 1]]
        assert torch.equal(held.x[held.y == place], docs.train_x[rows])
    fit = view.eval_split("train").x
    assert len(fit) + len(view.eval_split("test").x) == len(docs.train_x)
    assert not {tuple(r) for r in fit.tolist()} & {tuple(r) for r in held.x.tolist()}


def _labelled_documents(tmp_path) -> S.SentenceData:
    topics = ("apple pear plum", "horse cow goat", "red blue green")
    documents = [S.Document(tuple(f"The {topics[i % 3].split()[k % 3]} {i} is {k} here."
                                  for k in range(3 + i % 4)), i % 3) for i in range(60)]
    corpus = S.make_documents("docs", documents, ["fruit", "animal", "colour"])
    return S.sentence_data(corpus, vocab_size=80, sentences=2, sentence_length=8,
                           cache_dir=tmp_path / "sentences")


class Unread(torch.Tensor):
    """A test-split tensor a trial must never read: any torch operation on it raises, but
    moving it to a device (every run moves its data first), which reads nothing."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.to:
            return args[0]
        raise AssertionError(f"a trial read the test split ({getattr(func, '__name__', func)})")


def unreadable_test_split(data):
    return replace(data, **{k: v.as_subclass(Unread) for k, v in vars(data).items()
                            if k.startswith("test_") and isinstance(v, torch.Tensor)})


TRIAL = dict(val_fraction=0.25, epochs=1, train_limit=32, batch_size=32, eval_test_limit=8,
             fewshot_draws=1, tran1_epochs=1, tran1_min_steps=2, finetune_epochs=1,
             finetune_min_steps=2, probe_steps=5)


def _trial(data, tmp_path, **overrides) -> dict[str, float]:
    cfg = tiny_config(**{**TRIAL, **overrides})
    summary = train_run(cfg, tmp_path / cfg.run_id, progress=False, data=data)
    assert summary["status"] == "ok"
    return summary["metrics"]


def test_a_trial_never_reads_the_test_split(tmp_path):
    """Every protocol at once (and linear predictability) on data whose test tensors raise
    when read: before, the dense probe scored the test canvases and called them val_."""
    mosaic = tiny_mosaic(n_train=40, n_test=8)
    metrics = _trial(unreadable_test_split(mosaic), tmp_path, dataset="fashion-mosaic",
                     protocols="linear,knn,dense,fewshot,tran1,finetune", probe_layers="all")
    assert all(m.startswith("val_") for m in metrics if m != "pretrain_loss")
    for m in ("val_dense_miou", "val_dense_l2", "val_tran1_top1", "val_finetune_top1",
              "val_linear_5shot_top1", "val_linear_layer_best", "val_linpred_r2_d1"):
        assert m in metrics


def test_a_trial_never_reads_the_test_texts_or_documents(tmp_path):
    texts = text_data(tiny_text_corpus(), vocab_size=60, block_length=8, cache_dir=tmp_path)
    metrics = _trial(unreadable_test_split(texts), tmp_path, dataset="text-dir:x")
    assert {"val_linear_top1", "val_knn_top1", "val_linpred_r2_d1"} <= set(metrics)
    docs = _labelled_documents(tmp_path)
    metrics = _trial(unreadable_test_split(docs), tmp_path, dataset="text-dir:y",
                     granularity="sentence", sentences=2, sentence_length=8)
    assert {"val_linear_top1", "val_next_sentence_top1", "val_linpred_r2_d1"} <= set(metrics)


def test_a_trials_scores_do_not_change_when_the_test_data_changes(tmp_path):
    mosaic = tiny_mosaic(n_train=40, n_test=8)
    other = tiny_mosaic(n_train=8, n_test=8, seed=3)
    changed = replace(mosaic, test_x=other.test_x, test_y=other.test_y,
                      test_masks=other.test_masks)
    scores = [_trial(data, tmp_path / name, dataset="fashion-mosaic", protocols="linear,dense")
              for name, data in (("a", mosaic), ("b", changed))]
    assert scores[0] == scores[1]
