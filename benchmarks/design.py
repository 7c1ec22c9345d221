"""Evidence: classifier-guided design on the DHS cell-type data, judged by an independent oracle.

1. A class-conditional generator: ``dnadiff.pretrain(dhs=..., config="dhs_conditional")`` for
   ``--pretrain-steps`` steps on the training split (all four cell types).
2. Guide and oracle: two Caduceus-Ph classifiers (d_model 64, 2 layers, from scratch) over the 4 cell
   types, trained on *disjoint random halves* of the training split (``--train-per-half`` sequences
   each, ``--classifier-steps`` AdamW steps): the guide on sequences masked at a random level
   (:func:`dnadiff.finetuning.finetune_module.mask_at_random_level`, the noisy classifier), the oracle on clean
   sequences. Their held-out (test split) accuracies are reported.
3. For gamma in ``--gammas``: ``--designs`` sequences toward ``--target`` (exact form, cached sampler,
   ``--steps`` steps), beside unguided samples (gamma 0) and classifier-free guidance (w = 2).
   Figures: the oracle's target rate (Wilson 95%) and mean log-odds; naturalness against real
   held-out sequences of the target: 3-mer Pearson, JASPAR motif-rate correlation and Fréchet
   distance (bootstrap intervals; real-vs-real floors), nearest-neighbour identity to the training
   split (memorisation), mean pairwise identity (diversity); wall seconds and classifier calls.

Prints a Markdown table and ONE JSON line; writes ``--plot`` (PNG). Sizes are small so that it runs
in about 15 minutes on 2 CPU cores; they are printed in the JSON.

    python benchmarks/design.py [--pretrain-steps 400] [--designs 48] [--gammas 0 1 2 5 10]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import dnadiff
from dnadiff.atomic import atomic_write
from dnadiff.data.dhs import load_dhs
from dnadiff.data.tokenizer import encode
from dnadiff.design import oracle_scores
from dnadiff.diffusion import SampleStats
from dnadiff.eval.field_metrics import flat_field_figures, kmer_pearson
from dnadiff.eval.sequence_metrics import nearest_neighbour_identity
from dnadiff.finetuning.classifier import Classifier
from dnadiff.finetuning.finetune_module import mask_at_random_level
from dnadiff.finetuning.trainer import build_classifier
from dnadiff.models import build_model
from dnadiff.models.config import caduceus_spec

DHS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dna_diffusion" / \
    "K562_hESCT0_HepG2_GM12878_12k_sequences_per_group.txt.gz"


def train_classifier(seqs, labels, class_names, steps, noisy, seed):
    """A Caduceus-Ph SequenceClassifier trained from scratch: (Classifier, seconds)."""
    torch.manual_seed(seed)
    spec = caduceus_spec("demo", d_model=64, n_layer=2, variant="ph")
    module = build_classifier(build_model(spec), len(class_names), "mean")
    opt = torch.optim.AdamW(module.parameters(), lr=2e-3, weight_decay=0.01)
    tokens = torch.stack([encode(s) for s in seqs])
    y = torch.as_tensor(labels)
    valid = torch.ones(64, tokens.shape[1], dtype=torch.bool)
    g = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    module.train()
    for step in range(steps):
        idx = torch.randint(len(seqs), (64,), generator=g)
        batch = tokens[idx]
        flip = torch.rand(64, generator=g) < 0.5  # RC augmentation (Ph)
        batch = torch.where(flip[:, None], (3 - batch).flip(1), batch)
        if noisy:
            batch = mask_at_random_level(batch, valid, g)
        loss = torch.nn.functional.cross_entropy(module(batch, valid), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    info = {"task": "dhs_cell_type", "description": "Caduceus-Ph 64x2 from scratch"}
    if noisy:
        info["noisy"] = True
    return Classifier(module, class_names, tokens.shape[1], "ph", info), time.perf_counter() - started


def pairwise_identity(seqs):
    """Mean identity over distinct pairs (1 = all the same): the diversity figure."""
    a = np.stack([np.frombuffer(s.encode(), dtype=np.uint8) for s in seqs])
    same = (a[:, None, :] == a[None, :, :]).mean(-1)
    n = len(seqs)
    return float((same.sum() - n) / (n * (n - 1)))


def naturalness(seqs, real, labelled, labels, train, n_boot):
    fig = flat_field_figures(seqs, real, labelled, labels, n_boot=n_boot)
    nn = nearest_neighbour_identity(seqs, train)
    keep = {k: fig[k] for k in fig if any(k.startswith(p) for p in ("kmer3_pearson", "motif", "frechet"))}
    keep.update(nn_identity_mean=float(np.mean(nn)), nn_identity_max=float(np.max(nn)),
                pairwise_identity=pairwise_identity(seqs))
    return keep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrain-steps", type=int, default=400)
    ap.add_argument("--train-per-half", type=int, default=6000)
    ap.add_argument("--classifier-steps", type=int, default=300)
    ap.add_argument("--designs", type=int, default=48)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--gammas", type=float, nargs="+", default=[0, 1, 2, 5, 10])
    ap.add_argument("--target", default="HepG2")
    ap.add_argument("--n-boot", type=int, default=100)
    ap.add_argument("--held-out", type=int, default=1000, help="test sequences scoring the classifiers' accuracy")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plot", default="benchmarks/design.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = load_dhs(DHS)
    train, test = data.subset("training"), data.subset("test")
    names = list(data.class_names)
    k = names.index(args.target)
    with tempfile.TemporaryDirectory() as tmp:
        result = dnadiff.pretrain(dhs=DHS, config="dhs_conditional", out=Path(tmp) / "gen", progress=None,
                                  max_steps=args.pretrain_steps, accelerator="cpu",
                                  overrides={"train.val_every": args.pretrain_steps, "train.ckpt_every": args.pretrain_steps})
        model = dnadiff.load(result.model_path)
    pretrain_s = time.perf_counter() - t0
    print(f"# pretrained in {pretrain_s:.0f} s", flush=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(train.sequences))
    half_a, half_b = order[: args.train_per_half], order[args.train_per_half: 2 * args.train_per_half]
    guide, guide_s = train_classifier([train.sequences[i] for i in half_a], train.labels[half_a], names,
                                      args.classifier_steps, noisy=True, seed=1)
    oracle, oracle_s = train_classifier([train.sequences[i] for i in half_b], train.labels[half_b], names,
                                        args.classifier_steps, noisy=False, seed=2)
    print(f"# classifiers trained in {guide_s:.0f} + {oracle_s:.0f} s", flush=True)
    acc = {}
    held = rng.permutation(len(test.sequences))[: args.held_out]
    for name, clf in (("guide", guide), ("oracle", oracle)):
        acc[name] = float((clf.predict([test.sequences[i] for i in held]) == test.labels[held]).mean())
    print(f"# test accuracy on {len(held)} held-out: {acc}", flush=True)
    real_target = [s for s, y in zip(test.sequences, test.labels) if y == k]
    labelled = test.sequences
    labels = list(test.labels)
    ref_train = [train.sequences[i] for i in order[:8000]]
    rows = []
    base = dict(length=200, steps=args.steps, sampler="cached", seed=0, batch_size=args.designs)

    def run(label, **opts):
        started = time.perf_counter()
        stats = SampleStats()
        seqs = model.generate(args.designs, **base, **opts, stats=stats)
        seconds = time.perf_counter() - started
        row = {"row": label, "seconds": seconds, "classifier_calls": stats.classifier_calls,
               "classifier_rows": stats.classifier_rows,
               **oracle_scores(oracle, seqs, args.target),
               "guide_target_rate": float((guide.predict(seqs) == k).mean()),
               **naturalness(seqs, real_target, labelled, labels, ref_train, args.n_boot)}
        rows.append(row)
        print(json.dumps({kk: v for kk, v in row.items() if not isinstance(v, list)}), flush=True)

    for gamma in args.gammas:
        if gamma == 0:
            run("unguided (gamma 0)")
        else:
            run(f"gamma {gamma:g}", guide=guide, target=args.target, gamma=gamma)
    run("CFG w=2", class_name=args.target, guidance=2.0)
    real_scores = oracle_scores(oracle, real_target[: args.designs], args.target)
    floor = {kk: rows[0].get(kk) for kk in rows[0] if kk.endswith("_floor") or kk.endswith("_floor_ci")}
    print("\n| design | oracle target rate (95%) | mean log-odds | guide rate | 3-mer Pearson | motif corr | "
          "Fréchet | NN identity (mean/max) | pairwise identity | seconds | classifier calls (rows) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ci = r["oracle_target_rate_ci"]

        def f(key, r=r):
            v, c = r.get(key), r.get(key + "_ci")
            if v is None:
                return "-"
            return f"{v:.3f}" + (f" [{c[0]:.3f}, {c[1]:.3f}]" if c else "")

        print(f"| {r['row']} | {r['oracle_target_rate']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | "
              f"{r['oracle_mean_log_odds']:.2f} ± {r['oracle_log_odds_se']:.2f} | {r['guide_target_rate']:.3f} | "
              f"{f('kmer3_pearson')} | {f('motif_rate_pearson')} | {f('frechet')} | "
              f"{r['nn_identity_mean']:.3f}/{r['nn_identity_max']:.3f} | {r['pairwise_identity']:.3f} | "
              f"{r['seconds']:.1f} | {r['classifier_calls']} ({r['classifier_rows']}) |")
    print(f"| real held-out {args.target} | {real_scores['oracle_target_rate']:.3f} | "
          f"{real_scores['oracle_mean_log_odds']:.2f} | | floor: {floor} | | | | | | |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        guided = [r for r in rows if r["row"].startswith(("gamma", "unguided"))]
        gs = list(args.gammas)
        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        rate = [r["oracle_target_rate"] for r in guided]
        lo = [r["oracle_target_rate"] - r["oracle_target_rate_ci"][0] for r in guided]
        hi = [r["oracle_target_rate_ci"][1] - r["oracle_target_rate"] for r in guided]
        ax[0].errorbar(gs, rate, yerr=[lo, hi], marker="o", label="classifier guidance (oracle)")
        ax[0].axhline(rows[-1]["oracle_target_rate"], color="C1", ls="--", label="CFG w=2 (oracle)")
        ax[0].axhline(real_scores["oracle_target_rate"], color="k", ls=":", label=f"real {args.target} (oracle)")
        ax[0].set_xlabel("gamma"), ax[0].set_ylabel(f"oracle rate of {args.target}"), ax[0].legend(fontsize=8)
        ax[0].set_xscale("symlog", linthresh=1)
        for key, lab in (("kmer3_pearson", "3-mer Pearson"), ("motif_rate_pearson", "motif-rate corr"),
                         ("pairwise_identity", "pairwise identity"), ("nn_identity_mean", "NN identity")):
            if key in guided[0]:
                ax[1].plot(gs, [r[key] for r in guided], marker="o", label=lab)
        if rows[0].get("kmer3_pearson_floor") is not None:
            ax[1].axhline(rows[0]["kmer3_pearson_floor"], color="C0", ls=":", label="3-mer floor (real vs real)")
        ax[1].set_xlabel("gamma"), ax[1].set_xscale("symlog", linthresh=1), ax[1].legend(fontsize=8)
        ax[1].set_title("naturalness / diversity")
        fig.tight_layout()
        atomic_write(args.plot, lambda fh: fig.savefig(fh, format="png", dpi=110))
    except ImportError:
        print("no plot: matplotlib is not installed")
    out = {"benchmark": "design", "target": args.target, "sizes": {
        "pretrain_steps": args.pretrain_steps, "train_per_half": args.train_per_half,
        "classifier_steps": args.classifier_steps, "designs": args.designs, "steps": args.steps},
        "pretrain_seconds": pretrain_s, "guide_train_seconds": guide_s, "oracle_train_seconds": oracle_s,
        "test_accuracy": acc, "real_target_oracle": real_scores, "floors": floor,
        "rows": [{kk: v for kk, v in r.items() if not kk.endswith("_floor") and not kk.endswith("_floor_ci")}
                 for r in rows],
        "target_rate_ratio_vs_unguided": {r["row"]: r["oracle_target_rate"] / max(rows[0]["oracle_target_rate"], 1e-9)
                                          for r in rows},
        "total_seconds": time.perf_counter() - t0}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
