"""Quality metrics of generated DNA against real DNA.

Every function takes plain sequences (``list[str]``, any case; letters other than A/C/G/T
count as N) so the same code serves the ``dnadiff sample --report`` command and notebooks.

* :func:`kmer_spectrum_js` -- Jensen-Shannon divergence, in **bits** (log base 2, so it lies in
  [0, 1]), between the pooled k-mer frequency spectra of two sets, for k = 1..6. k-mers are
  counted on the given strand only, overlapping, and a k-mer touching an N is skipped.
* :func:`gc_wasserstein` -- 1-D Wasserstein-1 (earth mover's) distance between the empirical
  distributions of per-sequence GC fractions (G+C over A+C+G+T positions). It is in units of GC
  fraction: 0.05 means the distributions are 5 percentage points apart on average.
* :func:`nearest_neighbour_identity` -- for each generated sequence, the highest fraction of
  identical aligned positions (exact ungapped Hamming identity, no shifts) to any training
  sequence of the same length, on both strands. Exact, computed as one-hot matrix products
  in chunks of the training set.
* :class:`KmerClassifier` and :func:`class_recognition_accuracy` -- a scikit-learn logistic
  regression on k-mer frequencies trained on real labelled sequences; the share of conditional
  samples it assigns to the class they were generated for (chance = 1 / number of classes).
* :func:`report` -- all of the above in one dict.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import sparse
from scipy.stats import wasserstein_distance

from dnadiff.data.tokenizer import NUM_BASES, encode
from dnadiff.eval.embedding import one_hot  # the one DNA one-hot
from dnadiff.rc import reverse_complement_str

KMER_SIZES = tuple(range(1, 7))


def _ids(seq: str) -> np.ndarray:
    """uint8 ids of one sequence: A=0 C=1 G=2 T=3, anything else 5 (N)."""
    return encode(seq).numpy().astype(np.uint8)


def _window_codes(seqs: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes of every valid overlapping k-mer and the index of the sequence holding it.

    The sequences are joined by one N each, so no k-mer spans two sequences.
    Returns:
        codes: int64[W] (bases read as a base-4 number, first base most significant),
        owner: int64[W] index into ``seqs``.
    """
    ids = _ids("N".join(seqs))
    if len(ids) < k:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    owner = np.repeat(np.arange(len(seqs)), [len(s) + 1 for s in seqs])[: len(ids)]
    windows = np.lib.stride_tricks.sliding_window_view(ids, k)  # [W, k]
    valid = (windows < NUM_BASES).all(axis=1)
    weights = NUM_BASES ** np.arange(k - 1, -1, -1, dtype=np.int64)
    return windows[valid].astype(np.int64) @ weights, owner[: len(windows)][valid]


def kmer_counts(seqs: Sequence[str], k: int) -> np.ndarray:
    """Pooled counts of every overlapping k-mer over a set of sequences.

    Args:
        seqs: S sequences of any lengths.
        k: k-mer size (1..12).
    Returns:
        int64[4**k]; index of a k-mer = its bases read as a base-4 number (A=0 C=1 G=2 T=3,
        first base most significant). k-mers containing a non-ACGT letter are not counted.
    """
    codes, _ = _window_codes(seqs, k)
    return np.bincount(codes, minlength=NUM_BASES**k)


def sparse_kmer_counts(seqs: Sequence[str], k: int) -> sparse.csr_matrix:
    """k-mer counts of each sequence separately, sparse: int64[S, 4**k] (same indexing as :func:`kmer_counts`;
    k-mers containing a non-ACGT letter are not counted)."""
    codes, owner = _window_codes(seqs, k)
    matrix = sparse.csr_matrix((np.ones(len(codes), dtype=np.int64), (owner, codes)), shape=(len(seqs), NUM_BASES**k))
    matrix.sum_duplicates()
    return matrix


def per_sequence_kmer_counts(seqs: Sequence[str], k: int) -> np.ndarray:
    """k-mer counts of each sequence separately: int64[S, 4**k] (dense :func:`sparse_kmer_counts`)."""
    return sparse_kmer_counts(seqs, k).toarray()


def js_divergence(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits between two count (or probability) vectors of equal size.

    JS(P, Q) = KL(P || M) / 2 + KL(Q || M) / 2 with M = (P + Q) / 2; 0 for identical
    distributions, 1 for distributions with disjoint support.
    """
    p = np.asarray(p_counts, dtype=np.float64)
    q = np.asarray(q_counts, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("js_divergence needs two non-empty distributions")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl_to_m(a: np.ndarray) -> float:
        support = a > 0
        return float(np.sum(a[support] * np.log2(a[support] / m[support])))

    return max(0.0, 0.5 * kl_to_m(p) + 0.5 * kl_to_m(q))


def kmer_spectrum_js(generated: Sequence[str], real: Sequence[str], ks: Sequence[int] = KMER_SIZES) -> dict[int, float]:
    """Jensen-Shannon divergence (bits) between the k-mer spectra of two sets, for each k in ``ks``."""
    return {k: js_divergence(kmer_counts(generated, k), kmer_counts(real, k)) for k in ks}


def gc_fractions(seqs: Sequence[str]) -> np.ndarray:
    """Per-sequence GC fraction (G+C over A+C+G+T positions; NaN for a sequence without any): float64[S]."""
    out = np.empty(len(seqs), dtype=np.float64)
    for i, s in enumerate(seqs):
        counts = np.bincount(_ids(s), minlength=6)[:NUM_BASES]
        total = counts.sum()
        out[i] = (counts[1] + counts[2]) / total if total else np.nan
    return out


def gc_wasserstein(generated: Sequence[str], real: Sequence[str]) -> float:
    """Wasserstein-1 distance between the per-sequence GC-fraction distributions of two sets."""
    gen, ref = gc_fractions(generated), gc_fractions(real)
    return float(wasserstein_distance(gen[~np.isnan(gen)], ref[~np.isnan(ref)]))


def _one_hot(seqs: Sequence[str]) -> np.ndarray:
    """float32[S, 4*L] one-hot of equal-length sequences; an N position is all zeros."""
    return one_hot(list(seqs)).transpose(1, 2).reshape(len(seqs), -1).numpy()


def nearest_neighbour_identity(
    generated: Sequence[str], train: Sequence[str], both_strands: bool = True, chunk: int = 4096
) -> np.ndarray:
    """Exact highest ungapped identity of each generated sequence to any training sequence.

    Identity = (positions where both bases are equal A/C/G/T) / L, position by position
    without shifts (Hamming identity). With ``both_strands`` the reverse complement of each
    training sequence is compared too. All sequences must have the same length L.

    Args:
        generated: G sequences of length L.
        train: M sequences of length L.
        chunk: training sequences compared per matrix product (bounds memory to G x chunk).
    Returns:
        float64[G] in [0, 1]; 1.0 means an exact copy of a training sequence.
    """
    lengths = {len(s) for s in generated} | {len(s) for s in train}
    if len(lengths) != 1:
        raise ValueError(f"nearest_neighbour_identity needs sequences of one length, got lengths {sorted(lengths)[:5]}")
    length = lengths.pop()
    gen = _one_hot(generated)  # [G, 4L]
    best = np.zeros(len(generated), dtype=np.float64)
    for start in range(0, len(train), chunk):
        block = list(train[start : start + chunk])
        if both_strands:
            block += [reverse_complement_str(s) for s in block]
        matches = gen @ _one_hot(block).T  # [G, chunk]: identical positions
        best = np.maximum(best, matches.max(axis=1) / length)
    return best


def _kmer_features(seqs: Sequence[str], ks: Sequence[int]) -> np.ndarray:
    """float64[S, sum 4**k]: per-sequence k-mer frequencies (each k block sums to 1)."""
    blocks = []
    for k in ks:
        counts = per_sequence_kmer_counts(seqs, k).astype(np.float64)
        blocks.append(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0))
    return np.hstack(blocks)


def _log_count_features(seqs: Sequence[str], k: int) -> sparse.csr_matrix:
    """float32[S, 4**k] sparse: log(1 + k-mer count), each row scaled to unit L2 norm."""
    counts = sparse_kmer_counts(seqs, k).astype(np.float32)
    counts.data = np.log1p(counts.data)
    norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1))).ravel()
    norms[norms == 0] = 1.0
    return sparse.csr_matrix(sparse.diags(1.0 / norms) @ counts)


class KmerClassifier:
    """Logistic regression on per-sequence k-mer features: the one k-mer classifier of dnadiff.

    Args:
        ks: k-mer sizes used as features (default 1..5: 1,364 features).
        features: ``"frequency"``: per-k frequencies, standardised (class recognition of generated
            sequences); ``"log_count"``: log(1 + count) of the single size ``ks = (k,)``, rows scaled to
            unit L2 norm, sparse (the fine-tuning baseline, :class:`dnadiff.finetuning.baselines.KmerLogReg`).
        max_iter, C, seed: passed to :class:`sklearn.linear_model.LogisticRegression`; the strong
            default regularisation (C=0.01) converges in a few seconds on 40k sequences and
            recognises the 4 DHS cell types of held-out chr1 sequences about 2/3 of the time.
    """

    def __init__(self, ks: Sequence[int] = (1, 2, 3, 4, 5), max_iter: int = 500, C: float = 0.01,
                 features: str = "frequency", seed: int | None = None):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if features not in ("frequency", "log_count") or (features == "log_count" and len(ks) != 1):
            raise ValueError(f"features must be 'frequency' or 'log_count' (one k), got {features!r} with ks={ks}")
        self.ks, self.features, self.num_classes = tuple(ks), features, None
        regression = LogisticRegression(max_iter=max_iter, C=C, random_state=seed)
        self.model = make_pipeline(StandardScaler(), regression) if features == "frequency" else regression

    def featurize(self, seqs: Sequence[str]):
        """The feature matrix of S sequences: float[S, F] (dense, or sparse for ``log_count``)."""
        return _kmer_features(seqs, self.ks) if self.features == "frequency" else _log_count_features(seqs, self.ks[0])

    def fit(self, seqs: Sequence[str], labels: Sequence[int], num_classes: int | None = None) -> "KmerClassifier":
        """Fit on S real sequences and their integer class labels int[S] (``num_classes``: width of
        :meth:`predict_proba`, by default one more than the largest label)."""
        labels = np.asarray(labels)
        self.num_classes = int(num_classes) if num_classes is not None else int(labels.max()) + 1
        self.model.fit(self.featurize(seqs), labels)
        return self

    def predict_proba(self, seqs: Sequence[str]) -> np.ndarray:
        """Class probabilities float[S, num_classes] (columns of classes unseen in training are 0)."""
        probs = np.zeros((len(seqs), self.num_classes))
        probs[:, self.model.classes_] = self.model.predict_proba(self.featurize(seqs))
        return probs

    def predict(self, seqs: Sequence[str]) -> np.ndarray:
        """Predicted class of each sequence: int64[S]."""
        return np.asarray(self.model.predict(self.featurize(seqs)))

    def accuracy(self, seqs: Sequence[str], labels: Sequence[int]) -> float:
        """Share of sequences predicted as their label."""
        return float(np.mean(self.predict(seqs) == np.asarray(labels)))


def class_recognition_accuracy(classifier: KmerClassifier, generated: Sequence[str], requested: Sequence[int]) -> float:
    """Share of generated sequences that ``classifier`` assigns to the class requested for them (int[G])."""
    return classifier.accuracy(generated, requested)


def report(
    generated: Sequence[str],
    real: Sequence[str],
    train: Sequence[str] | None = None,
    classifier: KmerClassifier | None = None,
    requested: Sequence[int] | None = None,
    bits_per_base: Callable[[Sequence[str]], np.ndarray] | None = None,
    ks: Sequence[int] = KMER_SIZES,
) -> dict:
    """All quality figures of ``generated`` against held-out ``real`` sequences.

    Args:
        generated: G generated sequences.
        real: R held-out real sequences.
        train: training sequences for the memorisation check, run when the generated
            sequences share one length, against the training sequences of that length; the
            same check on as many ``real`` sequences of that length is the baseline (what
            unseen real DNA scores).
        classifier, requested: a fitted :class:`KmerClassifier` and the class id int[G]
            requested for each generated sequence -> class recognition accuracy and chance.
        bits_per_base: a callable scoring sequences under the model (NELBO in bits per base,
            float[S]) -> mean for the generated and the real sets.
    Returns:
        dict of floats: ``kmer_js`` ({k: bits}), ``kmer_js_mean``, ``gc_wasserstein``,
        ``gc_mean_generated``, ``gc_mean_real`` and, when their inputs are given,
        ``nn_identity_{mean,max}``, ``nn_identity_real_{mean,max}``, ``exact_copies``,
        ``class_accuracy``, ``chance``, ``bits_per_base_{generated,real}``.
    """
    js = kmer_spectrum_js(generated, real, ks)
    out: dict = {
        "num_generated": len(generated),
        "num_real": len(real),
        "kmer_js": js,
        "kmer_js_mean": float(np.mean(list(js.values()))),
        "gc_wasserstein": gc_wasserstein(generated, real),
        "gc_mean_generated": float(np.nanmean(gc_fractions(generated))),
        "gc_mean_real": float(np.nanmean(gc_fractions(real))),
    }
    lengths = {len(s) for s in generated}
    same_length_train = [s for s in train if {len(s)} == lengths] if train is not None else []
    if same_length_train:
        identity = nearest_neighbour_identity(generated, same_length_train)
        out["nn_identity_mean"] = float(identity.mean())
        out["nn_identity_max"] = float(identity.max())
        out["exact_copies"] = int((identity == 1.0).sum())
        same_length_real = [s for s in real if {len(s)} == lengths][: len(generated)]
        if same_length_real:
            baseline = nearest_neighbour_identity(same_length_real, same_length_train)
            out["nn_identity_real_mean"] = float(baseline.mean())
            out["nn_identity_real_max"] = float(baseline.max())
    if classifier is not None and requested is not None:
        out["class_accuracy"] = class_recognition_accuracy(classifier, generated, requested)
        out["chance"] = 1.0 / len(classifier.model.classes_)
    if bits_per_base is not None:
        out["bits_per_base_generated"] = float(np.mean(bits_per_base(generated)))
        out["bits_per_base_real"] = float(np.mean(bits_per_base(real[: max(len(generated), 1)])))
    return out
