"""Evidence on real measured data: the MPSA 5' splice-site library (30,483 9-mers with measured log10 PSI,
mavenn's training / validation / test split; ../shared/data/mave/README.md).

Reports, on the test split (one JSON line):

* zero-shot: Spearman of dnadiff's pseudo-log-likelihood of the 9-mer (sum over its 9 positions of the
  masked-marginal log-probability, ``dnadiff.scoring.pseudo_log_likelihood``) with the measured y, for the 9-mer
  alone and inside a fixed 20-bp flank on each side (hg38 chr2:1,000,001-1,000,020 and 1,000,021-1,000,040, the
  same for every 9-mer); beside two baselines on the same split: a position weight matrix of the training split's
  top decile (log-odds against the training split's base frequencies; it sees labels, so it is not zero-shot) and
  an order-k Markov model of the hg38 piece (zero-shot, like the network);
* supervised: ridge regression (alpha chosen on the validation split) on dnadiff embeddings
  (``dnadiff.scoring.embed``, 9-mer alone) against ridge on k-mer counts (k = 1..3) and on the position one-hot;
* the replicate ceiling: Spearman of y with the biological replicate's y on the test 9-mers present in both.

U is read as T. Spearman is reported; the sign convention is "higher score = more likely / more spliced".
"""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mave"
GENOME = ROOT.parent / "shared" / "data" / "hg38" / "hg38_chr2_1-2333275.fa.gz"


def read(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    sets, seqs, ys = [], [], []
    with gzip.open(path, "rt") as handle:
        next(handle)
        for line in handle:
            s, _, _, y, x = line.rstrip("\n").split(",")
            sets.append(s)
            seqs.append(x.replace("U", "T"))
            ys.append(float(y))
    return seqs, np.array(ys), np.array(sets)


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def pwm_scores(train: list[str], ytrain: np.ndarray, test: list[str]) -> np.ndarray:
    top = [s for s, y in zip(train, ytrain) if y >= np.quantile(ytrain, 0.9)]

    def freqs(seqs):
        c = np.ones((9, 4))
        for s in seqs:
            for i, b in enumerate(s):
                c[i, "ACGT".index(b)] += 1
        return c / c.sum(1, keepdims=True)

    lo = np.log(freqs(top)) - np.log(freqs(train))
    return np.array([sum(lo[i, "ACGT".index(b)] for i, b in enumerate(s)) for s in test])


def markov_scores(genome_seq: str, test: list[str], k: int) -> np.ndarray:
    """log p(9-mer) under order-k Markov chains of the genome (orders 0..k for the first positions, add-one)."""
    from collections import Counter

    clean = genome_seq.upper()
    tables = []
    for m in range(k + 1):
        counts = Counter(clean[i : i + m + 1] for i in range(len(clean) - m))
        tables.append(counts)
    out = []
    for s in test:
        total = 0.0
        for i in range(len(s)):
            m = min(i, k)
            ctx = s[i - m : i]
            num = tables[m][ctx + s[i]] + 1
            den = sum(tables[m][ctx + b] for b in "ACGT") + 4
            total += math.log(num / den)
        out.append(total)
    return np.array(out)


def kmer_features(seqs: list[str], ks=(1, 2, 3)) -> np.ndarray:
    vocab = {"".join(p): j for j, p in enumerate(itertools.chain(*(itertools.product("ACGT", repeat=k) for k in ks)))}
    X = np.zeros((len(seqs), len(vocab)))
    for r, s in enumerate(seqs):
        for k in ks:
            for i in range(len(s) - k + 1):
                X[r, vocab[s[i : i + k]]] += 1
    return X


def onehot(seqs: list[str]) -> np.ndarray:
    X = np.zeros((len(seqs), 36))
    for r, s in enumerate(seqs):
        for i, b in enumerate(s):
            X[r, 4 * i + "ACGT".index(b)] = 1
    return X


def ridge(Xtr, ytr, Xva, yva, Xte) -> np.ndarray:
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(Xtr)
    best = max((10.0 ** a for a in range(-3, 5)),
               key=lambda a: spearman(Ridge(alpha=a).fit(sc.transform(Xtr), ytr).predict(sc.transform(Xva)), yva))
    return Ridge(alpha=best).fit(sc.transform(Xtr), ytr).predict(sc.transform(Xte))


@torch.no_grad()
def pll_of(model, seqs: list[str], left: str, right: str, per_call: int = 64) -> np.ndarray:
    """Sum over the 9-mer's positions of log p(base | rest) with that position alone masked, the 9-mer inside the
    fixed flanks: float64[S] (``per_call`` 9-mers, i.e. 9 * per_call masked windows, per denoiser call)."""
    from dnadiff.data.tokenizer import encode
    from dnadiff.scoring.common import masked_logprobs, resolve_strands

    strands = resolve_strands(model.denoiser, "auto")
    out = []
    for start in range(0, len(seqs), per_call):
        chunk = seqs[start : start + per_call]
        x = torch.stack([encode(left + s + right) for s in chunk])            # [b, W]
        n = len(chunk[0])
        windows = x.repeat_interleave(n, dim=0)                              # [b * 9, W]
        centers = torch.arange(len(left), len(left) + n).repeat(len(chunk))
        lp = masked_logprobs(model.denoiser, model.diffusion, windows, centers, strands).double()
        own = lp[torch.arange(len(windows)), windows[torch.arange(len(windows)), centers]]
        out.append(own.view(len(chunk), n).sum(1).numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markov-order", type=int, default=4)
    parser.add_argument("--max-test", type=int, default=None, help="score only the first N test 9-mers (speed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from dnadiff.data.fasta import open_genome
    from dnadiff.generate import load
    from dnadiff.scoring import embed

    seqs, y, sets = read(DATA / "mpsa_data.csv.gz")
    idx = {name: np.flatnonzero(sets == name) for name in ("training", "validation", "test")}
    test_idx = idx["test"][: args.max_test] if args.max_test else idx["test"]
    tr, va, te = ([seqs[i] for i in idx["training"]], [seqs[i] for i in idx["validation"]], [seqs[i] for i in test_idx])
    ytr, yva, yte = y[idx["training"]], y[idx["validation"]], y[test_idx]
    model = load(args.checkpoint)
    genome = open_genome(GENOME)
    left = genome.fetch_bytes(genome.names[0], 1_000_000, 1_000_020).decode().upper()
    right = genome.fetch_bytes(genome.names[0], 1_000_020, 1_000_040).decode().upper()
    result = {"benchmark": "mave_mpsa", "checkpoint": args.checkpoint, "n_train": len(tr), "n_test": len(te)}
    t0 = time.perf_counter()
    alone = pll_of(model, te, "", "")
    flanked = pll_of(model, te, left, right)
    result["zero_shot_seconds"] = round(time.perf_counter() - t0, 1)
    gseq = genome.fetch_bytes(genome.names[0], 0, int(genome.lengths[0])).decode()
    result["spearman_zero_shot"] = {
        "dnadiff_pll_alone": spearman(alone, yte), "dnadiff_pll_flank20": spearman(flanked, yte),
        f"markov{args.markov_order}_genome": spearman(markov_scores(gseq, te, args.markov_order), yte),
        "pwm_top_decile_train (supervised)": spearman(pwm_scores(tr, ytr, te), yte)}
    t0 = time.perf_counter()
    E = {name: embed(model, part, batch_size=512) for name, part in (("tr", tr), ("va", va), ("te", te))}
    result["embed_seconds"] = round(time.perf_counter() - t0, 1)
    result["spearman_ridge"] = {
        "dnadiff_embeddings": spearman(ridge(E["tr"], ytr, E["va"], yva, E["te"]), yte),
        "kmer_counts_k1-3": spearman(ridge(kmer_features(tr), ytr, kmer_features(va), yva, kmer_features(te)), yte),
        "position_onehot": spearman(ridge(onehot(tr), ytr, onehot(va), yva, onehot(te)), yte)}
    rs, ry, _ = read(DATA / "mpsa_replicate_data.csv.gz")
    rep = dict(zip(rs, ry))
    both = [(yv, rep[s]) for s, yv in zip(te, yte) if s in rep]
    result["replicate_ceiling_spearman"] = spearman([a for a, _ in both], [b for _, b in both]) if both else None
    result["replicate_pairs"] = len(both)
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else
                          {a: round(b, 4) for a, b in v.items()} if isinstance(v, dict) else v) for k, v in result.items()}))


if __name__ == "__main__":
    main()
