"""Caduceus size presets (model specs for ``build_model``) and parameter counting.

"470k": the 1k-context Caduceus of the MDLM and Caduceus Genomic Benchmarks experiments
(d_model 118, 4 layers: 469,640 parameters with the 7-token vocabulary); "7m": the published
131k-context model (d_model 256, 16 layers: 7,723,008 parameters); "demo": tiny, fast on a CPU.
"""
from __future__ import annotations

import torch.nn as nn

from dnadiff.errors import UserError

PRESETS: dict[str, dict] = {
    "demo": {"d_model": 32, "n_layer": 2},
    "470k": {"d_model": 118, "n_layer": 4},
    "7m": {"d_model": 256, "n_layer": 16},
}


def caduceus_spec(size: str, **overrides) -> dict:
    """Model spec {"name": "caduceus", d_model, n_layer, **overrides} for a preset name."""
    if size not in PRESETS:
        raise UserError(f"unknown Caduceus size {size!r}: use one of {', '.join(PRESETS)}")
    return {"name": "caduceus", **PRESETS[size], **overrides}


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())
