"""Evidence: every sampler x steps on the DHS cell-type data, judged like the field.

Trains a small class-conditional denoiser (a time-agnostic DiffusionTransformer, MDLM objective,
log-linear schedule, classifier-free label dropout 10%) on the DHS training split for a stated
wall-clock budget (``--train-seconds``), single thread. Then, for each sampler and number of
steps, generates ``--per-class`` sequences for each of the 4 cell types (no guidance) and
reports: wall seconds, denoiser calls (batched; ``rows_evaluated`` counts the sequences they
evaluated), NELBO of the samples under the model (bits/base, 4
stratified times), Fréchet distance in a CNN classifier's embedding (trained on real DHS
training sequences), 3-mer spectrum Pearson correlation against real held-out (test split)
sequences, and the share recognised as the requested cell type by a k-mer classifier trained on
real sequences; the floor row is the same figures for as many real held-out sequences. Fréchet
and 3-mer figures carry bootstrap 95% intervals.

Prints a Markdown table and one JSON line with everything.

    python benchmarks/sampler_quality.py [--train-seconds 360] [--per-class 24] [--configs cached:200 remdm:400 ...]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from dnadiff.data.info import DataInfo
from dnadiff.data.dhs import load_dhs
from dnadiff.data.tokenizer import NUM_BASES, encode
from dnadiff.diffusion import ConfidenceOptions, MaskedDiffusion, ReMDMOptions, SampleStats
from dnadiff.eval.embedding import SequenceEmbedder
from dnadiff.eval.field_metrics import field_report
from dnadiff.eval.sequence_metrics import KmerClassifier
from dnadiff.generate import DNAModel
from dnadiff.models.transformer import DiffusionTransformer

DHS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dna_diffusion" / \
    "K562_hESCT0_HepG2_GM12878_12k_sequences_per_group.txt.gz"


def train(dhs, seconds: float, seed: int = 0) -> tuple[DNAModel, dict]:
    torch.manual_seed(seed)
    tokens = torch.stack([encode(s) for s in dhs.sequences])
    labels = torch.from_numpy(dhs.labels)
    C = len(dhs.class_names)
    model = DiffusionTransformer(vocab_size=7, num_outputs=4, d_model=64, n_layer=2, n_head=4, max_len=200,
                                 num_classes=C)
    diffusion = MaskedDiffusion(4, "loglinear")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    start, steps, losses = time.perf_counter(), 0, []
    while time.perf_counter() - start < seconds:
        rows = torch.randint(0, len(tokens), (64,), generator=g)
        x, y = tokens[rows], labels[rows].clone()
        y[torch.rand(64, generator=g) < 0.1] = C
        loss = diffusion.loss(model, x, x < NUM_BASES, labels=y, generator=g).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        losses.append(loss.item())
    info = {"train_steps": steps, "train_seconds": round(time.perf_counter() - start, 1), "batch": 64,
            "final_loss_bits": round(float(np.mean(losses[-50:])) / math.log(2), 4),
            "model": "DiffusionTransformer d_model=64 n_layer=2 n_head=4 (time-agnostic), loglinear schedule"}
    return DNAModel(model.eval(), diffusion, DataInfo(window=200, class_names=tuple(dhs.class_names))), info


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--train-seconds", type=float, default=360)
    p.add_argument("--per-class", type=int, default=24)
    p.add_argument("--n-boot", type=int, default=100)
    p.add_argument("--embedder-train", type=int, default=8000)
    p.add_argument("--configs", nargs="+", default=["ancestral:50", "ancestral:200", "cached:50", "cached:200",
                                                    "cached:800", "first-hitting:none", "remdm:200", "remdm:400",
                                                    "confidence:50", "confidence:200"],
                   help="sampler:steps pairs (steps 'none' for first-hitting with one reveal per call)")
    args = p.parse_args()
    torch.set_num_threads(1)
    t_all = time.perf_counter()
    dhs = load_dhs(DHS)
    train_set, test_set = dhs.subset("training"), dhs.subset("test")
    gen, info = train(train_set, args.train_seconds)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(train_set.sequences))[:args.embedder_train]
    t0 = time.perf_counter()
    embedder = SequenceEmbedder(epochs=2).fit([train_set.sequences[i] for i in idx], train_set.labels[idx])
    held = rng.permutation(len(test_set.sequences))
    real_pool = [test_set.sequences[i] for i in held[:1500]]
    cls_idx = rng.permutation(len(train_set.sequences))[:12000]
    classifier = KmerClassifier(ks=(1, 2, 3, 4)).fit([train_set.sequences[i] for i in cls_idx], train_set.labels[cls_idx])
    eval_idx = held[1500:2500]
    info["embedder_accuracy_real_test"] = round(embedder.accuracy([test_set.sequences[i] for i in eval_idx], test_set.labels[eval_idx]), 4)
    info["kmer_classifier_accuracy_real_test"] = round(classifier.accuracy([test_set.sequences[i] for i in eval_idx], test_set.labels[eval_idx]), 4)
    info["classifiers_seconds"] = round(time.perf_counter() - t0, 1)
    C = len(dhs.class_names)
    requested = np.repeat(np.arange(C), args.per_class)
    G = len(requested)

    configs = []
    for item in args.configs:
        sampler, steps = item.split(":")
        configs.append((sampler, None if steps == "none" else int(steps)))
    rows = []
    for sampler, steps in configs:
        seqs, stats, seconds = [], SampleStats(), 0.0  # stats: totals over the classes
        for c, name in enumerate(dhs.class_names):
            t0 = time.perf_counter()
            seqs += gen.generate(args.per_class, length=200, steps=0 if steps is None else steps, sampler=sampler,
                                 class_name=name, seed=100 + c, remdm=ReMDMOptions("loop"),
                                 confidence=ConfidenceOptions("prob"), stats=stats)
            seconds += time.perf_counter() - t0
        calls, rows_evaluated = stats.denoiser_calls, stats.rows_evaluated
        rows.append(evaluate(f"{sampler}", "none (one per call)" if steps is None else steps, seqs, seconds, calls,
                             gen, requested, real_pool, embedder, classifier, dhs, args))
        rows[-1]["rows_evaluated"] = rows_evaluated
        print(json.dumps(rows[-1]), flush=True)
    # floor: as many real held-out sequences of the same classes, scored the same way
    floor_idx = []
    for c in range(C):
        floor_idx += [i for i in held[2500:] if test_set.labels[i] == c][:args.per_class]
    floor = [test_set.sequences[i] for i in floor_idx]
    rows.append(evaluate("real held-out (floor)", "-", floor, 0.0, 0, gen, requested, real_pool, embedder,
                         classifier, dhs, args))
    out = {"benchmark": "sampler_quality", "per_class": args.per_class, "num_generated": G, "threads": 1,
           "loadavg": [round(x, 2) for x in os.getloadavg()], **info, "rows": rows,
           "total_seconds": round(time.perf_counter() - t_all, 1)}
    header = ["sampler", "steps", "wall s", "calls", "NELBO bits/base", "Fréchet [95% CI]", "3-mer r [95% CI]",
              "class acc"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['sampler']} | {r['steps']} | {r['wall_s']:.1f} | {r['calls']} | {r['nelbo_bits']:.3f} | "
              f"{r['frechet']:.3f} [{r['frechet_ci'][0]:.3f}, {r['frechet_ci'][1]:.3f}] | "
              f"{r['kmer3_r']:.4f} [{r['kmer3_ci'][0]:.4f}, {r['kmer3_ci'][1]:.4f}] | {r['class_acc']:.3f} |")
    print(json.dumps(out))


def evaluate(sampler, steps, seqs, seconds, calls, gen, requested, real_pool, embedder, classifier, dhs, args) -> dict:
    rep = field_report(seqs, real_pool, embedder=embedder, n_boot=args.n_boot, seed=0)
    bits = np.concatenate([gen.bits_per_base(seqs[c * args.per_class:(c + 1) * args.per_class], num_t=4, class_name=name)
                           for c, name in enumerate(dhs.class_names)])
    return {"sampler": sampler, "steps": steps, "wall_s": round(seconds, 2), "calls": calls,
            "nelbo_bits": float(bits.mean()), "frechet": rep["frechet"]["value"], "frechet_ci": rep["frechet"]["ci"],
            "frechet_floor": rep["frechet"]["floor"], "kmer3_r": rep["kmer3_pearson"]["value"],
            "kmer3_ci": rep["kmer3_pearson"]["ci"], "kmer3_floor": rep["kmer3_pearson"]["floor"],
            "class_acc": float(np.mean(classifier.predict(seqs) == requested))}


if __name__ == "__main__":
    main()
