"""Fold splits of the two protocols and the warm-up + cosine schedule."""
from __future__ import annotations


import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from dnadiff.errors import UserError
from dnadiff.finetuning import protocol_splits, subsample
from dnadiff.finetuning.cv import caduceus_resplits, stratified_folds

LABELS = np.array([0] * 23 + [1] * 17 + [2] * 10)


def test_stratified_folds_partition_and_balance():
    folds = stratified_folds(LABELS, 5, seed=3, class_names=["a", "b", "c"])
    assert len(folds) == 5
    held = np.concatenate([va for _, va in folds])
    assert sorted(held.tolist()) == list(range(len(LABELS)))  # every example held out exactly once
    for tr, va in folds:
        assert not set(tr) & set(va) and len(tr) + len(va) == len(LABELS)
        counts = np.bincount(LABELS[va], minlength=3)
        assert np.all(np.abs(counts - np.bincount(LABELS) / 5) <= 1)  # stratified


def test_folds_are_sklearns_with_the_fixed_seed():
    ours = stratified_folds(LABELS, 5, seed=7, class_names=["a", "b", "c"])
    theirs = StratifiedKFold(5, shuffle=True, random_state=7).split(np.zeros(len(LABELS)), LABELS)
    for (tr, va), (tr2, va2) in zip(ours, theirs):
        assert tr.tolist() == tr2.tolist() and va.tolist() == va2.tolist()
    again = stratified_folds(LABELS, 5, seed=7, class_names=["a", "b", "c"])
    assert all((a[1] == b[1]).all() for a, b in zip(ours, again))
    other = stratified_folds(LABELS, 5, seed=8, class_names=["a", "b", "c"])
    assert any((a[1] != b[1]).any() for a, b in zip(ours, other))


def test_class_with_fewer_than_two_examples_per_fold():
    labels = np.array([0] * 20 + [1] * 9)
    with pytest.raises(UserError, match=r"class 'pos' has 9 example\(s\), fewer than 2 x 5 folds") as err:
        stratified_folds(labels, 5, seed=0, class_names=["neg", "pos"])
    assert "--folds to at most 4" in str(err.value)
    assert len(stratified_folds(labels, 4, seed=0, class_names=["neg", "pos"])) == 4


def test_a_single_class_is_refused():
    with pytest.raises(UserError, match="single class"):
        stratified_folds(np.zeros(30, dtype=int), 5, seed=0, class_names=["neg", "pos"])


def test_caduceus_resplits_ninety_ten():
    splits = caduceus_resplits(100, runs=5, seed=1)
    assert len(splits) == 5
    for tr, va in splits:
        assert len(va) == 10 and len(tr) == 90 and not set(tr) & set(va)
    assert len({tuple(va) for _, va in splits}) == 5  # each seed its own re-split
    assert [va.tolist() for _, va in caduceus_resplits(100, 5, 1)] == [va.tolist() for _, va in splits]


def test_caduceus_protocol_needs_a_test_split():
    from dnadiff.data.genomic_benchmarks import Split, TaskData

    data = TaskData("human_enhancers_cohn", ["0", "1"], Split(["ACGT"] * 40, np.array([0, 1] * 20)), None, "t")
    with pytest.raises(UserError, match="test split"):
        protocol_splits(data, "caduceus", 5, 0)


def test_subsample_is_stratified_and_deterministic():
    from dnadiff.data.genomic_benchmarks import Split

    split = Split([str(i) for i in range(len(LABELS))], LABELS)
    small = subsample(split, 20, seed=0)
    assert len(small) == 20 and np.bincount(small.labels).tolist() in ([9, 7, 4], [9, 7, 4])
    assert small.seqs == subsample(split, 20, seed=0).seqs
    assert subsample(split, 1000, seed=0) is split
