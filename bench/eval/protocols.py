"""A run's evaluation of an encoder: the protocols its config selects (kNN and linear probes on
frozen features, tran1, fine-tuning) and, at the sentence level, the next-sentence check, each
on the features the row reads (the encoder's pooled ones, or the raw input's)."""

from __future__ import annotations

import torch

from bench.core.config import RunConfig
from bench.eval.probes import extract_features, knn_top1, probe_metrics
from bench.eval.sentences import next_sentence_top1
from bench.eval.supervised import encoder_protocols


def split_features(cfg: RunConfig, data, encoder, split, device: torch.device, desc: str
                   ) -> torch.Tensor:
    """Features of `split` the probes read: the encoder's pooled ones, or (encoder None, the
    raw-input row) the input's own."""
    if encoder is None:
        x, pad = split.x.to(device), _to(split.pad_mask, device)
        return data.raw_features(x, pad).float()
    return extract_features(encoder, data, split, cfg.eval_batch_size, device, desc)


def next_sentence_metrics(cfg: RunConfig, data, encoder, device: torch.device
                          ) -> dict[str, float]:
    """`next_sentence_top1` on the test documents (the first ones, up to eval_test_limit
    sentences), seeded by the run's seed."""
    split = data.document_split(cfg.eval_test_limit)
    features = split_features(cfg, data, encoder, split, device, "features documents")
    return {"next_sentence_top1": next_sentence_top1(features, split.y.to(device), cfg.seed)}


def evaluate_encoder(cfg: RunConfig, data, encoder, device: torch.device,
                     protocols: tuple[str, ...], knn_only: bool = False) -> dict[str, float]:
    """`protocols` on `encoder` (None: the input's own features): the feature probes, tran1 and
    fine-tuning, and at the sentence level the next-sentence check; `knn_only`: the kNN probe
    alone (the --eval-every points)."""
    documents = ({} if knn_only or cfg.granularity != "sentence"
                 else next_sentence_metrics(cfg, data, encoder, device))
    if data.classes is None:  # unlabelled text (text-dir): nothing to probe
        return documents
    train = data.eval_split("train", cfg.eval_train_limit)
    test = data.eval_split("test", cfg.eval_test_limit)
    train_f = split_features(cfg, data, encoder, train, device, "features train")
    test_f = split_features(cfg, data, encoder, test, device, "features test")
    if knn_only:
        return {"knn_top1": knn_top1(train_f, train.y.to(device), test_f, test.y.to(device),
                                     cfg.knn_k, cfg.knn_temperature)}
    metrics = probe_metrics(train_f, train.y, test_f, test.y, cfg, protocols)
    if encoder is not None:
        metrics.update(encoder_protocols(encoder, data, train, test, cfg, device, protocols))
    return {**metrics, **documents}


def scored_names(cfg: RunConfig, metrics: dict[str, float]) -> dict[str, float]:
    """`metrics` as a run records them: a tuning trial's (`val_fraction` set) are scored on
    the validation split of the training data, so they are named `val_<metric>`; an ordinary
    run's keep their names (scored on the test split)."""
    if cfg.val_fraction is None:
        return metrics
    return {f"val_{k}": v for k, v in metrics.items()}


def _to(t, device):
    return None if t is None else t.to(device)
