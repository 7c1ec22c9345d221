"""Backbone speed: the 470k Caduceus (d_model 118, 4 layers), forward + backward on 8 x 1024 tokens.

Prints ONE JSON line. Figures per variant (Ph and PS) and CPU scan (``pure``: the chunked PyTorch
scan; ``cpp``: the fused C++ scan of ``dnadiff.models.cpu_scan``, when it builds): seconds for one
training step's forward + backward, training tokens/s, inference (no-grad forward) tokens/s, and the
speed-up over the same model running mamba-ssm's sequential reference recurrence
(``selective_scan_ref``), measured in the same run at a shorter length and extrapolated linearly in
length (its cost is linear in L). Thread count: torch's default, or set OMP_NUM_THREADS.
On a CUDA machine it also times the pure path and the mamba-ssm path (when installed) on the GPU.
Timings on a shared machine are distorted by other processes: the load average is reported.

    python benchmarks/backbone.py [--batch 8] [--length 1024] [--ref-length 128] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from dnadiff.models import build_model, cpu_scan, scan
from dnadiff.models.sizes import caduceus_spec


def step_seconds(model, x, t, repeats, train=True):
    """Best wall time of `repeats` calls (after one warm-up) of forward (+ backward when train)."""
    def once():
        if train:
            model.zero_grad(set_to_none=True)
            model(x, t).logsumexp(-1).mean().backward()
        else:
            with torch.no_grad():
                model(x, t)
        if x.is_cuda:
            torch.cuda.synchronize()

    once()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_variant(variant, device, kernels, args):
    torch.manual_seed(0)
    model = build_model(caduceus_spec("470k", variant=variant, kernels=kernels)).to(device)
    x = torch.randint(0, 4, (args.batch, args.length), device=device)
    t = torch.rand(args.batch, device=device)
    tokens = args.batch * args.length
    train = step_seconds(model, x, t, args.repeats)
    infer = step_seconds(model, x, t, args.repeats, train=False)
    return {"fwd_bwd_s": round(train, 3), "train_tokens_per_s": round(tokens / train),
            "infer_tokens_per_s": round(tokens / infer)}, model


def bench_reference(model, device, args):
    """Same model with the sequential reference scan, at --ref-length, extrapolated to --length."""
    def ref_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, kernels="auto"):
        return scan.selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus)

    import dnadiff.models.mamba as mamba_module
    original = mamba_module.selective_scan
    mamba_module.selective_scan = ref_scan
    try:
        x = torch.randint(0, 4, (args.batch, args.ref_length), device=device)
        seconds = step_seconds(model, x, torch.rand(args.batch, device=device), 1)
    finally:
        mamba_module.selective_scan = original
    return seconds * args.length / args.ref_length


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--ref-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default="ph,ps")
    args = parser.parse_args()
    result = {"benchmark": "backbone", "model": "caduceus-470k", "batch": args.batch, "length": args.length,
              "torch_threads": torch.get_num_threads(), "load_avg_1min": round(os.getloadavg()[0], 2),
              "cpu_kernel_available": cpu_scan.available()}
    for variant in args.variants.split(","):
        pure, model = bench_variant(variant, "cpu", "pure", args)
        ref = bench_reference(model, "cpu", args)
        result[f"cpu_{variant}_ref"] = {"fwd_bwd_s_extrapolated": round(ref, 1), "measured_at_length": args.ref_length}
        result[f"cpu_{variant}_pure"] = dict(pure, speedup_vs_sequential_ref=round(ref / pure["fwd_bwd_s"], 1))
        if result["cpu_kernel_available"]:
            cpp = bench_variant(variant, "cpu", "auto", args)[0]
            result[f"cpu_{variant}_cpp"] = dict(cpp, speedup_vs_sequential_ref=round(ref / cpp["fwd_bwd_s"], 1),
                                                speedup_vs_pure=round(pure["fwd_bwd_s"] / cpp["fwd_bwd_s"], 2))
        if torch.cuda.is_available():
            for kernels in ("pure", "cuda") if scan._mamba_scan is not None else ("pure",):
                result[f"cuda_{variant}_{kernels}"] = bench_variant(variant, "cuda", kernels, args)[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
