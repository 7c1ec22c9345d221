"""`dnadiff score`: per-sequence NELBO bits/base (with standard error and draw count) and, with
``--per-position FILE``, each position's log-probability when it alone is masked (pseudo-log-likelihood).

    dnadiff score --checkpoint OUT/model.pt --input seqs.fa --out scores.tsv [--num-t 8] [--per-position pll.tsv]
"""
from __future__ import annotations

import math

from dnadiff.commands.devices import add_device_arguments, torch_device
from dnadiff.keys import option


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="model.pt, a pretraining .ckpt, an original Caduceus folder or a Hugging Face hub id")
    p.add_argument("--download", action="store_true", help="fetch a hub id missing from the Hugging Face cache")
    p.add_argument("--input", required=True, help="sequences: FASTA (plain or gzip) or TSV id<TAB>sequence")
    p.add_argument("--out", required=True, help="per-sequence table (.tsv, or .json / .jsonl for JSON lines)")
    p.add_argument("--per-position", metavar="FILE", help="also write each position's masked log-probability here")
    p.add_argument("--num-t", type=option("int", lo=1, hi=100_000), default=8, help="Monte-Carlo draws of t per window (default 8)")
    p.add_argument("--batch-size", type=option("int", lo=1, hi=65_536), default=64, help="rows per denoiser call")
    p.add_argument("--strands", default="auto", choices=["auto", "both", "forward"],
                   help="per-position scores: average both strands (auto: yes for Caduceus-Ph, no for PS)")
    p.add_argument("--seed", type=option("int", lo=0, hi=2**63 - 1), default=0)
    p.add_argument("--force", action="store_true", help="replace existing output files")
    add_device_arguments(p, training=False)


def _fmt(path: str) -> str:
    return "json" if str(path).lower().endswith((".json", ".jsonl")) else "tsv"


def run(args) -> int:
    from dnadiff.generate import load
    from dnadiff.scoring import nelbo_scores, pseudo_log_likelihood
    from dnadiff.scoring.io import Ticker, check_output, read_sequences, write_rows

    device = torch_device(args)
    check_output(args.out, args.force)
    if args.per_position:
        check_output(args.per_position, args.force)
    ids = [name for name, _ in read_sequences(args.input)]  # checks the whole input before any work
    model = load(args.checkpoint, device=device, download=args.download)
    tick = Ticker("score", len(ids))
    totals = {"bits": 0.0, "bases": 0.0}

    def rows():
        done, chunk = 0, []
        for item in read_sequences(args.input):
            chunk.append(item)
            if len(chunk) == 1024:
                yield from scored(chunk, done)
                done += len(chunk)
                chunk = []
        if chunk:
            yield from scored(chunk, done)

    def scored(chunk, done):
        s = nelbo_scores(model, [q for _, q in chunk], num_t=args.num_t, batch_size=args.batch_size,
                         seed=args.seed + done)
        for k, (name, seq) in enumerate(chunk):
            if not math.isnan(s.bits_per_base[k]):
                totals["bits"] += s.bits_per_base[k] * s.bases[k]
                totals["bases"] += s.bases[k]
            tick(done + k + 1)
            yield {"id": name, "length": len(seq), "bases": int(s.bases[k]), "bits_per_base": float(s.bits_per_base[k]),
                   "stderr": float(s.stderr[k]), "num_t": s.num_t}

    n = write_rows(args.out, ["id", "length", "bases", "bits_per_base", "stderr", "num_t"], rows(), _fmt(args.out))
    if args.per_position:
        def positions():
            for name, seq in read_sequences(args.input):
                logp = pseudo_log_likelihood(model, seq, batch_size=args.batch_size, strands=args.strands)
                for i, (base, v) in enumerate(zip(seq.upper(), logp)):
                    yield {"id": name, "pos": i + 1, "base": base, "logp": float(v)}
        write_rows(args.per_position, ["id", "pos", "base", "logp"], positions(), _fmt(args.per_position))
    mean = totals["bits"] / totals["bases"] if totals["bases"] else math.nan
    print(f"scored {n:,} sequences ({int(totals['bases']):,} bases, {args.num_t} draws of t each): "
          f"{mean:.4f} bits/base overall -> {args.out}" + (f", per-position -> {args.per_position}" if args.per_position else ""))
    return 0
