"""Exponential moving average of a model's weights, used for evaluation and sampling."""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn


class EMA:
    """Shadow copy of the floating-point parameters: shadow <- d * shadow + (1 - d) * param.

    Args:
        model: the module to track. decay: d. warmup: use min(d, (1 + n) / (10 + n)) after n
            updates, so early weights are not frozen into the average.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError("EMA decay must be in [0, 1)")
        self.decay, self.warmup, self.num_updates = decay, warmup, 0
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype.is_floating_point}
        self._backup: dict[str, torch.Tensor] | None = None

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards the model's current parameters."""
        d = self.current_decay()
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach().to(self.shadow[n].dtype), 1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's parameters with the average."""
        for n, p in model.named_parameters():
            if n in self.shadow:
                p.copy_(self.shadow[n])

    def store(self, model: nn.Module) -> None:
        """Keep a copy of the model's current (raw) parameters, to be put back by :meth:`restore`."""
        self._backup = {n: p.detach().clone() for n, p in model.named_parameters() if n in self.shadow}

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        """Put back the parameters saved by :meth:`store` (no-op if nothing is stored)."""
        if self._backup is None:
            return
        for n, p in model.named_parameters():
            if n in self._backup:
                p.copy_(self._backup[n])
        self._backup = None

    @contextlib.contextmanager
    def average_parameters(self, model: nn.Module):
        """Temporarily swap the averaged weights into ``model`` (restored on exit)."""
        self.store(model)
        self.copy_to(model)
        try:
            yield model
        finally:
            self.restore(model)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        for n, v in state["shadow"].items():
            self.shadow[n] = v.clone()

    def to(self, device) -> "EMA":
        self.shadow = {n: v.to(device) for n, v in self.shadow.items()}
        return self
