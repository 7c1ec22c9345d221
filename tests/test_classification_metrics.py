"""Classification metrics against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dnadiff.eval.classification import classification_metrics, summarize, summarize_folds


def _binary(p1):
    p1 = np.asarray(p1)
    return np.stack([1 - p1, p1], axis=1)


def test_two_by_two_confusion_matrix():
    # TP=3, FN=1, FP=2, TN=4
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    p1 = [0.9, 0.8, 0.7, 0.3, 0.6, 0.55, 0.4, 0.2, 0.1, 0.05]
    m = classification_metrics(labels, _binary(p1))
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["f1"] == pytest.approx(6 / 9)  # 2TP / (2TP + FP + FN)
    assert m["mcc"] == pytest.approx((3 * 4 - 2 * 1) / math.sqrt(5 * 4 * 6 * 5))
    assert m["auroc"] == pytest.approx(21 / 24)  # positive-negative pairs ranked correctly
    assert m["n"] == 10


def test_three_classes_macro_f1_and_one_vs_rest_auroc():
    labels = [0, 0, 1, 1, 2, 2]
    probs = np.array([[.7, .2, .1], [.3, .6, .1], [.1, .8, .1], [.2, .5, .3], [.1, .2, .7], [.5, .1, .4]])
    m = classification_metrics(labels, probs)  # predictions 0, 1, 1, 1, 2, 0
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    # multi-class MCC: (c s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2))
    assert m["mcc"] == pytest.approx((4 * 6 - (2 * 2 + 3 * 2 + 1 * 2)) / math.sqrt((36 - 14) * (36 - 12)))
    assert m["auroc"] == pytest.approx((7 / 8 + 7 / 8 + 1) / 3)


def test_perfect_and_constant_predictions():
    labels = [0, 1, 1, 0]
    perfect = classification_metrics(labels, _binary([0.1, 0.9, 0.8, 0.2]))
    assert perfect == {"accuracy": 1.0, "f1": 1.0, "mcc": 1.0, "auroc": 1.0, "n": 4}
    constant = classification_metrics(labels, _binary([0.4, 0.4, 0.4, 0.4]))
    assert constant["accuracy"] == 0.5 and constant["f1"] == 0.0 and constant["mcc"] == 0.0
    assert constant["auroc"] == 0.5
    one_class = classification_metrics([1, 1], _binary([0.7, 0.2]))
    assert math.isnan(one_class["auroc"]) and one_class["accuracy"] == 0.5


def test_summary_mean_sample_std_min_max():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s == pytest.approx({"mean": 2.5, "std": math.sqrt(5 / 3), "min": 1.0, "max": 4.0})
    assert summarize([0.7]) == {"mean": 0.7, "std": 0.0, "min": 0.7, "max": 0.7}
    assert summarize([0.5, float("nan"), 0.7])["mean"] == pytest.approx(0.6)


def test_summarize_folds_per_metric():
    folds = [{"accuracy": 0.6, "f1": 0.5, "mcc": 0.2, "auroc": 0.7},
             {"accuracy": 0.8, "f1": 0.7, "mcc": 0.6, "auroc": 0.9}]
    summary = summarize_folds(folds)
    assert set(summary) == {"accuracy", "f1", "mcc", "auroc"}
    assert summary["accuracy"]["mean"] == pytest.approx(0.7) and summary["mcc"]["max"] == 0.6
    assert summary["auroc"]["std"] == pytest.approx(math.sqrt(0.02))
