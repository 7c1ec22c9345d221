"""Pictures of a run, for a person who would rather look than read (matplotlib, an optional extra:
``pip install dnadiff[plots]``; without it each function says so in one line and returns None).

* :func:`pretrain_curves` -- ``OUT/curves.png``: train and validation bits/token against steps, with the
  order-k Markov baseline's line (lower is better).
* :func:`finetune_plot` -- ``OUT/folds.png``: accuracy and AUROC per fold of the model beside the baselines.
* :func:`report_plot` -- the field figures of ``sample --report`` beside their real-vs-real floors, with the
  intervals, each panel saying whether higher or lower is better.

Every PNG is written through :func:`dnadiff.atomic.atomic_write`.
"""
from __future__ import annotations

import csv
import io
import math
import os
import sys
from pathlib import Path

from dnadiff.atomic import atomic_write

NO_MATPLOTLIB = "no plot: matplotlib is not installed (pip install dnadiff[plots])"


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None (one line on stderr) when absent."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        print(NO_MATPLOTLIB, file=sys.stderr)
        return None
    return plt


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def read_curves(metrics_csv: str | os.PathLike) -> dict:
    """``{"train": [(step, bits)], "val": [(step, bits)]}`` from a run's ``logs/metrics.csv`` (rows without the
    value skipped; the last row of a step wins)."""
    curves: dict = {"train": {}, "val": {}}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            for name in ("train", "val"):
                value = row.get(f"{name}/bits_per_token")
                if value not in (None, "") and row.get("step") not in (None, ""):
                    curves[name][int(float(row["step"]))] = float(value)
    return {name: sorted(points.items()) for name, points in curves.items()}


def pretrain_curves(out: str | os.PathLike, markov_bits: float | None = None, markov_order: int | None = None,
                    unit: str = "bits/token") -> Path | None:
    """``out/curves.png`` from ``out/logs/metrics.csv``: train and validation bits/token against optimiser steps,
    and a horizontal line at the order-k Markov baseline's validation bits (``markov_bits``) when given."""
    out = Path(out)
    plt = _pyplot()
    if plt is None:
        return None
    curves = read_curves(out / "logs" / "metrics.csv")
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, style in (("train", dict(color="tab:blue", alpha=0.7, lw=1)),
                        ("val", dict(color="tab:orange", marker="o", lw=2))):
        if curves[name]:
            steps, bits = zip(*curves[name])
            ax.plot(steps, bits, label=f"{'training' if name == 'train' else 'validation (EMA weights)'}", **style)
    if markov_bits is not None and math.isfinite(markov_bits):
        ax.axhline(markov_bits, color="tab:gray", ls="--",
                   label=f"order-{markov_order} Markov baseline (validation)" if markov_order is not None else "Markov baseline")
    ax.axhline(2.0, color="black", lw=0.5, ls=":", label="uniform over A/C/G/T (2 bits)")
    ax.set(title="Pretraining: negative ELBO per token (lower is better)", xlabel="optimiser step",
           ylabel=f"NELBO ({unit})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / "curves.png")


def finetune_plot(results: dict, out: str | os.PathLike) -> Path | None:
    """``out/folds.png``: accuracy and AUROC of every fold for the model and each baseline (grouped bars,
    higher is better), the selection named in the title (``optimistic`` for held-out selection)."""
    plt = _pyplot()
    if plt is None:
        return None
    import numpy as np

    rows = []
    if results.get("folds"):
        rows.append(("dnadiff", results["folds"]))
    rows += [(name, base["folds"]) for name, base in results.get("baselines", {}).items()]
    folds = sorted({f["fold"] for _, fs in rows for f in fs})
    selection = results.get("selection", "")
    tag = {"held-out": "epoch picked on the scored fold (optimistic)",
           "inner": "epoch picked on an inner validation split (honest)",
           "validation": "epoch picked on the validation re-split"}.get(selection, "")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    width = 0.8 / max(1, len(rows))
    for ax, metric in zip(axes, ("accuracy", "auroc")):
        for j, (name, fs) in enumerate(rows):
            by_fold = {f["fold"]: f.get(metric) for f in fs}
            values = [by_fold.get(k) if by_fold.get(k) is not None else np.nan for k in folds]
            ax.bar(np.arange(len(folds)) + (j - (len(rows) - 1) / 2) * width, values, width, label=name)
        chance = 1.0 / results.get("num_classes", 2) if metric == "accuracy" else 0.5
        ax.axhline(chance, color="black", lw=0.8, ls=":", label="chance")
        ax.set(xticks=np.arange(len(folds)), xticklabels=[str(k) for k in folds],
               xlabel="fold" if results.get("protocol") == "cv" else "seed",
               ylabel=f"{metric} ({'held-out fold' if results.get('protocol') == 'cv' else 'test split'})",
               title=f"{metric.upper() if metric == 'auroc' else metric.capitalize()} per run (higher is better)",
               ylim=(0, 1))
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, not over them
    fig.suptitle(f"{results.get('task', '')}: {results.get('protocol', '')} fine-tuning; {tag}", fontsize=10)
    return _save(fig, Path(out) / "folds.png")


#: which way is better for each field figure of ``sample --report``
BETTER = {"kmer3_pearson": "higher", "motif_rate_pearson": "higher", "frechet": "lower"}
TITLES = {"kmer3_pearson": "3-mer spectrum correlation", "motif_rate_pearson": "JASPAR motif-rate correlation",
          "frechet": "Fréchet distance (classifier embedding)"}


def report_plot(metrics: dict, path: str | os.PathLike) -> Path | None:
    """A PNG at ``path``: each field figure of ``metrics`` (``<name>``, ``<name>_ci``, ``<name>_floor``,
    ``<name>_floor_ci`` from :func:`dnadiff.eval.field_metrics.flat_field_figures`) as the generated value beside
    the real-vs-real floor with their 95% intervals; None (and nothing written) when there is no field figure."""
    names = [n for n in BETTER if n in metrics and f"{n}_floor" in metrics]
    if not names:
        return None
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(3.8 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = [metrics[name], metrics[f"{name}_floor"]]
        cis = [metrics.get(f"{name}_ci"), metrics.get(f"{name}_floor_ci")]
        err = [[v - c[0] if c else 0 for v, c in zip(values, cis)], [c[1] - v if c else 0 for v, c in zip(values, cis)]]
        ax.bar(["generated", "real vs real\n(floor)"], values, yerr=err, capsize=6, color=["tab:orange", "tab:blue"])
        ax.set(title=f"{TITLES.get(name, name)}\n({BETTER[name]} is better)", ylabel=name)
        ax.grid(axis="y", alpha=0.3)
    method = metrics.get("interval_method")
    fig.suptitle("Generated vs real held-out DNA" + (f"; bars: 95% {method}" if method else ""), fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(path))
