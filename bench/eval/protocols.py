"""A run's evaluation of an encoder: the protocols its config selects (kNN and linear probes on
frozen features, their few-shot versions, the dense probe, tran1, fine-tuning, the per-layer
probe of `probe_layers=all`), at the sentence level the next-sentence check, and always the
linear predictability of neighbouring features; each on the features the row reads (the
encoder's, or the raw input's)."""

from __future__ import annotations

import torch

from bench.core.config import RunConfig
from bench.eval.dense import dense_metrics
from bench.eval.fewshot import fewshot_metrics
from bench.eval.layers import has_layers, layer_metrics
from bench.eval.linpred import linpred_metrics
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
                     protocols: tuple[str, ...], knn_only: bool = False,
                     steps: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """`protocols` on `encoder` (None: the input's own features): the feature probes, tran1 and
    fine-tuning, and at the sentence level the next-sentence check, with the linear
    predictability of neighbouring features (`steps`: the fill's one-step maps, compared with
    the fitted ones); `knn_only`: the kNN probe alone (the --eval-every points)."""
    extra = {}
    if not knn_only:
        extra = linpred_metrics(cfg, data, encoder, device, steps)
        if cfg.granularity == "sentence":
            extra.update(next_sentence_metrics(cfg, data, encoder, device))
    if data.classes is None:  # unlabelled text (text-dir): nothing to probe
        return extra
    train = data.eval_split("train", cfg.eval_train_limit)
    test = data.eval_split("test", cfg.eval_test_limit)
    train_f = split_features(cfg, data, encoder, train, device, "features train")
    test_f = split_features(cfg, data, encoder, test, device, "features test")
    if knn_only:
        return {"knn_top1": knn_top1(train_f, train.y.to(device), test_f, test.y.to(device),
                                     cfg.knn_k, cfg.knn_temperature)}
    metrics = probe_metrics(train_f, train.y, test_f, test.y, cfg, protocols)
    if "fewshot" in protocols:
        metrics.update(fewshot_metrics(train_f, train.y, test_f, test.y, cfg))
    if "dense" in protocols:
        metrics.update(dense_metrics(cfg, data, encoder, device))
    if cfg.probe_layers == "all" and has_layers(encoder):
        metrics.update(layer_metrics(cfg, data, encoder, train, test, device))
    if encoder is not None:
        metrics.update(encoder_protocols(encoder, data, train, test, cfg, device, protocols))
    return {**metrics, **extra}


def _to(t, device):
    return None if t is None else t.to(device)
