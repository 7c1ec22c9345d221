"""The per-step random streams: pure functions of (seed, step, rank), distinct between streams and ranks."""
from __future__ import annotations

import torch

from dnadiff.seeds import STREAMS, step_generator, step_seed


def test_step_seeds_are_the_documented_mix():
    assert step_seed(5, 7, 2) == (5 * 1_000_003 + 7 * 7_919 + 2 * 104_729) % 2**63
    assert step_seed(5, 7, 2, "guide_noise") == (5 * 1_000_033 + 7 * 7_927 + 2 * 104_723 + 1) % 2**63
    assert step_seed(5, 3, stream="epoch") == 5 * 1_000_003 + 3
    assert 0 <= step_seed(2**63 - 1, 10**9, 7) < 2**63


def test_streams_and_ranks_draw_differently_and_a_step_repeats_exactly():
    seeds = {step_seed(0, step, rank, stream) for stream in STREAMS if stream != "epoch"
             for step in range(50) for rank in range(4)}
    assert len(seeds) == 2 * 50 * 4
    a = torch.rand(8, generator=step_generator(3, 11, 1))
    assert torch.equal(a, torch.rand(8, generator=step_generator(3, 11, 1)))
    assert not torch.equal(a, torch.rand(8, generator=step_generator(3, 11, 0)))
