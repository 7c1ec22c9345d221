"""Cached versus ancestral sampling (and first-hitting) at T in {L/8, L, 4L}, timed with care.

Denoiser of realistic cost: the demo-size Caduceus-Ph (not time-conditioned, as in MDLM), on CPU.
Method: one warm-up run of every sampler first (allocator, kernels, caches), then ``--repeats``
rounds in which the samplers alternate, and the *minimum* wall time of each (the least disturbed
run on a shared machine). The 1-, 5- and 15-minute load averages are reported before and after.
Prints one JSON line: per T, denoiser calls, min seconds, all seconds of cached, ancestral and
first-hitting (reveals grouped by the same T-step grid), and the ratio ancestral_s / cached_s
(> 1: cached is faster); then first-hitting with one reveal per call (no grid).

    python benchmarks/sampler.py [--length 256] [--num 1] [--repeats 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from dnadiff.diffusion import MaskedDiffusion
from dnadiff.models import build_model


def timed(diff, model, args, T, sampler, seed):
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    _, st = diff.sample(model, num=args.num, length=args.length, steps=T, sampler=sampler, generator=g,
                        return_stats=True, time_conditioned=(sampler == "ancestral"))
    return time.perf_counter() - t0, st["denoiser_calls"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--num", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model({"name": "caduceus", "variant": "ph", "d_model": args.d_model, "n_layer": args.n_layer}).eval()
    diff = MaskedDiffusion(4, "loglinear")
    L = args.length
    out = {"benchmark": "sampler", "length": L, "num": args.num, "threads": torch.get_num_threads(),
           "repeats": args.repeats, "statistic": "min over repeats after a warm-up run",
           "denoiser": f"caduceus-ph d_model={args.d_model} n_layer={args.n_layer}",
           "loadavg_before": [round(x, 2) for x in os.getloadavg()], "runs": {}}
    samplers = {"cached": None, "ancestral": None, "first-hitting": None}
    for sampler in samplers:  # warm-up
        timed(diff, model, args, max(1, L // 8), sampler, 0)
    for T in (max(1, L // 8), L, 4 * L):
        times = {k: [] for k in samplers}
        calls = {}
        for r in range(args.repeats):
            for sampler in samplers:
                s, c = timed(diff, model, args, T, sampler, 1000 * r + T)
                times[sampler].append(s)
                calls[sampler] = c
        run = {f"{k}_s": round(min(v), 3) for k, v in times.items()}
        run.update({f"{k}_all_s": [round(x, 3) for x in v] for k, v in times.items()})
        run.update({f"{k}_calls": calls[k] for k in samplers})
        run["ratio_ancestral_over_cached"] = round(min(times["ancestral"]) / min(times["cached"]), 3)
        out["runs"][str(T)] = run
    times = [timed(diff, model, args, None, "first-hitting", 7 + r) for r in range(args.repeats)]
    out["first_hitting_one_per_call"] = {"s": round(min(t for t, _ in times), 3), "calls": times[0][1]}
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out["cached_never_slower"] = all(r["ratio_ancestral_over_cached"] >= 1.0 for r in out["runs"].values())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
