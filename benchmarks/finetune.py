"""Fine-tuning benchmark on the two real Genomic Benchmarks test splits (CPU): wall time per fold and
accuracy of the 470k Caduceus-Ph, from scratch and (with --checkpoint) from a pretrained checkpoint,
beside the k-mer logistic regression and the GB CNN on the same folds, and the published figures.

Prints ONE JSON line. ``--max-examples`` subsamples each task for the model runs (CPU minutes);
the baselines run on the same subsample (``*_same``) and on the whole split (``*_full``: the k-mer
model, and the CNN with ``--full-cnn``); the ratio ``model / kmer`` is against the same-subsample k-mer.

    python benchmarks/finetune.py --max-examples 100 --epochs 1 [--checkpoint demo_out/model.pt]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dnadiff.data.genomic_benchmarks import load_task  # noqa: E402
from dnadiff.finetune import protocol_splits, run_finetune, subsample  # noqa: E402
from dnadiff.finetune.trainer import (backbone_from_checkpoint, backbone_from_scratch,  # noqa: E402
                                      build_classifier, rc_variant)
from dnadiff.models.sizes import caduceus_spec  # noqa: E402
from dnadiff.commands.finetune import load_config  # noqa: E402

#: Caduceus paper Table 1 (5 seeds, top-1 accuracy on the official test split).
PUBLISHED = {
    "human_enhancers_cohn": {"cnn": 0.702, "caduceus_ph": 0.747},
    "human_nontata_promoters": {"cnn": 0.861, "caduceus_ph": 0.946},
}


def _acc(results: dict, key: str = "summary") -> dict:
    s = results[key]["accuracy"]
    return {"acc_mean": round(s["mean"], 4), "acc_std": round(s["std"], 4)}


def _model_run(data, config, folds, seed, backbone_factory, splits) -> dict:
    probe = backbone_factory()
    variant = rc_variant(probe)
    make = lambda: build_classifier(backbone_factory(), data.num_classes, config.pooling)
    start = time.perf_counter()
    results = run_finetune(data, make, config, variant, folds=folds, seed=seed, baselines=(), splits=splits)
    seconds = [f["seconds"] for f in results["folds"]]
    return {**_acc(results), "sec_per_fold": round(sum(seconds) / len(seconds), 1),
            "wall_s": round(time.perf_counter() - start, 1)}


def _baselines(data, config, folds, seed, splits=None, names=("kmer_logreg", "cnn")) -> dict:
    results = run_finetune(data, None, config, "ph", folds=folds, seed=seed, cnn_epochs=10, splits=splits,
                           baselines=names)
    out = {}
    for name, base in results["baselines"].items():
        secs = [f["seconds"] for f in base["folds"]]
        out[name] = {**_acc(base), "sec_per_fold": round(sum(secs) / len(secs), 1)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "genomic_benchmarks"))
    parser.add_argument("--tasks", nargs="+", default=list(PUBLISHED))
    parser.add_argument("--max-examples", type=int, default=100, help="examples per task for the model runs")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, help="crop sequences (default: the task config's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--checkpoint", help="a pretrained dnadiff model.pt (e.g. the demo's)")
    parser.add_argument("--skip-full-baselines", action="store_true")
    parser.add_argument("--full-cnn", action="store_true", help="also the CNN on the whole split (slow on CPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    report = {"benchmark": "finetune", "device": "cpu", "torch_threads": torch.get_num_threads(),
              "model": "caduceus-ph 470k", "folds": args.folds, "epochs": args.epochs,
              "max_examples": args.max_examples, "tasks": {}}
    for task in args.tasks:
        full = load_task(task, data=Path(args.data_dir) / f"{task}.test.tsv")
        config = load_config(task)
        config.epochs, config.batch_size = args.epochs, args.batch_size
        if args.max_length:
            config.max_length = args.max_length
        data = load_task(task, data=Path(args.data_dir) / f"{task}.test.tsv")
        data.train = subsample(data.train, args.max_examples, args.seed)
        splits = protocol_splits(data, "cv", args.folds, args.seed)
        entry = {"n_model": len(data.train), "n_full": len(full.train), "max_length": config.max_length,
                 "published": PUBLISHED.get(task, {})}
        spec = caduceus_spec("470k", variant="ph")
        entry["scratch"] = _model_run(data, config, args.folds, args.seed, lambda: backbone_from_scratch(spec), splits)
        if args.checkpoint:
            backbone, _ = backbone_from_checkpoint(args.checkpoint)
            import copy

            entry["checkpoint"] = _model_run(data, config, args.folds, args.seed, lambda: copy.deepcopy(backbone), splits)
        for name, value in _baselines(data, config, args.folds, args.seed, splits).items():
            entry[f"{name}_same"] = value
        if not args.skip_full_baselines:
            full_config = load_config(task)
            names = ("kmer_logreg", "cnn") if args.full_cnn else ("kmer_logreg",)
            for name, value in _baselines(full, full_config, args.folds, args.seed, names=names).items():
                entry[f"{name}_full"] = value
        kmer = entry["kmer_logreg_same"]["acc_mean"]
        entry["scratch_over_kmer"] = round(entry["scratch"]["acc_mean"] / kmer, 3) if kmer else None
        if "checkpoint" in entry:
            entry["checkpoint_over_kmer"] = round(entry["checkpoint"]["acc_mean"] / kmer, 3) if kmer else None
        report["tasks"][task] = entry
    print(json.dumps(report))


if __name__ == "__main__":
    main()
