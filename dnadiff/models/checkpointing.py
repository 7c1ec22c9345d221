"""Activation checkpointing of a stack of blocks (``torch.utils.checkpoint``, non-reentrant).

A backbone whose ``checkpoint_every`` is k > 0 runs its blocks in groups of k under
:func:`torch.utils.checkpoint.checkpoint` whenever autograd records (training, or any forward with grad
enabled): only each group's input is kept for the backward, and the group's forward runs again during
the backward. Inside a recomputed Caduceus block, each Mamba direction's inner part (conv, projections of
delta, B and C, the scan) is a second, nested checkpoint (:func:`recompute`), so while one block is being
differentiated it holds the input projection's output and not every intermediate of both directions.

Non-reentrant checkpointing keeps the autocast state and the RNG state of the first run (dropout draws the
same masks), works with inputs that need no gradient, with tensors captured by closure (conditioning
vectors), with DDP and FSDP, and with any scan backend (the fused CPU, Triton and mamba-ssm paths each
have an autograd Function that is simply called again). Under ``no_grad`` nothing changes. Gradients are
those of the plain forward: the recomputation is the same computation (bit for bit on one device).

:func:`block_probe` lets :mod:`dnadiff.training.memory` see which block (and which recomputed section)
runs while it counts what autograd saves.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

__all__ = ["run_blocks", "recompute", "block_probe", "Probe", "set_activation_checkpointing",
           "checkpointed_modules"]


class Probe:
    """Told what runs during a probed forward (override the methods): block ``index`` starts with inputs
    ``state`` (index None: after the last block), a recomputable section starts with ``inputs`` / ends."""

    def block(self, index: int | None, state: tuple) -> None:
        pass

    def section(self, inputs: tuple) -> None:
        pass

    def section_end(self) -> None:
        pass


_PROBES: list[Probe] = []


@contextlib.contextmanager
def block_probe(probe: Probe):
    """Within the context, :func:`run_blocks` and :func:`recompute` run plainly (no checkpointing) and
    report to ``probe`` (used to measure what each block keeps for the backward)."""
    _PROBES.append(probe)
    try:
        yield probe
    finally:
        _PROBES.pop()


def run_blocks(blocks: Sequence, state: tuple, step: Callable[..., tuple], every: int = 0) -> tuple:
    """Fold ``state = step(block, *state)`` over ``blocks``, checkpointing groups of ``every`` blocks.

    state: a tuple of tensors (or None), e.g. (hidden [B, L, H],); step(block, *state) returns the next
    such tuple. every = 0 (or grad disabled): plain loop. Returns the last state.
    """
    blocks = list(blocks)
    if _PROBES:
        for index, block in enumerate(blocks):
            _PROBES[-1].block(index, state)
            state = step(block, *state)
        _PROBES[-1].block(None, state)
        return state
    if every <= 0 or not torch.is_grad_enabled() or not blocks:
        for block in blocks:
            state = step(block, *state)
        return state
    for start in range(0, len(blocks), every):
        state = checkpoint(_group, blocks[start:start + every], step, *state, use_reentrant=False)
    return state


def _group(blocks, step, *state):
    for block in blocks:
        state = step(block, *state)
    return state


def recompute(fn: Callable[..., torch.Tensor], *inputs, enabled: bool = True) -> torch.Tensor:
    """``fn(*inputs)``; when ``enabled`` and autograd records, as a non-reentrant checkpoint (only
    ``inputs`` are kept; ``fn`` runs again in the backward)."""
    if _PROBES:
        _PROBES[-1].section(inputs)
        try:
            return fn(*inputs)
        finally:
            _PROBES[-1].section_end()
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *inputs, use_reentrant=False)
    return fn(*inputs)


def checkpointed_modules(model: nn.Module) -> list[nn.Module]:
    """The submodules of ``model`` that support checkpointing (they have a ``checkpoint_every`` attribute)."""
    return [m for m in model.modules() if hasattr(type(m), "checkpoint_every")]


def set_activation_checkpointing(model: nn.Module, every: int | bool) -> int:
    """Checkpoint every group of ``every`` blocks (True: 1, False/0: off) in each backbone of ``model``
    (and, in Caduceus, recompute each Mamba direction's inner part inside a recomputed block).

    Returns the number of backbones changed (0 when the model has none that supports it)."""
    k = int(every)
    if k < 0:
        raise ValueError(f"checkpoint group size must be >= 0, got {every}")
    found = checkpointed_modules(model)
    for module in found:
        module.checkpoint_every = k
        for sub in module.modules():
            if hasattr(type(sub), "recompute_inner"):
                sub.recompute_inner = k > 0
    return len(found)
