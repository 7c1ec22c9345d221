"""Fine-tuning throughput and memory: the micro-batched path against a single full-batch step (the old
behaviour), both measured in this run, on real Genomic Benchmarks examples.

The 470k Caduceus-Ph (d_model 118, 4 layers) on the real human_nontata_promoters examples at the recipe's
batch of 256. Each mode runs in its own subprocess so that each peak RSS is its own:

* ``micro``: the batch as length-sorted micro-batches (``--micro-batch``, default from the memory budget),
  each padded to its own longest sequence, gradients accumulated, one AdamW step; inference in
  length-sorted batches with conjoining;
* ``full``: the old step on today's engine: all 256 sequences padded to the task's max length, one
  forward/backward, the backbone reading the padding (not length-aware); inference in batches of 256
  padded to the max length;
* ``before``: the package itself as it was when issue 10 was filed (``git archive`` of BEFORE_REF into a
  temporary folder): its fine-tuning step (one full batch) and its scan kernels. Skipped, with no
  ``before`` figures, where git or that commit is missing (``--no-before`` skips it too).

Prints ONE JSON line: training and inference examples per wall second and per CPU second (the latter is
robust to a loaded machine; with 2 threads it also counts the threads' spinning), peak RSS and minor page
faults of each mode, the micro-batched path's ratios against ``full`` and against ``before``, and for a full
5-fold x 10-epoch human_ocr_ensembl run (139,804 training examples, lengths from the Genomic Benchmarks
coordinates): the padded tokens per example of both paths (its lengths vary, so length-sorted
micro-batches also pad less), the implied training speedup, and the estimated CPU time at the measured
micro-batched rate.

    python benchmarks/finetune.py [--steps 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the "before" child runs the package as it was when issue 10 was filed (an export of BEFORE_REF)
CODE = Path(sys.argv[sys.argv.index("--code") + 1]) if "--code" in sys.argv else REPO
sys.path.insert(0, str(CODE))
DATA = REPO.parent / "shared" / "data" / "genomic_benchmarks"
BEFORE_REF = "43494c5"  # main when issue 10 was filed: one full-batch step, the scan kernels of then


def _child(args) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from dnadiff.data.genomic_benchmarks import load_task
    from dnadiff.data.tokenizer import encode_batch
    from dnadiff.finetuning.batches import TrainCollate, default_micro_batch
    from dnadiff.finetuning.finetune_module import accumulate_gradients, classifier_logits
    from dnadiff.finetuning.trainer import build_classifier, predict_proba
    from dnadiff.models import build_model
    from dnadiff.models.config import caduceus_spec
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
    train_times, train_cpu = [], []
    for step in range(args.steps + 1):  # the first step warms up (not timed)
        index = rng.choice(len(seqs), size=B, replace=False)
        start, cpu = time.perf_counter(), time.process_time()
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
            train_cpu.append(time.process_time() - cpu)
    infer = [seqs[i] for i in rng.choice(len(seqs), size=args.infer_examples, replace=False)]
    start, cpu = time.perf_counter(), time.process_time()
    if args.mode == "micro":
        predict_proba(classifier, infer, max_length, conjoin=True)
    else:
        classifier.eval()
        with torch.no_grad():
            for i in range(0, len(infer), B):
                tokens, valid = encode_batch(infer[i : i + B], max_length)
                torch.softmax(classifier_logits(classifier, tokens, valid, True), -1)
    figures = _figures(B, train_times, train_cpu, len(infer), time.perf_counter() - start, time.process_time() - cpu)
    return {**figures, "micro_batch": micro if args.mode == "micro" else B, "padded_length": max_length}


def _figures(batch: int, train_times: list, train_cpu: list, n_infer: int, infer_s: float, infer_cpu: float) -> dict:
    """Examples per wall and per CPU second of training and inference, peak RSS and page faults so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"train_examples_per_s": round(batch * len(train_times) / sum(train_times), 2),
            "infer_examples_per_s": round(n_infer / infer_s, 2),
            "train_examples_per_cpu_s": round(batch * len(train_cpu) / sum(train_cpu), 2),
            "infer_examples_per_cpu_s": round(n_infer / infer_cpu, 2),
            "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 3), "minor_page_faults": usage.ru_minflt,
            "timed_steps": len(train_times)}


def _child_before(args) -> dict:
    """The old fine-tuning step, with the old package (``--code``): finetune/trainer.py's train_fold at
    BEFORE_REF (AdamW on every parameter, RC augmentation, 256 sequences padded to the task's maximum,
    one forward/backward) and its predict_proba for inference."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from dnadiff.data.genomic_benchmarks import load_task
    from dnadiff.data.tokenizer import encode_batch
    from dnadiff.finetuning import trainer
    from dnadiff.models.heads import reverse_complement_valid
    from dnadiff.models.sizes import caduceus_spec

    data = load_task("human_nontata_promoters", data=DATA / "human_nontata_promoters.test.tsv")
    seqs, labels = data.train.seqs, torch.as_tensor(data.train.labels, dtype=torch.long)
    max_length = max(len(s) for s in seqs)
    torch.manual_seed(0)
    classifier = trainer.build_classifier(trainer.backbone_from_scratch(caduceus_spec("470k", variant="ph")), 2, "mean")
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=2e-3, weight_decay=0.1)
    rng, B = np.random.default_rng(0), args.batch
    train_times, train_cpu = [], []
    for step in range(args.steps + 1):  # the first step warms up (and builds the old kernel): not timed
        index = torch.as_tensor(rng.choice(len(seqs), size=B, replace=False))
        start, cpu = time.perf_counter(), time.process_time()
        classifier.train()
        tokens, valid = encode_batch([seqs[i] for i in index], max_length)
        flip = torch.rand(B) < 0.5
        tokens = torch.where(flip[:, None], reverse_complement_valid(tokens, valid), tokens)
        loss = torch.nn.functional.cross_entropy(classifier(tokens, valid), labels[index])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(classifier.parameters(), 1.0)
        optimizer.step()
        if step:
            train_times.append(time.perf_counter() - start)
            train_cpu.append(time.process_time() - cpu)
    infer = [seqs[i] for i in rng.choice(len(seqs), size=args.infer_examples, replace=False)]
    start, cpu = time.perf_counter(), time.process_time()
    trainer.predict_proba(classifier, infer, max_length, conjoin=True)
    figures = _figures(B, train_times, train_cpu, len(infer), time.perf_counter() - start, time.process_time() - cpu)
    return {**figures, "micro_batch": B, "padded_length": max_length, "code": BEFORE_REF}


def _export_before(folder: Path) -> bool:
    """Write the package as of BEFORE_REF into ``folder`` (git archive); False when git or the commit is
    not there (a source tarball, a shallow clone)."""
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE_REF, "dnadiff"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


def padded_tokens(lengths, batch: int, micro: int | None, cap: int, seed: int = 0) -> float:
    """Mean padded tokens per example over random batches of ``batch`` examples: every row padded to ``cap``
    (``micro`` None: the old full batch) or length-sorted micro-batches of ``micro`` rows each padded to
    its own longest (the micro-batched path)."""
    import numpy as np

    lengths = np.minimum(np.asarray(lengths), cap)
    if micro is None:
        return float(cap)
    order = np.random.default_rng(seed).permutation(len(lengths))
    total = 0
    for start in range(0, len(order), batch):
        rows = np.sort(lengths[order[start : start + batch]])[::-1]
        total += sum(int(rows[i]) * len(rows[i : i + micro]) for i in range(0, len(rows), micro))
    return total / len(lengths)


def _ocr_lengths() -> list[int]:
    lengths = []
    for path in sorted((DATA / "coordinates" / "human_ocr_ensembl" / "train").glob("*.csv.gz")):
        with gzip.open(path, "rt") as handle:
            next(handle)
            lengths += [int(r.split(",")[3]) - int(r.split(",")[2]) for r in handle if r.strip()]
    return lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed optimiser steps per mode (after one warm-up)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=None)
    parser.add_argument("--infer-examples", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-before", action="store_true", help="skip the run of the package as it was at "
                        f"{BEFORE_REF} (issue 10's 'today')")
    parser.add_argument("--mode", choices=("micro", "full", "before"), help=argparse.SUPPRESS)  # child process
    parser.add_argument("--code", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(_child_before(args) if args.mode == "before" else _child(args)))
        return
    import tempfile

    import torch

    out = {"benchmark": "finetune", "model": "caduceus-ph 470k", "task": "human_nontata_promoters (real, 9,034)",
           "batch": args.batch, "threads": args.threads, "torch": torch.__version__,
           "load_avg_1min_at_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as old_code:
        modes = ["full", "micro"]
        if not args.no_before and _export_before(Path(old_code)):
            modes.insert(0, "before")
        for mode in modes:
            cmd = [sys.executable, __file__, "--mode", mode, "--steps", str(args.steps), "--batch", str(args.batch),
                   "--infer-examples", str(args.infer_examples), "--threads", str(args.threads)]
            if args.micro_batch:
                cmd += ["--micro-batch", str(args.micro_batch)]
            if mode == "before":
                cmd += ["--code", old_code]
            result = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out[mode] = json.loads(result.stdout.strip().splitlines()[-1])
    # speedups of the micro-batched path: against the full batch on today's engine (the batching alone),
    # and against the package as it was when the issue was filed (its "today": batching and kernels)
    for base, suffix in (("full", ""), ("before", "_vs_before")):
        if base not in out:
            continue
        for key in ("train", "infer"):
            for unit in ("s", "cpu_s"):
                name = f"{key}_examples_per_{unit}"
                out[f"{key}_speedup{suffix}" + ("" if unit == "s" else "_cpu")] = round(
                    out["micro"][name] / out[base][name], 2)
        out[f"peak_rss_ratio{suffix}"] = round(out["micro"]["peak_rss_gb"] / out[base]["peak_rss_gb"], 3)
    # human_ocr_ensembl: lengths vary (mean 326, max 593), so the micro-batched path also pads far less
    from dnadiff.finetuning.batches import default_micro_batch

    lengths = _ocr_lengths()
    n, cap = len(lengths), max(lengths)
    micro = default_micro_batch(args.batch, cap, 118, 4)
    old_tokens, new_tokens = padded_tokens(lengths, args.batch, None, cap), padded_tokens(lengths, args.batch, micro, cap)
    per_token = out["micro"]["train_examples_per_cpu_s"] * out["micro"]["padded_length"]  # tokens per CPU second
    infer_per_token = out["micro"]["infer_examples_per_cpu_s"] * out["micro"]["padded_length"]
    folds, epochs = 5, 10
    train_s = folds * epochs * (n * 4 / 5) * new_tokens / per_token
    val_s = folds * epochs * (n / 5) * new_tokens / infer_per_token
    out["ocr_full_run"] = {"train_examples": n, "max_length": cap, "mean_length": round(sum(lengths) / n, 1),
                           "micro_batch": micro, "padded_tokens_per_example_full": round(old_tokens, 1),
                           "padded_tokens_per_example_micro": round(new_tokens, 1),
                           "padding_factor": round(old_tokens / new_tokens, 2),
                           "estimated_train_speedup_cpu": round(out["train_speedup_cpu"] * old_tokens / new_tokens, 2),
                           "folds": folds, "epochs": epochs,
                           "estimated_cpu_hours_one_thread": round((train_s + val_s) / 3600, 1),
                           "note": "micro-batched CPU-time rates measured here, scaled by padded tokens per example "
                                   "(cost taken as linear in tokens); divide by the cores used"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
