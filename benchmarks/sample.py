"""Sampling benchmark: sequences/s at L=1024 and L=200, cached versus ancestral sampler.

The denoiser is a randomly initialised (not time-conditioned) backbone of the project -- speed
does not depend on the weights -- or the model of ``--checkpoint``. Each configuration draws
``--num`` sequences in one batch with T = L reverse steps (about one base per step). Reported per
configuration: sequences/s, batched denoiser calls, and denoiser evaluations per sequence
(rows evaluated / num: what the cached sampler saves). The reference of each length is the
ancestral sampler of the same run; ``cached_speedup`` is its time over the cached sampler's.
Prints one JSON line. Wall-clock timings on a shared machine: other processes distort them.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from dnadiff.data.info import DataInfo
from dnadiff.diffusion import MaskedDiffusion, SampleStats
from dnadiff.generate import DNAModel, load


def random_generator(backbone: str, window: int) -> DNAModel:
    """A randomly initialised small denoiser wrapped as a DNA DNAModel with the given window."""
    from dnadiff.models import build_model

    spec = {"name": backbone, "vocab_size": 7, "num_outputs": 4, "d_model": 64, "n_layer": 2}
    if backbone == "transformer":
        spec.update(n_head=4, max_len=window)
    torch.manual_seed(0)
    model = build_model(spec)
    return DNAModel(model, MaskedDiffusion(4), DataInfo(window=window))


def measure(gen: DNAModel, num: int, length: int, sampler: str) -> dict:
    """Time one batch of ``num`` sequences of ``length`` with T = length steps."""
    gen.generate(min(num, 2), length=min(length, 16), steps=4, sampler=sampler, seed=1)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    stats = SampleStats()
    gen.generate(num, length=length, steps=length, sampler=sampler, seed=0, batch_size=num, stats=stats)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"seq_per_s": round(num / seconds, 3), "seconds": round(seconds, 2),
            "denoiser_calls": stats.denoiser_calls,
            "evals_per_seq": round(stats.rows_evaluated / num, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="benchmark this model.pt instead of a random backbone")
    parser.add_argument("--backbone", choices=("transformer", "caduceus"), default="transformer")
    parser.add_argument("--num", type=int, default=4, help="sequences per configuration")
    parser.add_argument("--lengths", type=int, nargs="+", default=[200, 1024])
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result: dict = {"benchmark": "sample", "device": device, "num": args.num}
    for length in args.lengths:
        if args.checkpoint:
            gen = load(args.checkpoint, device=device)
            result["model"] = args.checkpoint
        else:
            gen = random_generator(args.backbone, window=length)
            gen.denoiser.to(device)
            result["model"] = f"random {args.backbone} d_model=64 n_layer=2"
        row = {sampler: measure(gen, args.num, length, sampler) for sampler in ("ancestral", "cached")}
        row["cached_speedup"] = round(row["ancestral"]["seconds"] / max(row["cached"]["seconds"], 1e-9), 2)
        result[f"L{length}"] = row
    print(json.dumps(result))


if __name__ == "__main__":
    main()
