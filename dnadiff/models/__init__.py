"""Denoiser backbones: Caduceus (bidirectional Mamba, RC symmetric) and, lazily, the diffusion transformer.

``build_model({"name": "caduceus", **kwargs})`` -> :class:`CaduceusDenoiser`;
``build_model({"name": "transformer", **kwargs})`` -> ``dnadiff.models.transformer.DiffusionTransformer``.
"""
from __future__ import annotations

import torch.nn as nn

from dnadiff.errors import UserError
from dnadiff.models.caduceus import CaduceusDenoiser
from dnadiff.models.original import denoiser_from_original, load_original_caduceus, original_state_dict

__all__ = ["build_model", "CaduceusDenoiser", "load_original_caduceus", "original_state_dict",
           "denoiser_from_original"]


def build_model(spec: dict) -> nn.Module:
    """Model spec {"name": "caduceus" | "transformer", **constructor kwargs} -> denoiser module."""
    kwargs = dict(spec)
    name = kwargs.pop("name", None)
    if name == "caduceus":
        cls = CaduceusDenoiser
    elif name == "transformer":
        from dnadiff.models.transformer import DiffusionTransformer as cls
    else:
        raise UserError(f"unknown model name {name!r} in the model spec: use 'caduceus' or 'transformer'")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise UserError(f"bad option for model {name!r} ({err}): check the model config's keys") from None
