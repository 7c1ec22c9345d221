"""One-call selective-scan speed on CPU: forward + backward of the fused C++ scan against the pure-PyTorch
chunked scan, measured in the same run. Prints ONE JSON line.

Inputs as Mamba passes them on CPU (``dnadiff.models.mamba``): channel-last u [B, L, D], z a view of the
input projection's output, B and C views of x_proj's output, A = -(1..N), D = 1, delta around
softplus^-1(0.01) through its bias, ``delta_softplus`` on, float32 by default; the default shape is the
one the 470k Caduceus-Ph of ``benchmarks/backbone.py`` scans (8 x 1024 tokens, d_inner 236, N 16).
``cpp`` times one call of the extension's forward (saving the chunk states) then its backward; ``pure``
the same through autograd with :func:`dnadiff.ops.scan.selective_scan_chunked` (in its [B, D, L] layout).
After one warm-up of each, ``--repeats`` rounds run every timed variant once, in an order that
alternates between rounds; per variant the median and minimum wall seconds are reported (on a shared
machine the minimum is the least disturbed run) and the same of the process's CPU seconds (``cpu``: time
the threads actually ran, so less distorted by other processes taking the cores; with ``--threads 1``
the steadiest figure), with the 1-minute load average before and after.

``--baseline-source PATH``: also build that version of ``cpu_scan.cpp`` (same flags, its own build
directory) and time it interleaved with this checkout's kernel in the same rounds: the JSON line then
has ``baseline`` and ``cpp_over_baseline`` (ratios of the medians and of the minima, wall and CPU, and
the median of the per-round ratios; 1.0 = same speed) and whether the two give bitwise identical
outputs and gradients on these inputs.

    python benchmarks/scan_kernel.py [--batch 8] [--length 1024] [--dim 236] [--nstate 16]
        [--dtype float32] [--repeats 15] [--pure-repeats 5] [--threads N] [--baseline-source OLD.cpp]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

from dnadiff.ops import cpu_scan
from dnadiff.ops.scan import selective_scan_chunked

GRADS = ("gu", "gdelta", "gA", "gB", "gC", "gD", "gbias", "gz")


def make_inputs(batch, length, dim, nstate, dtype, seed=0):
    """Channel-last scan inputs laid out as Mamba's fused CPU path passes them."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    u = torch.nn.functional.silu(r(batch, length, dim))      # the conv's output: contiguous
    z = r(batch, length, 2 * dim)[..., dim:]                  # the gate half of in_proj's output
    dbc = r(batch, length, 8 + 2 * nstate)                    # x_proj's output: dt_rank 8, then B, C
    B, C = dbc[..., 8:8 + nstate], dbc[..., 8 + nstate:]
    delta = 0.1 * r(batch, length, dim)
    A = -torch.arange(1, nstate + 1, dtype=dtype).repeat(dim, 1)
    D = torch.ones(dim, dtype=dtype)
    bias = torch.full((dim,), math.log(math.expm1(0.01)), dtype=dtype) + 0.5 * r(dim)
    gy = r(batch, length, dim)
    return u, delta, A, B, C, D, bias, z, gy


def build_baseline(source: Path):
    """Another version of the kernel source as its own extension, with cpu_scan's flags."""
    from torch.utils.cpp_extension import load

    tag = hashlib.sha1(str(source.resolve()).encode() + source.read_bytes()).hexdigest()[:10]
    with cpu_scan._pinned_ninja():
        return load(name=f"dnadiff_cpu_scan_baseline_{cpu_scan._cpu_tag()}_{tag}", sources=[str(source)],
                    extra_cflags=cpu_scan._cflags(), extra_ldflags=["-fopenmp"], verbose=False)


def ext_call(ext, xs):
    """One forward (keeping the chunk states) and backward of the extension: (y, gradients)."""
    u, delta, A, B, C, D, bias, z, gy = xs
    y, starts = ext.forward(u, delta, A, B, C, D, bias, z, True, True)
    return y, ext.backward(u, delta, A, B, C, D, bias, z, True, starts, gy)


def pure_call(xs):
    """The chunked PyTorch scan's forward and backward (autograd) on the same inputs."""
    u, delta, A, B, C, D, bias, z, gy = xs
    leaves = [x.detach().requires_grad_() for x in (u, delta, A, B, C, D, bias, z)]
    t = lambda x: x.transpose(1, 2)  # noqa: E731
    lu, ld, lA, lB, lC, lD, lb, lz = leaves
    y = selective_scan_chunked(t(lu), t(ld), lA, t(lB), t(lC), lD, z=t(lz), delta_bias=lb, delta_softplus=True)
    y.backward(t(gy))
    return y


def same_bits(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    ints = {torch.float32: torch.int32, torch.float64: torch.int64}[a.dtype]
    return torch.equal(a.view(ints), b.view(ints))


def figures(wall: list[float], cpu: list[float]) -> dict:
    return {"median_s": round(statistics.median(wall), 5), "min_s": round(min(wall), 5),
            "cpu_median_s": round(statistics.median(cpu), 5), "cpu_min_s": round(min(cpu), 5),
            "all_s": [round(x, 5) for x in wall]}


def ratios(new: list[float], old: list[float]) -> dict:
    """new / old: of the medians, of the minima, and the median of the per-round ratios."""
    return {"median": round(statistics.median(new) / statistics.median(old), 4), "min": round(min(new) / min(old), 4),
            "median_of_round_ratios": round(statistics.median(a / b for a, b in zip(new, old)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=236, help="channels (Mamba's d_inner)")
    parser.add_argument("--nstate", type=int, default=16)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds of the fused kernel(s)")
    parser.add_argument("--pure-repeats", type=int, default=5, help="of them, rounds that also time the "
                                                                    "pure scan (0: leave it out)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--baseline-source", type=Path, default=None,
                        help="another cpu_scan.cpp to time interleaved with this checkout's")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not cpu_scan.available():
        raise SystemExit("the fused CPU scan does not build here")
    ext = cpu_scan.extension()
    baseline = build_baseline(args.baseline_source) if args.baseline_source else None
    xs = make_inputs(args.batch, args.length, args.dim, args.nstate, getattr(torch, args.dtype))

    calls = {"cpp": lambda: ext_call(ext, xs)}
    if baseline is not None:
        calls["baseline"] = lambda: ext_call(baseline, xs)
    if args.pure_repeats > 0:
        calls["pure"] = lambda: pure_call(xs)
    out = {"benchmark": "scan_kernel", "device": "cpu", "batch": args.batch, "length": args.length,
           "dim": args.dim, "nstate": args.nstate, "dtype": args.dtype, "torch_threads": torch.get_num_threads(),
           "repeats": args.repeats, "load_avg_1min_before": round(os.getloadavg()[0], 2)}
    if baseline is not None:
        (y, g), (y0, g0) = calls["cpp"](), calls["baseline"]()
        out["baseline_source"] = str(args.baseline_source)
        out["identical_to_baseline"] = same_bits(y, y0) and all(same_bits(a, b) for a, b in zip(g, g0))
    for call in calls.values():  # warm-up
        call()
    wall = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    for r in range(args.repeats):
        names = [n for n in calls if n != "pure" or r < args.pure_repeats]
        for name in (names if r % 2 == 0 else names[::-1]):
            start, start_cpu = time.perf_counter(), time.process_time()
            calls[name]()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    out["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    for name in calls:
        out[name] = figures(wall[name], cpu[name])
    if "pure" in calls:
        out["cpp_speedup_vs_pure"] = {k: round(out["pure"][k] / out["cpp"][k], 2) for k in ("median_s", "min_s")}
    if baseline is not None:  # per round: both measured at the same moment's load
        out["cpp_over_baseline"] = {"wall": ratios(wall["cpp"], wall["baseline"]),
                                    "cpu": ratios(cpu["cpp"], cpu["baseline"])}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
