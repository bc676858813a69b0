"""A run's evaluation of an encoder: the protocols its config selects (kNN and linear probes on
frozen features, their few-shot versions, the dense probe, tran1, fine-tuning, the per-layer
probe of `probe_layers=all`), at the sentence level the next-sentence checks, and always the
linear predictability of neighbouring features; each on the features the row reads (the
encoder's, or the raw input's)."""

from __future__ import annotations

from typing import TypeVar

import torch

from bench.core.config import RunConfig
from bench.core.outcomes import Outcome, examples_key
from bench.eval.dense import dense_metrics
from bench.eval.fewshot import fewshot_metrics
from bench.eval.layers import has_layers, layer_metrics
from bench.eval.linpred import linpred_metrics
from bench.eval.probes import extract_features, knn_top1, probe_metrics
from bench.eval.sentences import next_sentence_scores, same_document_scores
from bench.eval.supervised import encoder_protocols


def split_features(cfg: RunConfig, data, encoder, split, device: torch.device, desc: str
                   ) -> torch.Tensor:
    """Features of `split` the probes read: the encoder's pooled ones, or (encoder None, the
    raw-input row) the input's own."""
    if encoder is None:
        x, pad = split.x.to(device), _to(split.pad_mask, device)
        return data.raw_features(x, pad).float()
    return extract_features(encoder, data, split, cfg.eval_batch_size, device, desc)


T = TypeVar("T")


def next_sentence_metrics(cfg: RunConfig, data, encoder, device: torch.device,
                          outcomes: dict[str, Outcome] | None = None) -> dict[str, float]:
    """The next-sentence checks (bench.eval.sentences) on the test documents (the first ones,
    up to eval_test_limit sentences), seeded by the run's seed: other-document distractors,
    same-document ones, and the same-document check in the reverse direction. `outcomes`
    receives each check's per-anchor scores."""
    split = data.document_split(cfg.eval_test_limit)
    features = split_features(cfg, data, encoder, split, device, "features documents")
    document = split.y.to(device)
    scores = {"next_sentence_top1": next_sentence_scores(features, document, cfg.seed)}
    if (document.unique(return_counts=True)[1] >= 3).any():
        scores["next_sentence_same_doc_top1"] = same_document_scores(features, document, cfg.seed)
        scores["previous_sentence_same_doc_top1"] = same_document_scores(
            features, document, cfg.seed, reverse=True)
    if outcomes is not None:
        outcomes.update(as_outcomes(scores, split.y))
    return {name: s.mean().item() for name, s in scores.items()}


def as_outcomes(scores: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, Outcome]:
    """Per-example scores as `Outcome`s keyed by the labels of the examples they scored."""
    key = examples_key(labels.cpu().numpy())
    return {name: Outcome(s.detach().double().cpu().numpy(), key) for name, s in scores.items()}


def evaluate_encoder(cfg: RunConfig, data, encoder, device: torch.device,
                     protocols: tuple[str, ...], knn_only: bool = False,
                     outcomes: dict[str, Outcome] | None = None,
                     steps: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """`protocols` on `encoder` (None: the input's own features): the feature probes, tran1 and
    fine-tuning, at the sentence level the next-sentence checks, and the linear
    predictability of neighbouring features (`steps`: the fill's one-step maps, compared with
    the fitted ones); `knn_only`: the kNN probe alone (the --eval-every points). `outcomes`,
    when given, receives each metric's per-example scores on the test split
    (bench.core.outcomes records them). The per-layer probe reuses the penalty the linear
    probe chose on this encoder's pooled training features (`linear_l2`); the dense probe,
    reading single tokens, chooses its own (`dense_l2`)."""
    extra = {}
    if not knn_only:
        extra = linpred_metrics(cfg, data, encoder, device, steps)
        if cfg.granularity == "sentence":
            extra.update(next_sentence_metrics(cfg, data, encoder, device, outcomes))
    if data.classes is None:  # unlabelled text (text-dir): nothing to probe
        return extra
    train = data.eval_split("train", cfg.eval_train_limit)
    test = data.eval_split("test", cfg.eval_test_limit)
    train_f = split_features(cfg, data, encoder, train, device, "features train")
    test_f = split_features(cfg, data, encoder, test, device, "features test")
    if knn_only:
        return {"knn_top1": knn_top1(train_f, train.y.to(device), test_f, test.y.to(device),
                                     cfg.knn_k, cfg.knn_temperature)}
    correct: dict[str, torch.Tensor] = {}
    metrics = probe_metrics(train_f, train.y, test_f, test.y, cfg, protocols, correct)
    if "fewshot" in protocols:
        metrics.update(fewshot_metrics(train_f, train.y, test_f, test.y, cfg))
    if "dense" in protocols:
        metrics.update(dense_metrics(cfg, data, encoder, device, outcomes))
    if cfg.probe_layers == "all" and has_layers(encoder):
        l2 = metrics.get("linear_l2")  # None: the per-layer probe chooses its own
        metrics.update(layer_metrics(cfg, data, encoder, train, test, device, l2))
    if encoder is not None:
        metrics.update(encoder_protocols(encoder, data, train, test, cfg, device, protocols,
                                         correct))
    if outcomes is not None:
        outcomes.update(as_outcomes(correct, test.y))
    return {**metrics, **extra}


def scored_names(cfg: RunConfig, metrics: dict[str, T]) -> dict[str, T]:
    """`metrics` (or their per-example outcomes) as a run records them: a tuning trial's
    (`val_fraction` set) are scored on the validation split of the training data, so they
    are named `val_<metric>`; an ordinary run's keep their names (scored on the test split)."""
    if cfg.val_fraction is None:
        return metrics
    return {f"val_{k}": v for k, v in metrics.items()}


def _to(t, device):
    return None if t is None else t.to(device)
