"""Fine-tuning throughput and memory: the micro-batched path against a single full-batch step (the old
behaviour), both measured in this run, on real Genomic Benchmarks examples.

The 470k Caduceus-Ph (d_model 118, 4 layers) on the real human_nontata_promoters examples at the recipe's
batch of 256. Each mode runs in its own subprocess so that each peak RSS is its own:

* ``micro``: the batch as length-sorted micro-batches (``--micro-batch``, default from the memory budget),
  each padded to its own longest sequence, gradients accumulated, one AdamW step; inference in
  length-sorted batches with conjoining;
* ``full``: the old step: all 256 sequences padded to the task's max length, one forward/backward, the
  backbone reading the padding (not length-aware); inference in batches of 256 padded to the max length.

Prints ONE JSON line: training and inference examples/s and peak RSS of both modes, their ratios, and the
estimated wall time of a full 5-fold x 10-epoch human_ocr_ensembl run (139,804 training examples, mean
length measured from the Genomic Benchmarks coordinates) at the micro-batched rates, scaled by length.

    python benchmarks/finetune.py [--steps 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "genomic_benchmarks"


def _child(args) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from dnadiff.data.genomic_benchmarks import load_task
    from dnadiff.data.tokenizer import encode_batch
    from dnadiff.finetune.batches import TrainCollate, default_micro_batch
    from dnadiff.finetune.module import accumulate_gradients, classifier_logits
    from dnadiff.finetune.trainer import build_classifier, predict_proba
    from dnadiff.models import build_model
    from dnadiff.models.sizes import caduceus_spec
    from dnadiff.training.optim import build_optimizer

    data = load_task("human_nontata_promoters", data=DATA / "human_nontata_promoters.test.tsv")
    seqs, labels = data.train.seqs, data.train.labels
    max_length = max(len(s) for s in seqs)
    torch.manual_seed(0)
    classifier = build_classifier(build_model(caduceus_spec("470k", variant="ph")), 2, "mean")
    opt, sched = build_optimizer(classifier, 2e-3, 0.1, 1, 100)
    rng = np.random.default_rng(0)
    B = args.batch
    micro = args.micro_batch or default_micro_batch(B, max_length, 118, 4)
    collate = TrainCollate(seqs, labels, max_length, micro)
    if args.mode == "full":
        classifier.length_aware = False  # the old backbone: reads the padding, one batch padded to the max length
    train_times = []
    for step in range(args.steps + 1):  # the first step warms up (not timed)
        index = rng.choice(len(seqs), size=B, replace=False)
        start = time.perf_counter()
        classifier.train()
        opt.zero_grad()
        if args.mode == "micro":
            batch = collate(index.tolist())
            flips = torch.rand(B) < 0.5
            accumulate_gradients(classifier, batch["micro"], B, lambda l: l.backward(), flips)
        else:
            tokens, valid = encode_batch([seqs[i] for i in index], max_length)
            loss = torch.nn.functional.cross_entropy(classifier(tokens, valid), torch.as_tensor(labels[index]))
            loss.backward()
        torch.nn.utils.clip_grad_norm_(classifier.parameters(), 1.0)
        opt.step()
        sched.step()
        if step:
            train_times.append(time.perf_counter() - start)
    infer = [seqs[i] for i in rng.choice(len(seqs), size=args.infer_examples, replace=False)]
    start = time.perf_counter()
    if args.mode == "micro":
        predict_proba(classifier, infer, max_length, conjoin=True)
    else:
        classifier.eval()
        with torch.no_grad():
            for i in range(0, len(infer), B):
                tokens, valid = encode_batch(infer[i : i + B], max_length)
                torch.softmax(classifier_logits(classifier, tokens, valid, True), -1)
    infer_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    return {"train_examples_per_s": round(B * len(train_times) / sum(train_times), 2),
            "infer_examples_per_s": round(len(infer) / infer_s, 2), "peak_rss_gb": round(peak, 3),
            "micro_batch": micro if args.mode == "micro" else B, "padded_length": max_length,
            "timed_steps": len(train_times)}


def _ocr_mean_length() -> tuple[int, float]:
    lengths = []
    for path in sorted((DATA / "coordinates" / "human_ocr_ensembl" / "train").glob("*.csv.gz")):
        with gzip.open(path, "rt") as handle:
            next(handle)
            lengths += [int(r.split(",")[3]) - int(r.split(",")[2]) for r in handle if r.strip()]
    return len(lengths), sum(lengths) / len(lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed optimiser steps per mode (after one warm-up)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=None)
    parser.add_argument("--infer-examples", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mode", choices=("micro", "full"), help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(_child(args)))
        return
    import torch

    out = {"benchmark": "finetune", "model": "caduceus-ph 470k", "task": "human_nontata_promoters (real, 9,034)",
           "batch": args.batch, "threads": args.threads, "torch": torch.__version__}
    for mode in ("full", "micro"):
        cmd = [sys.executable, __file__, "--mode", mode, "--steps", str(args.steps), "--batch", str(args.batch),
               "--infer-examples", str(args.infer_examples), "--threads", str(args.threads)]
        if args.micro_batch:
            cmd += ["--micro-batch", str(args.micro_batch)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[mode] = json.loads(result.stdout.strip().splitlines()[-1])
    out["train_speedup"] = round(out["micro"]["train_examples_per_s"] / out["full"]["train_examples_per_s"], 2)
    out["infer_speedup"] = round(out["micro"]["infer_examples_per_s"] / out["full"]["infer_examples_per_s"], 2)
    out["peak_rss_ratio"] = round(out["micro"]["peak_rss_gb"] / out["full"]["peak_rss_gb"], 3)
    n, mean_len = _ocr_mean_length()
    scale = mean_len / out["micro"]["padded_length"]  # tokens per example relative to the measured task
    folds, epochs = 5, 10
    train_s = folds * epochs * (n * 4 / 5) * scale / out["micro"]["train_examples_per_s"]
    val_s = folds * epochs * (n / 5) * scale / out["micro"]["infer_examples_per_s"]
    out["ocr_full_run"] = {"train_examples": n, "mean_length": round(mean_len, 1), "folds": folds, "epochs": epochs,
                           "estimated_hours": round((train_s + val_s) / 3600, 1),
                           "note": f"at the micro-batched rates measured here ({args.threads} thread(s)), "
                                   "scaled linearly by mean length; 2 threads roughly halve it"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
