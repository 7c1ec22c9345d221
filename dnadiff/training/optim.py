"""The optimiser of every training in dnadiff (pretraining and fine-tuning): AdamW over two parameter
groups, linear warm-up then cosine decay.

Weight decay follows Mamba / Caduceus (``mamba_simple.py``, Caduceus' ``add_optimizer_hooks``): it
applies to the weight matrices of linear and convolution layers only, never to

* parameters marked ``p._no_weight_decay = True`` (Mamba's ``A_log`` and ``D``), or listed by their
  module in a ``no_weight_decay_params`` class attribute (the same marker, which survives
  ``copy.deepcopy``: PyTorch does not copy attributes of a Parameter),
* biases,
* weights of normalisation layers (LayerNorm, RMSNorm, BatchNorm, GroupNorm),
* embeddings (``nn.Embedding`` and subclasses; tied LM heads share that weight).
"""
from __future__ import annotations

import math

import torch
from torch import nn

NORM_TYPES = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)


def no_decay_reason(module: nn.Module, short_name: str, param: nn.Parameter) -> str | None:
    """Why ``param`` (attribute ``short_name`` of ``module``) gets no weight decay, or None if it does."""
    if getattr(param, "_no_weight_decay", False) or short_name in getattr(module, "no_weight_decay_params", ()):
        return "marked _no_weight_decay"
    if short_name == "bias" or short_name.endswith("_bias"):
        return "bias"
    if isinstance(module, NORM_TYPES):
        return "normalisation"
    if isinstance(module, nn.Embedding):
        return "embedding"
    return None


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups over the trainable parameters of ``model`` (each shared parameter once):
    ``[{"params": decay, "weight_decay": weight_decay, "names": [...]},
    {"params": no_decay, "weight_decay": 0.0, "names": [...]}]``.

    A parameter shared by a decayed and a non-decayed module (a tied LM head) gets no decay.
    """
    owner: dict[int, tuple[str, nn.Parameter, bool]] = {}
    for module_name, module in model.named_modules():
        for short, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full = f"{module_name}.{short}" if module_name else short
            exempt = no_decay_reason(module, short, param) is not None
            if id(param) in owner:
                name, _, was_exempt = owner[id(param)]
                owner[id(param)] = (name, param, was_exempt or exempt)
            else:
                owner[id(param)] = (full, param, exempt)
    decay = [(n, p) for n, p, exempt in owner.values() if not exempt]
    no_decay = [(n, p) for n, p, exempt in owner.values() if exempt]
    return [{"params": [p for _, p in decay], "weight_decay": float(weight_decay), "names": [n for n, _ in decay]},
            {"params": [p for _, p in no_decay], "weight_decay": 0.0, "names": [n for n, _ in no_decay]}]


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based):

    ``(step + 1) / warmup`` for ``step < warmup`` (linear warm-up reaching 1 at the last warm-up step), then
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * p)) / 2`` with ``p = min(1, (step - warmup) / (total - warmup))``:
    1 right after warm-up, ``min_ratio`` from ``total`` on.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(total: int, warmup_fraction: float) -> int:
    """Warm-up length for a fraction of ``total`` steps: ``max(1, round(fraction * total))``."""
    return max(1, int(round(warmup_fraction * total)))


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, warmup: int, total: int,
                    min_lr_ratio: float = 0.1, betas: tuple[float, float] = (0.9, 0.999)):
    """AdamW over :func:`parameter_groups` and a per-step ``LambdaLR`` of :func:`warmup_cosine`.

    Returns ``(optimizer, scheduler)``; ``scheduler.step()`` once per optimiser step.
    """
    groups = [{k: v for k, v in g.items() if k != "names"} for g in parameter_groups(model, weight_decay)]
    groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    warmup, total = int(warmup), int(total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup, total, float(min_lr_ratio)))
    return optimizer, scheduler
