"""Training throughput of the 470k Caduceus (d_model 118, 4 layers) with the masked-diffusion loss on CPU,
and the data loader's rate on the same machine, measured in the same run: the loader must deliver at
least 10x the tokens training consumes.

    python benchmarks/train.py [--genome data/hg38/hg38_chr2_1-2333275.fa.gz] [--batch 8] [--window 1024] [--steps 5]

Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dnadiff.data.fasta import open_genome
from dnadiff.data.intervals import whole_genome
from dnadiff.data.windows import GenomeWindows
from dnadiff.diffusion import MaskedDiffusion
from dnadiff.models import build_model, count_parameters

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--genome", default=str(ROOT / "data" / "hg38" / "hg38_chr2_1-2333275.fa.gz"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--loader-windows", type=int, default=2000)
    args = p.parse_args()
    torch.manual_seed(0)

    windows = GenomeWindows(args.genome, whole_genome(open_genome(args.genome)), args.window, mode="random", seed=0)
    it = iter(windows)
    batches = [torch.stack([next(it)["tokens"] for _ in range(args.batch)]) for _ in range(args.steps + 1)]
    t0 = time.perf_counter()
    n = 0
    for item in windows:
        n += 1
        if n >= args.loader_windows:
            break
    loader_tokens_s = n * args.window / (time.perf_counter() - t0)

    model = build_model({"name": "caduceus", "variant": "ph", "d_model": 118, "n_layer": 4})
    params = count_parameters(model)
    diff = MaskedDiffusion(4, "loglinear")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(x):
        loss = diff.loss(model, x, x < 4).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    step(batches[0])  # warm-up
    t0 = time.perf_counter()
    for x in batches[1:]:
        step(x)
    train_s = (time.perf_counter() - t0) / args.steps
    model.eval()
    with torch.no_grad():
        z = batches[0]
        t = torch.ones(args.batch)
        model(z, t)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            model(z, t)
        infer_s = (time.perf_counter() - t0) / args.steps
    tokens = args.batch * args.window
    out = {"benchmark": "train", "model": "caduceus-ph 470k", "parameters": params, "batch": args.batch,
           "window": args.window, "threads": torch.get_num_threads(), "train_step_s": round(train_s, 3),
           "train_tokens_per_s": round(tokens / train_s), "inference_tokens_per_s": round(tokens / infer_s),
           "loader_tokens_per_s": round(loader_tokens_s), "loader_over_training": round(loader_tokens_s * train_s / tokens, 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
