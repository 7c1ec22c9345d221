"""Generated DNA judged the way DNA-generation papers judge it, each figure beside its floor.

* :func:`frechet_distance` -- Fréchet distance between Gaussians fitted to two sets of
  embeddings, ||m1 - m2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (FBD of Dirichlet flow matching when
  the embeddings come from a classifier of real sequences: :class:`~dnadiff.eval.embedding.SequenceEmbedder`).
* :func:`kmer_pearson` -- Pearson correlation between the pooled k-mer frequency spectra of two
  sets (k = 3 as DRAKES reports).
* :class:`MotifScanner` / :func:`motif_rate_pearson` -- the share of sequences holding each
  known motif (a JASPAR CORE PWM scored on both strands with a relative-score threshold) and the
  Pearson correlation of these occurrence rates between two sets. Motifs come from the `pyjaspar`
  package, which bundles the JASPAR database as a local SQLite file (works without a network;
  ``pip install dnadiff[eval]``).
* :func:`field_report` -- every figure for generated sequences against a real reference set,
  beside the *floor*: the same figure for as many real held-out sequences (disjoint from the
  reference) -- what a perfect generator would score at this sample size -- each with a
  bootstrap 95% interval (resampling the compared set, reference fixed). Resampling with
  replacement repeats sequences, which inflates a Fréchet distance and damps a correlation, so a plain
  percentile interval can exclude its own point value; :func:`bootstrap_interval` re-centres the
  resampling distribution on the estimate (bias-corrected), so every interval contains its figure.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import linalg

from dnadiff.eval.sequence_metrics import kmer_counts
from dnadiff.rc import reverse_complement_str


def frechet_from_moments(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein squared) distance between N(m1, s1) and N(m2, s2): float >= 0.

    m: float[D]; s: float[D, D] covariance matrices.
    """
    covmean = np.real(linalg.sqrtm(s1 @ s2))
    d = float(np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(d, 0.0)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted (mean, unbiased covariance) to embeddings a[N, D], b[M, D]."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return frechet_from_moments(a.mean(0), np.atleast_2d(np.cov(a, rowvar=False)),
                                b.mean(0), np.atleast_2d(np.cov(b, rowvar=False)))


def kmer_pearson(generated: Sequence[str], real: Sequence[str], k: int = 3) -> float:
    """Pearson correlation of the pooled k-mer frequencies (4**k entries) of two sets of sequences."""
    p = kmer_counts(generated, k).astype(np.float64)
    q = kmer_counts(real, k).astype(np.float64)
    return float(np.corrcoef(p / max(p.sum(), 1), q / max(q.sum(), 1))[0, 1])


_MOTIFS_CACHE: dict = {}


def jaspar_motifs(collection: str = "CORE", tax_group: str = "vertebrates") -> list[tuple[str, np.ndarray]]:
    """(name, log-odds PWM float[w, 4] over A/C/G/T with a 0.25 background and pseudocount 0.5)
    of the latest version of every JASPAR motif of the collection, from pyjaspar's local copy.

    Raises:
        ImportError: pyjaspar is not installed (``pip install dnadiff[eval]``).
    """
    key = (collection, tax_group)
    if key not in _MOTIFS_CACHE:
        from pyjaspar import jaspardb

        out = []
        for m in jaspardb().fetch_motifs(collection=collection, tax_group=[tax_group]):
            counts = np.array([m.counts[b] for b in "ACGT"], dtype=np.float64).T + 0.5  # [w, 4]
            out.append((f"{m.matrix_id} {m.name}", np.log2(counts / counts.sum(1, keepdims=True) / 0.25)))
        _MOTIFS_CACHE[key] = out
    return _MOTIFS_CACHE[key]


class MotifScanner:
    """Which sequences hold each motif: a window whose PWM score reaches ``threshold`` of the way
    from the motif's minimum to its maximum score (relative score, as Biopython / JASPAR's 80-90%),
    on either strand.

    Args:
        motifs: (name, PWM float[w, 4]) pairs (default: :func:`jaspar_motifs`).
        threshold: relative score in (0, 1].
    """

    def __init__(self, motifs: list[tuple[str, np.ndarray]] | None = None, threshold: float = 0.9):
        self.motifs = jaspar_motifs() if motifs is None else motifs
        self.threshold = threshold
        self.names = [n for n, _ in self.motifs]

    def presence(self, seqs: Sequence[str]) -> np.ndarray:
        """bool[S, M]: sequence s holds motif m (on either strand)."""
        from dnadiff.eval.embedding import one_hot

        import torch

        x = torch.cat([one_hot(seqs), one_hot([reverse_complement_str(s) for s in seqs])]).double()  # [2S, 4, L]
        S = len(seqs)
        out = np.zeros((S, len(self.motifs)), dtype=bool)
        by_width: dict[int, list[int]] = {}
        for j, (_, pwm) in enumerate(self.motifs):
            if pwm.shape[0] <= x.shape[-1]:
                by_width.setdefault(pwm.shape[0], []).append(j)
        for width, js in by_width.items():  # one convolution per motif width
            w = torch.as_tensor(np.stack([self.motifs[j][1].T for j in js]))  # [M, 4, w]
            lo = np.array([self.motifs[j][1].min(1).sum() for j in js])
            hi = np.array([self.motifs[j][1].max(1).sum() for j in js])
            best = np.zeros((2 * S, len(js)))
            for i in range(0, 2 * S, 256):
                best[i:i + 256] = torch.nn.functional.conv1d(x[i:i + 256], w).amax(-1).numpy()
            hit = best >= lo + self.threshold * (hi - lo)
            out[:, js] = hit[:S] | hit[S:]
        return out

    def rates(self, seqs: Sequence[str]) -> np.ndarray:
        """float[M]: share of sequences holding each motif."""
        return self.presence(seqs).mean(0)


def motif_rate_pearson(presence_a: np.ndarray, presence_b: np.ndarray) -> float:
    """Pearson correlation across motifs of occurrence rates, from presence bool[S, M] of two sets."""
    ra, rb = presence_a.mean(0), presence_b.mean(0)
    keep = (ra > 0) | (rb > 0)
    if keep.sum() < 2 or ra[keep].std() == 0 or rb[keep].std() == 0:
        return float("nan")
    return float(np.corrcoef(ra[keep], rb[keep])[0, 1])


#: how :func:`bootstrap_interval` turns resamples into an interval (reports name it)
INTERVAL_METHOD = "bias-corrected bootstrap percentile (resampling distribution re-centred on its median at the estimate)"


def bootstrap_interval(stat: Callable[[np.ndarray], float], n: int, n_boot: int = 200, seed: int = 0,
                       level: float = 0.95, estimate: float | None = None,
                       bounds: tuple[float, float] = (-np.inf, np.inf), method: str = "recentred") -> list[float]:
    """A ``level`` interval for ``stat`` from ``n_boot`` resamples (with replacement) of the indices 0..n-1.

    ``method="recentred"`` (default): the percentile interval of the resampling distribution shifted so that its
    median is the point estimate ``estimate`` (default ``stat(0..n-1)``), then clipped to ``bounds`` (the
    statistic's range). Resampling with replacement repeats examples, which biases many figures -- it inflates a
    Fréchet distance (a repeated embedding shrinks the spread) and damps a correlation -- so the raw percentile
    interval (``method="percentile"``, kept for comparison) can lie entirely to one side of its own estimate;
    the shift removes that resampling bias and keeps the spread and the skew. The interval contains its
    estimate by construction (``q_lo - q_50 <= 0 <= q_hi - q_50``). BCa was not used: its bias correction
    is undefined (infinite) when every resample lands on one side of the estimate, as for a Fréchet floor.
    Returns ``[lo, hi]`` (NaNs when no resample gives a finite value).
    """
    if method not in ("recentred", "percentile"):
        raise ValueError(f"unknown interval method {method!r}: use recentred or percentile")
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)])
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return [float("nan"), float("nan")]
    a = (1 - level) / 2
    lo, mid, hi = np.quantile(vals, [a, 0.5, 1 - a])
    if method == "percentile":
        return [float(lo), float(hi)]
    if estimate is None:
        estimate = float(stat(np.arange(n)))
    if not np.isfinite(estimate):
        return [float("nan"), float("nan")]
    low, high = bounds
    return [float(np.clip(estimate + lo - mid, low, high)), float(np.clip(estimate + hi - mid, low, high))]


def split_real(real: Sequence[str], count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(floor set of ``count`` real sequences, disjoint reference set of the rest), shuffled."""
    if len(real) < count + 2:
        raise ValueError(f"need at least {count + 2} real sequences for a floor of {count}, got {len(real)}")
    order = np.random.default_rng(seed).permutation(len(real))
    return [real[i] for i in order[:count]], [real[i] for i in order[count:]]


def field_report(generated: Sequence[str], real: Sequence[str], embedder=None, scanner: MotifScanner | None = None,
                 k: int = 3, n_boot: int = 200, seed: int = 0, max_reference: int = 2000) -> dict:
    """Field metrics of ``generated`` against real sequences, with the real-vs-real floor.

    Args:
        generated: G sequences (equal length when ``embedder`` is given).
        real: real held-out sequences (at least G + 2): G of them form the floor set, the others
            (at most ``max_reference``) the reference.
        embedder: a fitted object with ``embed(seqs) -> float[S, D]`` (Fréchet distance), or None.
        scanner: a :class:`MotifScanner` (motif occurrence correlation), or None.
    Returns:
        {metric: {"value", "ci", "floor", "floor_ci"}} for ``kmer{k}_pearson``, ``frechet``,
        ``motif_rate_pearson`` (those whose inputs are given), plus ``num_generated``, ``num_reference``
        and ``interval_method`` (how the intervals were made: :data:`INTERVAL_METHOD`).
    """
    gen = list(generated)
    floor_set, reference = split_real(list(real), len(gen), seed)
    reference = reference[:max_reference]
    out: dict = {"num_generated": len(gen), "num_reference": len(reference), "interval_method": INTERVAL_METHOD}

    def entry(stat_of: Callable[[Sequence[int], str], float], bounds=(-1.0, 1.0)) -> dict:
        n = len(gen)
        value, floor = stat_of(range(n), "gen"), stat_of(range(n), "real")
        return {"value": value, "floor": floor,
                "ci": bootstrap_interval(lambda i: stat_of(i, "gen"), n, n_boot, seed, estimate=value, bounds=bounds),
                "floor_ci": bootstrap_interval(lambda i: stat_of(i, "real"), n, n_boot, seed + 1, estimate=floor,
                                               bounds=bounds)}

    sets = {"gen": gen, "real": floor_set}
    ref_counts = kmer_counts(reference, k).astype(np.float64)
    per_seq = {name: np.stack([kmer_counts([s], k) for s in seqs]).astype(np.float64) for name, seqs in sets.items()}

    def kmer_stat(idx, name):
        p = per_seq[name][np.asarray(list(idx))].sum(0)
        return float(np.corrcoef(p / max(p.sum(), 1), ref_counts / ref_counts.sum())[0, 1])

    out[f"kmer{k}_pearson"] = entry(kmer_stat)
    if embedder is not None:
        emb = {name: embedder.embed(seqs) for name, seqs in sets.items()}
        ref_emb = embedder.embed(reference)
        m_ref, s_ref = ref_emb.mean(0), np.cov(ref_emb, rowvar=False)

        def fd_stat(idx, name):
            e = emb[name][np.asarray(list(idx))]
            return frechet_from_moments(e.mean(0), np.cov(e, rowvar=False), m_ref, s_ref)

        out["frechet"] = entry(fd_stat, bounds=(0.0, np.inf))
    if scanner is not None:
        pres = {name: scanner.presence(seqs) for name, seqs in sets.items()}
        ref_pres = scanner.presence(reference)
        out["motif_rate_pearson"] = entry(lambda idx, name: motif_rate_pearson(pres[name][np.asarray(list(idx))], ref_pres))
        out["num_motifs"] = len(scanner.names)
    return out


def flat_field_figures(generated: Sequence[str], real: Sequence[str], labelled: Sequence[str] = (),
                       labels: Sequence[int] = (), motifs: bool = True, embedder_train_size: int = 8000,
                       n_boot: int = 200, seed: int = 0) -> dict:
    """:func:`field_report` as flat keys for ``dnadiff sample --report``: ``<metric>``,
    ``<metric>_ci``, ``<metric>_floor``, ``<metric>_floor_ci``.

    The Fréchet distance uses a :class:`~dnadiff.eval.embedding.SequenceEmbedder` trained on at
    most ``embedder_train_size`` of the ``labelled`` real sequences (same length as the generated
    ones); without labels it is left out, as are motifs when pyjaspar is missing (a note says so).
    """
    from dnadiff.eval.embedding import SequenceEmbedder

    gen = list(generated)
    lengths = {len(s) for s in gen}
    real = [s for s in real if {len(s)} == lengths] if len(lengths) == 1 else list(real)
    notes = []
    if len(real) < len(gen) + 2:
        return {"field_note": f"field metrics need at least {len(gen) + 2} real sequences of the generated length, got {len(real)}"}
    embedder = None
    pairs = [(s, y) for s, y in zip(labelled, labels) if {len(s)} == lengths]
    if len(lengths) == 1 and len({y for _, y in pairs}) >= 2:
        rng = np.random.default_rng(seed)
        keep = rng.permutation(len(pairs))[:embedder_train_size]
        embedder = SequenceEmbedder(seed=seed).fit([pairs[i][0] for i in keep], [pairs[i][1] for i in keep])
    else:
        notes.append("no Fréchet distance: needs labelled real sequences of the generated length (a classifier's embedding)")
    scanner = None
    if motifs:
        try:
            scanner = MotifScanner()
        except ImportError:
            notes.append("no motif figures: pyjaspar is not installed (pip install dnadiff[eval])")
    rep = field_report(gen, real, embedder=embedder, scanner=scanner, n_boot=n_boot, seed=seed)
    out: dict = {"field_reference_size": rep.pop("num_reference")}
    rep.pop("num_generated")
    out["interval_method"] = rep.pop("interval_method")
    if "num_motifs" in rep:
        out["num_motifs"] = rep.pop("num_motifs")
    for name, e in rep.items():
        out[name] = e["value"]
        out[f"{name}_ci"] = e["ci"]
        out[f"{name}_floor"] = e["floor"]
        out[f"{name}_floor_ci"] = e["floor_ci"]
    if notes:
        out["field_note"] = "; ".join(notes)
    return out
