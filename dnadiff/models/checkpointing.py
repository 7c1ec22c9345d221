"""Activation checkpointing of a stack of blocks (``torch.utils.checkpoint``, non-reentrant).

A backbone whose ``checkpoint_every`` is k > 0 runs its blocks in groups of k under
:func:`torch.utils.checkpoint.checkpoint` whenever autograd records (training, or any forward with grad
enabled): only each group's inputs are kept for the backward, and the group's forward is run again
during the backward. Non-reentrant checkpointing keeps the autocast state and the RNG state of the first
run (dropout draws the same masks), works with inputs that need no gradient, with tensors captured by
closure (conditioning vectors), with DDP and FSDP, and with any scan backend (the fused CPU, Triton and
mamba-ssm paths each have an autograd Function that is simply called again). Under ``no_grad`` nothing
changes. Gradients are those of the plain forward (the recomputation is the same computation).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

__all__ = ["run_blocks", "block_probe", "set_activation_checkpointing", "checkpointed_modules"]


def run_blocks(blocks: Sequence[nn.Module], state: tuple, step: Callable[..., tuple], every: int = 0) -> tuple:
    """Fold ``state = step(block, *state)`` over ``blocks``, checkpointing groups of ``every`` blocks.

    state: a tuple of tensors (or None), e.g. (hidden [B, L, H], residual [B, L, H] | None); step(block,
    *state) returns the next such tuple. every = 0 (or grad disabled): plain loop. Returns the last state.
    """
    blocks = list(blocks)
    if _PROBES:  # dnadiff.training.memory measures what each block saves: plain loop, blocks announced
        for index, block in enumerate(blocks):
            _PROBES[-1](index, state)
            state = step(block, *state)
        _PROBES[-1](None, state)
        return state
    if every <= 0 or not torch.is_grad_enabled() or not blocks:
        for block in blocks:
            state = step(block, *state)
        return state
    for start in range(0, len(blocks), every):
        state = checkpoint(_group, blocks[start:start + every], step, *state, use_reentrant=False)
    return state


_PROBES: list[Callable[[int | None, tuple], None]] = []  # told which block runs (None: after the last)


@contextlib.contextmanager
def block_probe(callback: Callable[[int | None, tuple], None]):
    """Within the context, :func:`run_blocks` runs without checkpointing and calls ``callback(i, state)``
    before block i (``state``: the block's inputs) and ``callback(None, state)`` after the last block
    (used by :mod:`dnadiff.training.memory` to measure what each block keeps for the backward)."""
    _PROBES.append(callback)
    try:
        yield
    finally:
        _PROBES.pop()


def _group(blocks, step, *state):
    for block in blocks:
        state = step(block, *state)
    return state


def checkpointed_modules(model: nn.Module) -> list[nn.Module]:
    """The submodules of ``model`` that support checkpointing (they have a ``checkpoint_every`` attribute)."""
    return [m for m in model.modules() if hasattr(type(m), "checkpoint_every")]


def set_activation_checkpointing(model: nn.Module, every: int | bool) -> int:
    """Checkpoint every group of ``every`` blocks (True: 1, False/0: off) in each backbone of ``model``.

    Returns the number of backbones changed (0 when the model has none that supports it)."""
    k = int(every) if not isinstance(every, bool) else int(every)
    if k < 0:
        raise ValueError(f"checkpoint group size must be >= 0, got {every}")
    found = checkpointed_modules(model)
    for module in found:
        module.checkpoint_every = k
    return len(found)
