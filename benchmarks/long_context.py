"""Long context: peak memory and speed of Caduceus training and inference at long windows, with and
without activation checkpointing, measured in the same run. Prints ONE JSON line.

Every configuration runs in its own child process (so its peak RSS, ``ru_maxrss``, is its own):
the denoiser's forward + backward on ``batch`` x ``window`` random tokens (training; best of
``--repeats`` after a warm-up, except at windows >= 131k where one timed step is run without warm-up)
and, in the rows without checkpointing, a no-grad forward (inference). Per row: peak RSS (GB), KB per token (peak RSS over tokens),
training and inference tokens/s (glibc's default malloc; ``--reuse-freed-memory``: with
:func:`dnadiff.training.memory.reuse_freed_memory`, as the README's table was measured), CPU time per 1,000 tokens and page faults per token, the estimate of :mod:`dnadiff.training.memory` next to the measured
peak, and the ratio checkpointed / plain in the same run. A configuration the estimator says cannot fit
in the RAM available is skipped (recorded with its estimate), not run.

    python benchmarks/long_context.py [--models 470k,7m] [--windows 1024,16384,131072]
        [--infer-windows 1048576] [--threads 2] [--repeats 1] [--budget-s 3000]
    python benchmarks/long_context.py --device cuda               # the same rows on a GPU (bf16 autocast)
    python benchmarks/long_context.py --one 7m:ps:16384:1:1     # one child run: size:variant:window:batch:every
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

VARIANTS = {"470k": "ph", "7m": "ps"}
COST = {"470k": 1.0, "7m": 12.0}  # relative time per token (measured: about 12x at 16k)
BATCH_1K = 16  # the 1k rows run 16 sequences (as the table), longer windows one


def one(spec: str, repeats: int, infer_only: bool, device: str = "cpu", reuse: bool = False,
        long_runs: int = 1) -> dict:
    """Child: one configuration; returns its figures. On CUDA: bf16 autocast, peak = max allocated.
    ``reuse``: :func:`dnadiff.training.memory.reuse_freed_memory` first; ``long_runs``: steps at windows
    >= 131k (the best one counts)."""
    import contextlib

    import torch

    from dnadiff.training.memory import reuse_freed_memory

    reused = reuse_freed_memory(force=True) if reuse else False

    from dnadiff.models import build_model
    from dnadiff.models.checkpointing import set_activation_checkpointing
    from dnadiff.models.config import caduceus_spec
    from dnadiff.training.memory import estimate_peak_bytes, profile_activations

    size, variant, window, batch, every = spec.split(":")
    window, batch, every = int(window), int(batch), int(every)
    torch.manual_seed(0)
    model = build_model(caduceus_spec(size, variant=variant))
    profile = profile_activations(model)
    set_activation_checkpointing(model, every)
    cuda = device == "cuda"
    model.to(device)
    x = torch.randint(0, 4, (batch, window), device=device)
    t = torch.rand(batch, device=device)
    tokens = batch * window
    row = {"tokens": tokens, "every": every, "reuse_freed_memory": reused}
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def peak_gb():
        if cuda:
            return torch.cuda.max_memory_allocated() / 1e9
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def train_once():
        model.zero_grad(set_to_none=True)
        with autocast():
            loss = model(x, t).float().logsumexp(-1).mean()
        loss.backward()
        if cuda:
            torch.cuda.synchronize()

    def infer_once():
        with torch.no_grad(), autocast():
            model(x, t)
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def timed(fn):
        """Best of the runs after the first (the only one when there is one): wall s, CPU s, kernel s, faults."""
        results = []
        for _ in range(long_runs if window >= 131072 else repeats + 1):
            r0, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            fn()
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            results.append((time.perf_counter() - start, r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime,
                            r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt))
        return min(results[1:] or results, key=lambda r: r[0])

    model.train()
    if not infer_only:
        best, cpu, sys_s, faults = timed(train_once)
        row.update(train_s=round(best, 2), train_tokens_per_s=round(tokens / best, 1),
                   train_cpu_ms_per_ktoken=round(1e6 * cpu / tokens, 1), train_kernel_share=round(sys_s / cpu, 3),
                   train_page_faults_per_token=round(faults / tokens, 2),
                   train_peak_rss_gb=round(peak_gb(), 2),
                   train_estimate_gb=round(estimate_peak_bytes(profile, window, batch, every) / 1e9, 2))
        row["train_kb_per_token"] = round(row["train_peak_rss_gb"] * 1e9 / 1024 / tokens, 1)
        model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        if every:  # inference does not checkpoint: measured once, in the plain row
            row.update(startup_rss_gb=round(base / 1e9, 2), block_saved_kb_per_token=round(max(profile.blocks) / 1024, 2),
                       block_saved_lean_kb_per_token=round(max(profile.lean_blocks) / 1024, 2))
            return row
    best, cpu, sys_s, faults = timed(infer_once)
    row.update(infer_s=round(best, 2), infer_tokens_per_s=round(tokens / best, 1),
               infer_cpu_ms_per_ktoken=round(1e6 * cpu / tokens, 1), infer_kernel_share=round(sys_s / cpu, 3),
               infer_page_faults_per_token=round(faults / tokens, 2))
    if infer_only:
        row.update(infer_peak_rss_gb=round(peak_gb(), 2),
                   infer_estimate_gb=round(estimate_peak_bytes(profile, window, batch, training=False) / 1e9, 2))
        row["infer_kb_per_token"] = round(row["infer_peak_rss_gb"] * 1e9 / 1024 / tokens, 1)
    row["startup_rss_gb"] = round(base / 1e9, 2)
    row["block_saved_kb_per_token"] = round(max(profile.blocks) / 1024, 2)
    row["block_saved_lean_kb_per_token"] = round(max(profile.lean_blocks) / 1024, 2)
    row["saved_kb_per_token_total"] = round((sum(profile.blocks) + profile.outside) / 1024, 1)
    return row


def child(spec: str, args, infer_only: bool, limit: float, reuse: bool = False, long_runs: int = 1) -> dict:
    cmd = [sys.executable, __file__, "--one", spec, "--repeats", str(args.repeats), "--device", args.device,
           "--long-runs", str(long_runs)]
    cmd += (["--infer-only"] if infer_only else []) + (["--reuse"] if reuse else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {limit:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"rc={proc.returncode}: {proc.stderr.strip().splitlines()[-1][:200] if proc.stderr.strip() else ''}"}
    return json.loads(lines[-1])


def allocation_check(args) -> dict:
    """Time per token at 16k and 131k (470k Ph, batch 1, inference; with --allocation-train also
    checkpointed training), glibc's
    default malloc against :func:`dnadiff.training.memory.reuse_freed_memory`, in the same run."""
    result = {"benchmark": "long_context_allocation", "threads": args.threads,
              "load_avg_1min": round(os.getloadavg()[0], 2)}
    kinds = ((1, False), (0, True)) if args.allocation_train else ((0, True),)
    for reuse in (False, True):
        for window in (16384, 131072):
            for every, infer_only in kinds:
                key = f"470k_ph_L{window}_{'infer' if infer_only else 'ckpt1'}_{'reuse' if reuse else 'default'}"
                result[key] = child(f"470k:ph:{window}:1:{every}", args, infer_only, args.row_limit_s, reuse,
                                    long_runs=2)
    for reuse in ("default", "reuse"):
        for kind, field in (("ckpt1", "train_cpu_ms_per_ktoken"), ("infer", "infer_cpu_ms_per_ktoken")):
            a, b = result.get(f"470k_ph_L16384_{kind}_{reuse}", {}), result.get(f"470k_ph_L131072_{kind}_{reuse}", {})
            if field in a and field in b:
                result[f"{kind}_{reuse}_cpu_per_token_131k_over_16k"] = round(b[field] / a[field], 3)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="470k,7m")
    parser.add_argument("--windows", default="1024,16384,131072")
    parser.add_argument("--infer-windows", default="131072,1048576", help="no-grad forward only, checkpointing off")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--budget-s", type=float, default=3000, help="stop starting rows after this many seconds")
    parser.add_argument("--row-limit-s", type=float, default=1500, help="time limit of one row")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: bf16 autocast, peaks from torch.cuda.max_memory_allocated (the *_rss_gb fields)")
    parser.add_argument("--allocation-check", action="store_true",
                        help="only the allocator rows: 470k at 16k and 131k, glibc's default malloc against "
                             "reuse_freed_memory, CPU time per token of inference (2 runs at 131k, the second "
                             "counts)")
    parser.add_argument("--allocation-train", action="store_true",
                        help="--allocation-check: also checkpointed training steps")
    parser.add_argument("--reuse-freed-memory", action="store_true",
                        help="rows with reuse_freed_memory (opt-in for training: DNADIFF_REUSE_FREED_MEMORY=1)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--reuse", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--long-runs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--infer-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import torch

        torch.set_num_threads(args.threads if "OMP_NUM_THREADS" not in os.environ else int(os.environ["OMP_NUM_THREADS"]))
        print(json.dumps(one(args.one, args.repeats, args.infer_only, args.device, args.reuse, args.long_runs)))
        return
    if args.allocation_check:
        print(json.dumps(allocation_check(args), separators=(",", ":")))
        return

    import torch

    from dnadiff.models import build_model
    from dnadiff.models.config import caduceus_spec
    from dnadiff.training.memory import device_memory_bytes, estimate_peak_bytes, profile_activations

    start = time.time()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    capacity = device_memory_bytes(args.device)
    result = {"benchmark": "long_context",
              "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "threads": args.threads,
              "load_avg_1min": round(os.getloadavg()[0], 2), "ram_available_gb": round((capacity or 0) / 1e9, 1),
              "torch": torch.__version__}
    profiles = {size: profile_activations(build_model(caduceus_spec(size, variant=VARIANTS[size])))
                for size in args.models.split(",")}
    jobs = []
    for size in args.models.split(","):
        for window in (int(w) for w in args.windows.split(",") if w):
            for every in (0, 1):
                jobs.append((size, window, every, False))
        for window in (int(w) for w in args.infer_windows.split(",") if w):
            jobs.append((size, window, 0, True))
    # by increasing cost (tokens x model size x 1.5 when checkpointed, x 0.3 for inference): a spent time
    # budget drops the most expensive rows, recorded as skipped
    def cost(job):
        size, window, every, infer_only = job
        return window * COST[size] * (0.3 if infer_only else 1.5 if every else 1.0)

    jobs.sort(key=cost)
    for size, window, every, infer_only in jobs:
        batch = BATCH_1K if window <= 1024 else 1
        key = f"{size}_{VARIANTS[size]}_L{window}_b{batch}_" + ("infer" if infer_only else f"ckpt{every}")
        need = estimate_peak_bytes(profiles[size], window, batch, every, training=not infer_only)
        left = args.budget_s - (time.time() - start)
        if capacity is not None and need > 0.9 * capacity and not (args.device == "cuda" and not infer_only):
            result[key] = {"skipped": f"estimated {need / 1e9:.1f} GB > 90% of {capacity / 1e9:.1f} GB available"}
            continue
        if left < 30:
            result[key] = {"skipped": "benchmark time budget spent"}
            continue
        result[key] = child(f"{size}:{VARIANTS[size]}:{window}:{batch}:{every}", args, infer_only,
                            min(args.row_limit_s, left), reuse=args.reuse_freed_memory)
    for size in args.models.split(","):
        v = VARIANTS[size]
        for window in (int(w) for w in args.windows.split(",") if w):
            batch = BATCH_1K if window <= 1024 else 1
            a, b = result.get(f"{size}_{v}_L{window}_b{batch}_ckpt0", {}), result.get(f"{size}_{v}_L{window}_b{batch}_ckpt1", {})
            if "train_peak_rss_gb" in a and "train_peak_rss_gb" in b:
                result[f"{size}_L{window}_ckpt_over_plain"] = {
                    "peak_rss": round(b["train_peak_rss_gb"] / a["train_peak_rss_gb"], 3),
                    "train_time": round(b["train_s"] / a["train_s"], 3)}
        long, short = result.get(f"{size}_{v}_L131072_b1_ckpt1", {}), result.get(f"{size}_{v}_L16384_b1_ckpt1", {})
        if "train_tokens_per_s" in long and "train_tokens_per_s" in short:
            result[f"{size}_train_tokens_per_s_16k_over_131k"] = round(
                short["train_tokens_per_s"] / long["train_tokens_per_s"], 3)
    seven = result.get("7m_ps_L131072_b1_ckpt1", {})
    if "train_peak_rss_gb" in seven:
        result["targets"] = {"7m_131k_peak_rss_gb": seven["train_peak_rss_gb"],
                             "7m_131k_within_16gb": seven["train_peak_rss_gb"] <= 16,
                             "7m_131k_kb_per_token": seven["train_kb_per_token"],
                             "7m_kb_per_token_at_most_100": seven["train_kb_per_token"] <= 100}
    result["seconds"] = round(time.time() - start, 1)
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
