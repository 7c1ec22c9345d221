"""Genomic Benchmarks fine-tuning: protocols (cross-validation or the Caduceus re-splits), the model
and both baselines on the same splits, and the results record.

:func:`run_finetune` is the whole experiment (:func:`run_fold` one fold of it, :func:`combine` merges folds); ``dnadiff finetune`` and ``benchmarks/finetune.py``
call it. Modules: ``cv`` (splits), ``trainer`` (one fold of the model), ``baselines`` (k-mer
logistic regression, GB CNN), ``report`` (results.json / results.md).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
from sklearn.model_selection import train_test_split
from torch import nn

from dnadiff.data.genomic_benchmarks import Split, TaskData
from dnadiff.errors import UserError
from dnadiff.rc import rc_policy
from dnadiff.eval.classification import METRICS, classification_metrics, summarize_folds
from dnadiff.finetuning.baselines import CNNBaseline, KmerLogReg
from dnadiff.finetuning.cv import SELECTIONS, caduceus_resplits, inner_split, stratified_folds
from dnadiff.finetuning.trainer import FinetuneConfig, predict_proba, train_fold

#: progress(event, fold, epoch, value): events "fold" (a run starts), "epoch" (value = val accuracy),
#: "baselines" (the baselines of a run start).
Progress = Callable[[str, int, int, float], None]


def subsample(split: Split, max_examples: int | None, seed: int) -> Split:
    """At most ``max_examples`` examples of ``split``, class-stratified when every class allows it."""
    if max_examples is None or len(split) <= max_examples:
        return split
    index = np.arange(len(split))
    counts = np.bincount(split.labels)
    classes = int((counts > 0).sum())
    # stratified only when every class has 2 examples and both parts can hold one of each class (else
    # scikit-learn refuses: "test_size ... should be greater or equal to the number of classes")
    can_stratify = counts[counts > 0].min() >= 2 and min(max_examples, len(split) - max_examples) >= classes
    stratify = split.labels if can_stratify else None
    keep, _ = train_test_split(index, train_size=max_examples, stratify=stratify, random_state=seed)
    return split.subset(np.sort(keep))


def protocol_splits(data: TaskData, protocol: str, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, val_idx) per run: stratified k-fold (``cv``) or k random 90/10 re-splits (``caduceus``)."""
    if protocol == "cv":
        return stratified_folds(data.train.labels, folds, seed, data.class_names)
    if protocol == "caduceus":
        if data.test is None:
            raise UserError("--protocol caduceus scores on the official test split, which this source lacks: "
                            "give --test-data, the coordinates or the cache, or use --protocol cv")
        return caduceus_resplits(len(data.train), folds, seed)
    raise UserError(f"unknown protocol {protocol!r}: use cv or caduceus")


def _record(index: int, scored: dict, extra: dict) -> dict:
    return {"fold": index, **{m: scored[m] for m in METRICS}, "n": scored["n"], **extra}


def selection_name(protocol: str, selection: str) -> str:
    """What picks a run's epoch: "inner" / "held-out" (``cv``), "validation" (``caduceus``: its 10% re-split)."""
    return "validation" if protocol == "caduceus" else selection


def run_fold(
    data: TaskData,
    index: int,
    split: tuple[np.ndarray, np.ndarray],
    make_classifier: Callable[[], nn.Module] | None,
    config: FinetuneConfig,
    variant: str,
    protocol: str = "cv",
    seed: int = 0,
    baselines: tuple[str, ...] = ("kmer_logreg", "cnn"),
    cnn_epochs: int = 10,
    progress: Progress | None = None,
    device: dict | None = None,
    on_model: Callable[[int, nn.Module], None] | None = None,
    selection: str = "inner",
) -> dict:
    """One run (fold ``index`` of ``cv``, or re-split ``index`` of ``caduceus``) of the model and the baselines.

    ``selection`` (``cv`` only): "inner" trains on the training folds less a stratified inner validation split
    (:func:`dnadiff.finetuning.cv.inner_split`, seed ``seed + index``), picks the epoch on that split and scores
    the held-out fold once; "held-out" picks the epoch on the held-out fold it reports (the papers' choice,
    optimistic). The k-mer baseline trains on the same examples as the model; the CNN picks its epoch the same way.

    Returns ``{"fold": index, "model": record or None, "baselines": {name: record}, "selection": ...,
    "inner_index": int list or None}``; a record holds the metrics of the held-out fold (``cv``) or of the test
    split (``caduceus``), ``n``, ``seconds`` and, with ``cv`` and a test split, ``test`` metrics; the model's also
    ``selection_metrics`` (its chosen epoch on the selection split) and ``val_accuracy_per_epoch`` (on the
    selection split). ``on_model(index, classifier)`` receives the run's trained classifier (its selected epoch).
    """
    if selection not in SELECTIONS:
        raise UserError(f"unknown selection {selection!r}: use {' or '.join(SELECTIONS)}")
    progress = progress or (lambda *a: None)
    tr, va = split
    input_len = max(len(s) for s in data.train.seqs + (data.test.seqs if data.test else []))
    input_len = min(input_len, config.max_length)
    held = data.train.subset(va)
    scored_on_test = protocol == "caduceus"
    inner_index = None
    if protocol == "cv" and selection == "inner":
        fit_idx, inner_index = inner_split(data.train.labels, tr, seed + index)
        fit, chooser = data.train.subset(fit_idx), data.train.subset(inner_index)
    else:  # caduceus: its validation re-split; cv held-out: the scored fold itself
        fit, chooser = data.train.subset(tr), held
    target = data.test if scored_on_test else held
    progress("fold", index, 0, float("nan"))
    model_record = None
    if make_classifier is not None:
        start = time.perf_counter()
        out = train_fold(make_classifier, fit, chooser, data.test, config, variant, seed + index,
                         on_epoch=lambda epoch, acc: progress("epoch", index, epoch, acc), device=device)
        if on_model is not None:
            on_model(index, out["classifier"])
        if scored_on_test:
            main, held_metrics = out["test"], out["val"]
        elif inner_index is None:
            main = held_metrics = out["val"]
        else:  # the held-out fold, scored once with the epoch the inner split chose
            probs = predict_proba(out["classifier"], held.seqs, config.max_length, rc_policy(variant).conjoin,
                                  precision=(device or {}).get("precision", "32-true"))
            main = held_metrics = classification_metrics(held.labels, probs)
        model_record = _record(index, main, {
            "best_epoch": out["best_epoch"], "seconds": time.perf_counter() - start,
            "val": held_metrics, "selection_metrics": out["val"], "test": out["test"],
            "val_accuracy_per_epoch": out["val_accuracy_per_epoch"],
            "micro_batch": out["micro_batch"], "optimizer_steps": out["optimizer_steps"]})
    base_records = {}
    if baselines:
        progress("baselines", index, 0, float("nan"))
        for name, model in (
            ("kmer_logreg", lambda: KmerLogReg(seed=seed).fit(fit.seqs, fit.labels, data.num_classes)),
            ("cnn", lambda: CNNBaseline(data.num_classes, input_len, epochs=cnn_epochs, seed=seed + index)
             .fit(fit.seqs, fit.labels, chooser.seqs, chooser.labels)),
        ):
            if name not in baselines:
                continue
            start = time.perf_counter()
            fitted = model()
            record = _record(index, classification_metrics(target.labels, fitted.predict_proba(target.seqs)),
                             {"seconds": time.perf_counter() - start})
            if data.test is not None and not scored_on_test:
                record["test"] = classification_metrics(data.test.labels, fitted.predict_proba(data.test.seqs))
            base_records[name] = record
    return {"fold": index, "model": model_record, "baselines": base_records,
            "selection": selection_name(protocol, selection),
            "inner_index": None if inner_index is None else [int(i) for i in inner_index]}


def run_header(data: TaskData, config: FinetuneConfig, protocol: str, folds: int, seed: int,
               selection: str = "inner") -> dict:
    """What identifies a fine-tuning experiment (every fold file of one experiment holds the same header)."""
    return {
        "task": data.task,
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "protocol": protocol,
        "num_folds": folds,
        "num_train": len(data.train),
        "num_test": len(data.test) if data.test is not None else 0,
        "source": data.source,
        "seed": seed,
        "selection": selection_name(protocol, selection),
        "config": dict(vars(config)),
        "summary_scope": "held-out folds" if protocol == "cv" else "official test split",
    }


def combine(header: dict, fold_runs: list[dict]) -> dict:
    """The results dict of an experiment from its header and its :func:`run_fold` outputs (any order)."""
    fold_runs = sorted(fold_runs, key=lambda r: r["fold"])
    model_folds = [r["model"] for r in fold_runs if r["model"] is not None]
    names = list(dict.fromkeys(n for r in fold_runs for n in r["baselines"]))
    base_folds = {name: [r["baselines"][name] for r in fold_runs if name in r["baselines"]] for name in names}
    results = {
        **header,
        "folds": model_folds,
        "summary": summarize_folds(model_folds),
        "baselines": {name: {"folds": f, "summary": summarize_folds(f)} for name, f in base_folds.items()},
    }
    if header["num_test"] and header["protocol"] == "cv":
        results["test_summary"] = summarize_folds([f["test"] for f in model_folds])
        for base in results["baselines"].values():
            base["test_summary"] = summarize_folds([f["test"] for f in base["folds"]])
    return results


def run_finetune(
    data: TaskData,
    make_classifier: Callable[[], nn.Module] | None,
    config: FinetuneConfig,
    variant: str,
    protocol: str = "cv",
    folds: int = 5,
    seed: int = 0,
    baselines: tuple[str, ...] = ("kmer_logreg", "cnn"),
    cnn_epochs: int = 10,
    progress: Progress | None = None,
    splits: list[tuple[np.ndarray, np.ndarray]] | None = None,
    only: int | None = None,
    device: dict | None = None,
    on_fold: Callable[[dict], None] | None = None,
    on_model: Callable[[int, nn.Module], None] | None = None,
    selection: str = "inner",
) -> dict:
    """Run the protocol for the model (``make_classifier`` builds a fresh classifier per run; None
    runs the baselines only) and the named ``baselines`` (default both) on the same splits.

    The metrics a fold reports at top level are those of the held-out fold (``cv``) or of the
    test split (``caduceus``); with ``cv`` and a test split, ``fold["test"]`` holds the test metrics.
    ``splits`` (from :func:`protocol_splits`) may be passed when the caller validated them already;
    ``only`` runs that one fold; ``on_fold(run)`` receives each :func:`run_fold` output as it completes,
    ``on_model(index, classifier)`` each run's trained classifier; ``selection`` as in :func:`run_fold`.
    Returns the results dict (without task/model descriptions, which the caller adds).
    """
    splits = splits if splits is not None else protocol_splits(data, protocol, folds, seed)
    runs = []
    for index, split in enumerate(splits):
        if only is not None and index != only:
            continue
        run = run_fold(data, index, split, make_classifier, config, variant, protocol, seed, baselines, cnn_epochs,
                       progress, device, on_model, selection)
        if on_fold is not None:
            on_fold(run)
        runs.append(run)
    return combine(run_header(data, config, protocol, folds, seed, selection), runs)
