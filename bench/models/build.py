"""The run's pretraining model from its config: the encoder preset, the method, and the shared
pretrainer around them (the sentence-level one at granularity=sentence)."""

from __future__ import annotations

import torch

from bench.core.config import RunConfig
from bench.core.spec import DataSpec
from bench.models.encoders import build_encoder
from bench.models.pretrainer import MaskedPretrainer
from bench.models.sentences import SentencePretrainer, slot_spec
from methods.base import build_method


def build_model(cfg: RunConfig, spec: DataSpec, sentences: int | None = None) -> MaskedPretrainer:
    """The pretrainer of `cfg` for data of `spec`; at granularity=sentence `spec` is one
    sentence's (the encoder's input) and the grid is `sentences` slots."""
    torch.manual_seed(cfg.seed)
    encoder = build_encoder(cfg.encoder, spec)
    method = build_method(cfg.method, cfg.options, cfg.decoder_dim, spec.modality, encoder.kinds,
                          encoder_dim=encoder.dim)
    if cfg.granularity == "sentence":
        return SentencePretrainer(slot_spec(spec, sentences), encoder, method, cfg.decoder_dim,
                                  cfg.decoder_depth, cfg.decoder_heads, decoder=cfg.decoder)
    return MaskedPretrainer(spec, encoder, method, cfg.decoder_dim, cfg.decoder_depth,
                            cfg.decoder_heads, cfg.decoder)
