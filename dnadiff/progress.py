"""Progress and time estimates of long generations (``dnadiff sample``).

Before sampling, :func:`estimate` counts the denoiser calls a request needs (steps per window x
semi-autoregressive windows x batches) and times one call on the actual device, so an absurd request
(e.g. ``--length 10000000`` on a CPU) is refused before it starts; :class:`CallProgress` wraps the
denoiser and reports progress with the time left while sampling.
"""
from __future__ import annotations

import math
import sys
import time

import torch

from dnadiff.diffusion.denoiser import call_denoiser

#: seconds between two progress lines
EVERY_SECONDS = 10.0


def num_windows(length: int, context: int, block: int | None = None) -> int:
    """Windows the core's semi-autoregressive sampler runs for ``length`` tokens with a ``context``-token
    model (each window after the first adds ``block`` = context // 2 new tokens)."""
    if length <= context:
        return 1
    block = block or max(1, context // 2)
    return 1 + math.ceil((length - context) / block)


def planned_calls(num: int, length: int, steps: int, context: int, batch_size: int) -> int:
    """Upper bound on denoiser calls: ``steps`` per window (the cached sampler may skip some), for every
    window of every batch."""
    return math.ceil(num / batch_size) * num_windows(length, context) * max(int(steps), 1)


@torch.no_grad()
def seconds_per_call(denoiser, vocab_size: int, rows: int, context: int, labels: bool, device, repeats: int = 2) -> float:
    """Wall time of one denoiser call on a fully masked batch [rows, context] on ``device`` (best of ``repeats``,
    after one warm-up call)."""
    z = torch.full((rows, context), vocab_size, dtype=torch.long, device=device)
    t = torch.full((rows,), 0.5, device=device)
    y = torch.zeros(rows, dtype=torch.long, device=device) if labels else None
    best = math.inf
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        call_denoiser(denoiser, z, t, y, vocab_size)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            best = min(best, time.perf_counter() - start)
    return best


def human(seconds: float) -> str:
    """``'45 s'``, ``'12 min'``, ``'3.4 h'``, ``'9.1 days'``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class CallProgress(torch.nn.Module):
    """A denoiser that counts its calls and prints ``done/total calls, elapsed, time left`` to stderr at
    most every ``every`` seconds. Attributes of the wrapped denoiser (``time_conditioned``, ...) show through."""

    def __init__(self, denoiser: torch.nn.Module, total: int, every: float | None = None, stream=None):
        super().__init__()
        self.inner = denoiser
        self.total, self.every, self.calls = max(int(total), 1), EVERY_SECONDS if every is None else every, 0
        self.stream = stream or sys.stderr
        self.started = self.last = time.perf_counter()

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        self.calls += 1
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            done = min(self.calls / self.total, 1.0)
            left = (now - self.started) * (1 - done) / max(done, 1e-9)
            print(f"sampling: {done:.0%} ({self.calls}/{self.total} denoiser calls at most), "
                  f"{human(now - self.started)} elapsed, about {human(left)} left", file=self.stream, flush=True)
        return out
