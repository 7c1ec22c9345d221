"""Classification metrics for the Genomic Benchmarks: accuracy, F1, MCC, AUROC, and their summaries.

F1 is the positive-class F1 for two classes and the macro average for more; AUROC is the
usual ROC AUC of the positive-class probability for two classes and the macro one-vs-rest
AUROC for more. MCC is the (multi-class) Matthews correlation coefficient.
"""
from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

METRICS = ("accuracy", "f1", "mcc", "auroc")


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Metrics of predicted class probabilities against true class ids.

    Args:
        labels: int[N] true class ids in 0..K-1.
        probs: float[N, K] class probabilities (rows sum to 1); the prediction is the argmax.
    Returns:
        ``{"accuracy", "f1", "mcc", "auroc", "n"}``; AUROC is NaN when only one class is present.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    num_classes = probs.shape[1]
    preds = probs.argmax(axis=1)
    everything = list(range(num_classes))
    if num_classes == 2:
        f1 = skm.f1_score(labels, preds, average="binary", zero_division=0)
    else:
        f1 = skm.f1_score(labels, preds, average="macro", labels=everything, zero_division=0)
    present = np.unique(labels)
    if len(present) < 2:
        auroc = float("nan")
    elif num_classes == 2:
        auroc = skm.roc_auc_score(labels, probs[:, 1])
    else:
        auroc = _macro_ovr_auroc(labels, probs, present)
    return {
        "accuracy": float((preds == labels).mean()),
        "f1": float(f1),
        "mcc": float(skm.matthews_corrcoef(labels, preds)),
        "auroc": float(auroc),
        "n": int(len(labels)),
    }


def _macro_ovr_auroc(labels: np.ndarray, probs: np.ndarray, present: np.ndarray) -> float:
    """Mean over the classes present of the AUROC of class k versus the rest."""
    return float(np.mean([skm.roc_auc_score(labels == k, probs[:, k]) for k in present]))


def summarize(values: list[float]) -> dict[str, float]:
    """``{"mean", "std", "min", "max"}`` of per-fold values (std with ddof=1; 0 for one value).

    NaN values (e.g. an undefined AUROC) are left out; all-NaN gives NaN everywhere.
    """
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan")}
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "min": float(arr.min()), "max": float(arr.max())}


def summarize_folds(folds: list[dict], prefix: str = "") -> dict[str, dict[str, float]]:
    """Summary of each metric over fold records (keys ``prefix + metric``), keyed by metric name."""
    return {m: summarize([f[prefix + m] for f in folds]) for m in METRICS if folds and prefix + m in folds[0]}
