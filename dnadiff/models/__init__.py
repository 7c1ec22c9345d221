"""Denoiser backbones: Caduceus (bidirectional Mamba, RC symmetric) and, lazily, the diffusion transformer.

``build_model({"name": "caduceus", **fields})`` -> :class:`CaduceusDenoiser`;
``build_model({"name": "transformer", **fields})`` -> ``dnadiff.models.transformer.DiffusionTransformer``.
The fields, their defaults, size presets and checks are the typed configs of :mod:`dnadiff.models.config`.
"""
from __future__ import annotations

import torch.nn as nn

from dnadiff.models.caduceus import CaduceusDenoiser
from dnadiff.models.config import CaduceusConfig, ModelConfig, TransformerConfig, model_config

__all__ = ["build_model", "count_parameters", "CaduceusDenoiser", "CaduceusConfig", "TransformerConfig",
           "ModelConfig", "model_config"]


def build_model(spec: dict | ModelConfig) -> nn.Module:
    """Model spec {"name": "caduceus" | "transformer", **config fields} (or a config) -> denoiser module.
    Unknown keys and values out of range are :class:`dnadiff.errors.ConfigError` (a UserError)."""
    config = model_config(spec)
    if isinstance(config, TransformerConfig):
        from dnadiff.models.transformer import DiffusionTransformer

        return DiffusionTransformer(config)
    return CaduceusDenoiser(config)


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())
