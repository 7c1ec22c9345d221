"""Scoring benchmark: zero-shot variants/s and embeddings/s of the 470k Caduceus-Ph, batched (dnadiff's
``score_alleles`` / ``embed``) against the naive cost measured in the same run (one full forward per variant or
sequence, unbatched), at ``--context`` 512 and 2048, and the peak RSS of the streaming ``variant_effects`` ->
TSV pipeline over 100,000 variants (and over 10,000, to show it does not grow with the count).

The denoiser is the 470k config randomly initialised (speed does not depend on the weights); variants are
random single-base substitutions of the real hg38 piece (REF read from the genome). Strands are averaged
(the Ph default), so a batched row costs two strands and so does the naive forward. Prints one JSON line.
Wall-clock timings on a shared machine: other processes distort them.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
GENOME = ROOT.parent / "shared" / "data" / "hg38" / "hg38_chr2_1-2333275.fa.gz"


def model_470k():
    import yaml

    from dnadiff.data.info import DataInfo
    from dnadiff.diffusion import build_diffusion
    from dnadiff.generate import DNAModel
    from dnadiff.models import build_model

    cfg = yaml.safe_load((ROOT / "configs" / "pretrain" / "470k.yaml").read_text())
    torch.manual_seed(0)
    spec = {**cfg["model"], "vocab_size": 7, "num_outputs": 4}
    return DNAModel(build_model(spec).eval(), build_diffusion({**cfg["diffusion"], "vocab_size": 4}),
                     DataInfo(window=cfg["data"]["window"]))


def random_snvs(genome, n: int, seed: int, margin: int):
    from dnadiff.scoring.variants import Allele, Record

    rng = np.random.default_rng(seed)
    name = genome.names[0]
    length = int(genome.lengths[0])
    out = []
    while len(out) < n:
        p = int(rng.integers(margin, length - margin))
        ref = genome.fetch_bytes(name, p, p + 1).decode().upper()
        if ref not in "ACGT":
            continue
        alt = "ACGT"[("ACGT".index(ref) + int(rng.integers(1, 4))) % 4]
        out.append(Allele(Record(len(out) + 1, name, p + 1, ref, (alt,)), alt, name, p))
    return out


@torch.no_grad()
def naive_variants(model, genome, alleles, context: int) -> float:
    """One unbatched forward (both strands) per variant: seconds."""
    from dnadiff.scoring.common import masked_logprobs

    start = time.perf_counter()
    for a in alleles:
        window = genome.fetch(a.contig, a.start - context, a.start + context + 1)[None]
        masked_logprobs(model.denoiser, model.diffusion, window, torch.tensor([context]), "both")
    return time.perf_counter() - start


def rss_run(n: int, context: int, threads: int) -> dict:
    """Peak RSS (MB, the child's own VmHWM: ru_maxrss would carry the parent's over exec) of a child process streaming ``n`` variants through variant_effects into a TSV."""
    with tempfile.TemporaryDirectory() as tmp:
        code = f"""
import sys, resource, time, torch
sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'benchmarks')!r})
torch.set_num_threads({threads})
from scoring import model_470k, random_snvs
from dnadiff.data.fasta import open_genome
from dnadiff.scoring import variant_effects
from dnadiff.scoring.io import variant_rows, write_rows, VARIANT_COLUMNS
g = open_genome({str(GENOME)!r})
with open({tmp!r} + '/v.tsv', 'w') as f:
    f.write('chrom\\tpos\\tref\\talt\\n')
    for a in random_snvs(g, {n}, 1, {context} + 1):
        f.write(f'{{a.contig}}\\t{{a.record.pos}}\\t{{a.record.ref}}\\t{{a.alt}}\\n')
m = model_470k()
t = time.perf_counter()
write_rows({tmp!r} + '/out.tsv', VARIANT_COLUMNS, variant_rows(variant_effects(m, {tmp!r} + '/v.tsv', g, context={context}, batch_size=128)))
hwm = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0]
print(time.perf_counter() - t, hwm / 1024)
"""
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        seconds, rss = map(float, out.stdout.split())
    return {"variants": n, "context": context, "peak_rss_mb": round(rss, 1), "variants_per_s": round(n / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--contexts", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--variants", type=int, default=256, help="variants timed per context (batched)")
    parser.add_argument("--naive", type=int, default=32, help="variants timed per context (naive)")
    parser.add_argument("--rss-variants", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rss-context", type=int, default=16, help="context of the RSS runs (bounds their time)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from dnadiff.data.fasta import open_genome
    from dnadiff.scoring import embed, score_alleles

    genome = open_genome(GENOME)
    model = model_470k()
    result: dict = {"benchmark": "scoring", "model": "470k caduceus-ph (random init)", "threads": args.threads,
                    "strands": "both"}
    if args.rss_variants != [0]:
        print("rss runs ...", file=sys.stderr, flush=True)
        result["rss"] = [rss_run(n, args.rss_context, args.threads) for n in args.rss_variants]
    for context in args.contexts:
        print(f"context {context} ...", file=sys.stderr, flush=True)
        alleles = random_snvs(genome, args.variants, 0, context + 1)
        score_alleles(model, genome, alleles[:4], context, batch_size=4)  # warm-up
        start = time.perf_counter()
        score_alleles(model, genome, alleles, context, batch_size=64)
        batched = args.variants / (time.perf_counter() - start)
        naive = args.naive / naive_variants(model, genome, alleles[: args.naive], context)
        seqs = [genome.fetch_bytes(a.contig, a.start - context, a.start + context + 1).decode() for a in alleles]
        start = time.perf_counter()
        embed(model, seqs, batch_size=64, max_tokens=32_768)
        emb = len(seqs) / (time.perf_counter() - start)
        start = time.perf_counter()
        for s in seqs[: args.naive]:
            embed(model, [s])
        emb_naive = args.naive / (time.perf_counter() - start)
        result[f"context_{context}"] = {"window_bp": 2 * context + 1, "variants_per_s": round(batched, 2),
                                        "naive_variants_per_s": round(naive, 2), "variants_speedup": round(batched / naive, 2),
                                        "embeddings_per_s": round(emb, 2), "naive_embeddings_per_s": round(emb_naive, 2),
                                        "embeddings_speedup": round(emb / emb_naive, 2)}
    result["peak_rss_mb_this_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
