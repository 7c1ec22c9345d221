"""Fine-tuning evidence on real data: 5-fold cross-validation on the real Genomic Benchmarks test splits
(human_nontata_promoters, human_enhancers_cohn) of a Caduceus-Ph from scratch and the same size pretrained
with masked diffusion (``--checkpoint``), beside the k-mer logistic regression and the GB CNN, all on the
same folds. Prints ONE JSON line (``--markdown`` also prints the table).

``--max-examples`` subsamples each task (class-stratified, fixed seed) to fit a CPU budget; the folds,
the subsample and the seeds are the same for every model.

    python benchmarks/finetune_accuracy.py --model-config demo --checkpoint demo_out/model.pt \\
        --max-examples 1000 --epochs 3 --batch-size 32 --markdown
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dnadiff.finetuning.trainer import load_finetune_config as load_config  # noqa: E402
from dnadiff.data.genomic_benchmarks import load_task  # noqa: E402
from dnadiff.finetuning import protocol_splits, run_finetune, subsample  # noqa: E402
from dnadiff.finetuning.trainer import backbone_from_checkpoint, backbone_from_scratch, build_classifier  # noqa: E402

TASKS = ("human_nontata_promoters", "human_enhancers_cohn")


def _summary(folds: list[dict]) -> dict:
    import numpy as np

    acc = [f["accuracy"] for f in folds]
    return {"acc_mean": round(float(np.mean(acc)), 4), "acc_std": round(float(np.std(acc, ddof=1)), 4),
            "acc_per_fold": [round(a, 4) for a in acc], "sec_per_fold": round(float(np.mean([f["seconds"] for f in folds])), 1)}


def _partial(task: str, model: str, record: dict) -> None:
    """One line per finished fold on stderr (partial results survive an interrupted run)."""
    print(json.dumps({"task": task, "model": model, "fold": record["fold"], "accuracy": round(record["accuracy"], 4),
                      "seconds": round(record["seconds"], 1)}), file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "genomic_benchmarks"))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--max-examples", type=int, default=1000)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, help="override the task config's learning rate")
    parser.add_argument("--model-config", default="demo", help="pretraining config whose model size is used from scratch")
    parser.add_argument("--checkpoint", help="a pretrained dnadiff model.pt of that size")
    parser.add_argument("--cnn-epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    import torch

    from dnadiff.config import load_config as load_pretrain_config

    torch.set_num_threads(args.threads)
    spec = dict(load_pretrain_config(args.model_config, [])["model"])
    pretrained = backbone_from_checkpoint(args.checkpoint)[0] if args.checkpoint else None
    report = {"benchmark": "finetune_accuracy", "threads": args.threads, "model_spec": spec, "folds": args.folds,
              "epochs": args.epochs, "batch_size": args.batch_size, "max_examples": args.max_examples,
              "checkpoint": args.checkpoint, "tasks": {}}
    started = time.perf_counter()
    for task in args.tasks:
        data = load_task(task, data=Path(args.data_dir) / f"{task}.test.tsv")
        n_full = len(data.train)
        data.train = subsample(data.train, args.max_examples, args.seed)
        config = load_config(task)
        config.epochs, config.batch_size = args.epochs, args.batch_size
        if args.lr:
            config.lr = args.lr
        splits = protocol_splits(data, "cv", args.folds, args.seed)
        entry = {"n": len(data.train), "n_full": n_full, "lr": config.lr}
        runs = {"scratch": lambda: backbone_from_scratch(spec)}
        if pretrained is not None:
            runs["pretrained"] = lambda: copy.deepcopy(pretrained)
        for name, factory in runs.items():
            make = lambda f=factory: build_classifier(f(), data.num_classes, config.pooling)
            res = run_finetune(data, make, config, "ph", folds=args.folds, seed=args.seed, baselines=(), splits=splits,
                               on_fold=lambda r, t=task, m=name: _partial(t, m, r["model"]))
            entry[name] = _summary(res["folds"])
        res = run_finetune(data, None, config, "ph", folds=args.folds, seed=args.seed, cnn_epochs=args.cnn_epochs,
                           splits=splits, on_fold=lambda r, t=task: [_partial(t, n, b) for n, b in r["baselines"].items()])
        for name, base in res["baselines"].items():
            entry[name] = _summary(base["folds"])
        report["tasks"][task] = entry
    report["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report))
    if args.markdown:
        names = [n for n in ("scratch", "pretrained", "kmer_logreg", "cnn") if n in next(iter(report["tasks"].values()))]
        print("\n| task (examples, 5-fold CV) | " + " | ".join(names) + " |")
        print("|---" * (1 + len(names)) + "|")
        for task, e in report["tasks"].items():
            cells = [f"{e[n]['acc_mean']:.3f} ± {e[n]['acc_std']:.3f}" for n in names]
            print(f"| {task} ({e['n']} of {e['n_full']}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
