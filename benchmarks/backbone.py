"""Backbone speed: Caduceus forward + backward (training) and no-grad forward (inference) tokens/s.

Prints ONE JSON line.

CPU (the default, ``--device cpu``): the 470k Caduceus (d_model 118, 4 layers) on 8 x 1024 tokens. Figures
per variant (Ph and PS) and CPU scan (``pure``: the chunked PyTorch scan; ``cpp``: the fused C++ scan of
``dnadiff.ops.cpu_scan``, when it builds): seconds for one training step's forward + backward,
training tokens/s, inference tokens/s, and the speed-up over the same model running mamba-ssm's
sequential reference recurrence (``selective_scan_ref``), measured in the same run at a shorter
length and extrapolated linearly in length (its cost is linear in L). Thread count: torch's
default, or set OMP_NUM_THREADS. Timings on a shared machine are distorted by other processes: the
load average is reported.

CUDA (``--device cuda``): every size in ``--sizes`` at every length in ``--lengths`` (batch =
max(1, --tokens // length)), for every scan in ``--kernels`` that is available here (``pure``,
``triton``, ``cuda`` = mamba-ssm), under bfloat16 autocast (``--precision``); each row also has
its speed-up over the pure scan measured in the same run, and the peak GPU memory. A kernel that
fails (out of memory, compile error) is recorded with its error instead of stopping the run.

    python benchmarks/backbone.py [--batch 8] [--length 1024] [--ref-length 128] [--repeats 2]
    python benchmarks/backbone.py --device cuda [--kernels pure,triton,cuda] [--sizes 470k,7m]
                                  [--lengths 1024,16384] [--tokens 8192] [--variants ph,ps]
    python benchmarks/backbone.py --grid --sizes demo --lengths 64 --repeats 1   # the same grid on CPU
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import torch

from dnadiff.models import build_model
from dnadiff.ops import cpu_scan, scan, triton_scan
from dnadiff.models.config import caduceus_spec


def step_seconds(model, x, t, repeats, train=True, autocast_dtype=None):
    """Best wall time of `repeats` calls (after one warm-up) of forward (+ backward when train)."""
    def once():
        ctx = (torch.autocast(x.device.type, dtype=autocast_dtype) if autocast_dtype is not None
               else contextlib.nullcontext())
        if train:
            model.zero_grad(set_to_none=True)
            with ctx:
                loss = model(x, t).float().logsumexp(-1).mean()
            loss.backward()
        else:
            with torch.no_grad(), ctx:
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


def bench_variant(variant, device, kernels, args, size="470k", batch=None, length=None, autocast_dtype=None):
    batch, length = batch or args.batch, length or args.length
    torch.manual_seed(0)
    model = build_model(caduceus_spec(size, variant=variant, kernels=kernels)).to(device)
    x = torch.randint(0, 4, (batch, length), device=device)
    t = torch.rand(batch, device=device)
    tokens = batch * length
    train = step_seconds(model, x, t, args.repeats, autocast_dtype=autocast_dtype)
    infer = step_seconds(model, x, t, args.repeats, train=False, autocast_dtype=autocast_dtype)
    return {"fwd_bwd_s": round(train, 4), "train_tokens_per_s": round(tokens / train),
            "infer_tokens_per_s": round(tokens / infer)}, model


def bench_reference(model, device, args):
    """Same model with the sequential reference scan, at --ref-length, extrapolated to --length."""
    def ref_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, kernels="auto", backend=None):
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


def available_kernels(device: str) -> list[str]:
    """The scans that can run here: pure always; on CUDA triton and cuda (mamba-ssm) when installed, on
    CPU auto (the fused C++ scan) when it builds."""
    if device == "cpu":
        return ["pure"] + (["auto"] if cpu_scan.available() else [])
    return ["pure"] + (["triton"] if triton_scan.available() else []) + (["cuda"] if scan._mamba_scan else [])


def run_cpu(args) -> dict:
    result = {"benchmark": "backbone", "device": "cpu", "model": "caduceus-470k", "batch": args.batch,
              "length": args.length, "torch_threads": torch.get_num_threads(),
              "load_avg_1min": round(os.getloadavg()[0], 2), "cpu_kernel_available": cpu_scan.available()}
    for variant in args.variants.split(","):
        pure, model = bench_variant(variant, "cpu", "pure", args)
        ref = bench_reference(model, "cpu", args)
        result[f"cpu_{variant}_ref"] = {"fwd_bwd_s_extrapolated": round(ref, 1), "measured_at_length": args.ref_length}
        result[f"cpu_{variant}_pure"] = dict(pure, speedup_vs_sequential_ref=round(ref / pure["fwd_bwd_s"], 1))
        if result["cpu_kernel_available"]:
            cpp = bench_variant(variant, "cpu", "auto", args)[0]
            result[f"cpu_{variant}_cpp"] = dict(cpp, speedup_vs_sequential_ref=round(ref / cpp["fwd_bwd_s"], 1),
                                                speedup_vs_pure=round(pure["fwd_bwd_s"] / cpp["fwd_bwd_s"], 2))
    return result


def run_grid(args) -> dict:
    """Sizes x lengths x variants x kernels on args.device (CUDA; or CPU with --grid, as a dry run)."""
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    cuda = device == "cuda"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[args.precision] if cuda else None
    here = available_kernels(device)
    kernels = [k for k in args.kernels.split(",") if k in here] if args.kernels else here
    result = {"benchmark": "backbone", "device": torch.cuda.get_device_name() if cuda else "cpu",
              "precision": args.precision if cuda else "fp32",
              "kernels": kernels, "repeats": args.repeats, "torch": torch.__version__,
              "triton": getattr(triton_scan.triton, "__version__", None)}
    for size in args.sizes.split(","):
        for length in (int(x) for x in args.lengths.split(",")):
            batch = max(1, args.tokens // length)
            for variant in args.variants.split(","):
                rows = {}
                for kernels_name in kernels:
                    if cuda:
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                    try:
                        row = bench_variant(variant, device, kernels_name, args, size, batch, length, dtype)[0]
                        if cuda:
                            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
                    except Exception as error:  # noqa: BLE001 - recorded, the other kernels still run
                        row = {"error": f"{type(error).__name__}: {str(error).strip()[:200]}"}
                    rows[kernels_name] = row
                pure = rows.get("pure", {})
                for kernels_name, row in rows.items():
                    if kernels_name != "pure" and "fwd_bwd_s" in row and "fwd_bwd_s" in pure:
                        row["train_speedup_vs_pure"] = round(pure["fwd_bwd_s"] / row["fwd_bwd_s"], 2)
                        row["infer_speedup_vs_pure"] = round(row["infer_tokens_per_s"] / pure["infer_tokens_per_s"], 2)
                    result[f"{device}_{size}_{variant}_L{length}_b{batch}_{kernels_name}"] = row
                if "fwd_bwd_s" in rows.get("triton", {}) and "fwd_bwd_s" in rows.get("cuda", {}):
                    result[f"{device}_{size}_{variant}_L{length}_triton_over_mamba_train_time"] = round(
                        rows["triton"]["fwd_bwd_s"] / rows["cuda"]["fwd_bwd_s"], 2)
    if "triton" in kernels:
        result["triton_autotune"] = triton_scan.tuned_configs()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, default=8, help="CPU: sequences per batch")
    parser.add_argument("--length", type=int, default=1024, help="CPU: tokens per sequence")
    parser.add_argument("--ref-length", type=int, default=128, help="CPU: length of the sequential reference run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default="ph,ps")
    parser.add_argument("--grid", action="store_true", help="on CPU: run the sizes x lengths x kernels grid "
                                                            "of --device cuda (a dry run of the GPU benchmark)")
    parser.add_argument("--kernels", default=None, help="grid: comma-separated among pure,triton,cuda (CUDA) or "
                                                        "pure,auto (CPU); default: every one available")
    parser.add_argument("--sizes", default="470k,7m", help="grid: Caduceus sizes (470k, 7m, demo)")
    parser.add_argument("--lengths", default="1024,16384", help="grid: sequence lengths")
    parser.add_argument("--tokens", type=int, default=8192, help="grid: tokens per batch (batch = tokens // length)")
    parser.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16", help="CUDA: autocast dtype")
    args = parser.parse_args()
    print(json.dumps(run_grid(args) if args.device == "cuda" or args.grid else run_cpu(args)))


if __name__ == "__main__":
    main()
