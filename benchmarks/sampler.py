"""Cached versus uncached (ancestral) sampling at L = 1024 for T in {128, 1024, 4096}.

Denoiser of realistic cost: the demo-size Caduceus-Ph (not time-conditioned, as in MDLM), on CPU.
Prints one JSON line: per T, denoiser calls and wall seconds of each sampler, and their ratios.
Uncached runs whose T exceeds --max-measured-steps are timed on their first steps and extrapolated
from the measured seconds per call (marked "extrapolated"): every uncached step calls the denoiser.

    python benchmarks/sampler.py [--length 1024] [--num 1] [--steps 128 1024 4096]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from dnadiff.diffusion import MaskedDiffusion
from dnadiff.models import build_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--num", type=int, default=1)
    p.add_argument("--steps", type=int, nargs="+", default=[128, 1024, 4096])
    p.add_argument("--max-measured-steps", type=int, default=1024)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=2)
    args = p.parse_args()
    torch.manual_seed(0)
    model = build_model({"name": "caduceus", "variant": "ph", "d_model": args.d_model, "n_layer": args.n_layer}).eval()
    diff = MaskedDiffusion(4, "loglinear")
    out = {"benchmark": "sampler", "length": args.length, "num": args.num, "threads": torch.get_num_threads(),
           "denoiser": f"caduceus-ph d_model={args.d_model} n_layer={args.n_layer}", "runs": {}}
    for T in args.steps:
        run = {}
        g = torch.Generator().manual_seed(T)
        t0 = time.perf_counter()
        _, st = diff.sample(model, num=args.num, length=args.length, steps=T, sampler="cached", generator=g,
                            return_stats=True)
        run["cached_s"] = time.perf_counter() - t0
        run["cached_calls"] = st["denoiser_calls"]
        measured = min(T, args.max_measured_steps)
        g = torch.Generator().manual_seed(T)
        t0 = time.perf_counter()
        _, st = diff.sample(model, num=args.num, length=args.length, steps=T, sampler="ancestral", generator=g,
                            return_stats=True, time_conditioned=True) if measured == T else (None, None)
        if measured == T:
            run["ancestral_s"] = time.perf_counter() - t0
            run["ancestral_calls"] = st["denoiser_calls"]
        else:  # time `measured` calls of the same shape, then scale to T calls
            z = torch.full((args.num, args.length), diff.mask_id)
            t = torch.ones(args.num)
            t0 = time.perf_counter()
            with torch.no_grad():
                for _ in range(measured):
                    model(z, t)
            per_call = (time.perf_counter() - t0) / measured
            run["ancestral_calls"] = T
            run["ancestral_s"] = per_call * T
            run["ancestral_extrapolated"] = True
        run["speedup"] = run["ancestral_s"] / run["cached_s"]
        run["call_ratio"] = run["ancestral_calls"] / max(1, run["cached_calls"])
        out["runs"][str(T)] = {k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
