"""Per-step random streams, in one place: a seed that is a pure function of (run seed, step, rank), so a resumed
run draws exactly what an uninterrupted one would and DDP ranks draw differently.

Each stream mixes its counters with its own primes (``STREAMS``), so two streams of one step never share a seed.
"""
from __future__ import annotations

import torch

#: stream -> (seed, step and rank multipliers, offset)
STREAMS = {
    "noise": (1_000_003, 7_919, 104_729, 0),       # pretraining's masking noise; fine-tuning's RC flips
    "guide_noise": (1_000_033, 7_927, 104_723, 1),  # the masking of a noisy classifier's training sequences
    "epoch": (1_000_003, 1, 0, 0),                  # fine-tuning's shuffle of one epoch (step = the epoch)
}


def step_seed(seed: int, step: int, rank: int = 0, stream: str = "noise") -> int:
    """The seed of ``stream`` at ``step`` on ``rank``: an integer in [0, 2**63)."""
    a, b, c, d = STREAMS[stream]
    return (int(seed) * a + int(step) * b + int(rank) * c + d) % (2**63)


def step_generator(seed: int, step: int, rank: int = 0, stream: str = "noise", device=None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (default CPU) seeded with :func:`step_seed`."""
    g = torch.Generator(device=device) if device is not None else torch.Generator()
    return g.manual_seed(step_seed(seed, step, rank, stream))
