"""Train / validation index splits for the two fine-tuning protocols.

``cv``: scikit-learn ``StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)``;
fold i trains on the other folds and is scored on fold i; its epoch is picked on an inner validation
split carved from the other folds (:func:`inner_split`, ``selection="inner"``) or, as the Caduceus and
HyenaDNA papers do, on fold i itself (``selection="held-out"``: optimistic).
``caduceus``: the Caduceus paper's protocol, ``runs`` seeds (seed, seed+1, ...), each a random
90/10 re-split of the train split; the best-validation model is scored on the test split.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold

from dnadiff.errors import UserError

#: how a ``cv`` fold picks its epoch: "inner" (honest: on a validation split carved from the training folds,
#: the held-out fold scored once) or "held-out" (the papers' selection on the scored fold itself: optimistic)
SELECTIONS = ("inner", "held-out")
#: share of a fold's training examples held back for the inner (epoch-selection) validation split
INNER_FRACTION = 0.1


def check_class_counts(labels: np.ndarray, folds: int, class_names: list[str]) -> None:
    """UserError when the data hold a single class, or a class has fewer than ``2 x folds`` examples (each
    fold must hold at least one example of it for validation and one more for training)."""
    counts = np.bincount(np.asarray(labels), minlength=len(class_names))
    present = [name for name, count in zip(class_names, counts) if count > 0]
    if len(present) < 2:
        raise UserError(f"the data hold a single class ({present[0] if present else 'none'!r}): classification "
                        "needs examples of at least two classes in the label column")
    for name, count in zip(class_names, counts):
        if count < 2 * folds:
            most = int(counts[counts > 0].min()) // 2  # the most folds every class allows
            fix = (f"or lower --folds to at most {most}" if 2 <= most < folds else
                   "(cross-validation needs at least 2 folds, so at least 4 examples per class)")
            raise UserError(f"class {name!r} has {count} example(s), fewer than 2 x {folds} folds: "
                            f"give at least {2 * folds} examples of it {fix}")


def stratified_folds(labels: np.ndarray, folds: int, seed: int, class_names: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` pairs ``(train_idx int[M], val_idx int[N-M])`` partitioning 0..N-1, class-stratified.

    The same ``labels``, ``folds`` and ``seed`` always give the same folds.
    """
    if folds < 2:
        raise UserError(f"--folds {folds} is too few: cross-validation needs at least 2 folds")
    labels = np.asarray(labels)
    check_class_counts(labels, folds, class_names)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(tr.astype(np.int64), va.astype(np.int64)) for tr, va in splitter.split(np.zeros(len(labels)), labels)]


def caduceus_resplits(num_examples: int, runs: int, seed: int, val_fraction: float = 0.1) -> list[tuple[np.ndarray, np.ndarray]]:
    """``runs`` random re-splits ``(train_idx, val_idx)`` of 0..N-1, the i-th drawn with seed ``seed + i``.

    Each holds out ``round(val_fraction * N)`` examples (at least one) for validation.
    """
    num_val = max(1, int(round(val_fraction * num_examples)))
    if num_val >= num_examples:
        raise UserError(f"{num_examples} training example(s) cannot be re-split 90/10: give more examples")
    splits = []
    for run in range(runs):
        order = np.random.default_rng(seed + run).permutation(num_examples)
        splits.append((np.sort(order[num_val:]), np.sort(order[:num_val])))
    return splits


def inner_split(labels: np.ndarray, train_idx: np.ndarray, seed: int,
                fraction: float = INNER_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Carve an inner validation split from a fold's training indices: ``(fit_idx int[M], inner_idx int[K])``,
    disjoint, sorted, together ``train_idx``; class-stratified with ``random_state=seed``.

    ``K = max(num_classes, round(fraction * len(train_idx)))``, so each class can appear in it; the same
    inputs always give the same split. The model (and the baselines) train on ``fit_idx`` and pick their
    epoch on ``inner_idx``; the fold's held-out examples are never seen before they are scored.
    """
    from sklearn.model_selection import train_test_split

    train_idx = np.asarray(train_idx, dtype=np.int64)
    sub = np.asarray(labels)[train_idx]
    classes = np.unique(sub)
    size = max(len(classes), int(round(fraction * len(train_idx))))
    if size >= len(train_idx):
        raise UserError(f"{len(train_idx)} training example(s) per fold leave none to train on after the inner "
                        "validation split: give more examples or use --selection held-out")
    counts = np.bincount(sub)
    stratify = sub if counts[counts > 0].min() >= 2 else None
    fit, inner = train_test_split(train_idx, test_size=size, stratify=stratify, random_state=seed)
    return np.sort(fit), np.sort(inner)
