"""Genome window loader benchmark: windows/s and peak memory on real genomes of different sizes.

Each genome is measured in a fresh process (random 1024-bp windows of the whole genome through a
DataLoader in the main process, batch 32): windows/s, tokens/s, and peak RSS against the same
process's RSS before the genome was opened (the reference), so memory growth with genome size shows.
Genomes: the bgzip hg38 chr2 piece (2.3 Mb), and the 12 Mb yeast genome (shipped as plain gzip,
so first decompressed into a temporary folder, then measured as plain FASTA and as bgzip).
Prints one JSON line. Timings are wall-clock on a shared machine: other processes distort them.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DNADIFF_SHARED", REPO.parent / "shared")) / "data"
WINDOW, BATCH, NUM_WINDOWS, WARMUP = 1024, 32, 6400, 320
TRAINING_TOKENS_PER_S = 30_000  # upper end of expected CPU training consumption (benchmarks/train.py)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(genome_path: str) -> dict:
    """Windows/s and memory of the loader on one genome (run in its own process)."""
    import itertools

    from torch.utils.data import DataLoader

    from dnadiff.data.fasta import open_genome
    from dnadiff.data.intervals import whole_genome
    from dnadiff.data.windows import GenomeWindows

    reference_rss = peak_rss_mb()
    genome = open_genome(genome_path)
    dataset = GenomeWindows(genome_path, whole_genome(genome), WINDOW, seed=0, block_size=BATCH)
    loader = iter(DataLoader(dataset, batch_size=BATCH))
    for _ in itertools.islice(loader, WARMUP // BATCH):
        pass
    start = time.perf_counter()
    tokens = sum(int(b["loss_mask"].sum()) for b in itertools.islice(loader, NUM_WINDOWS // BATCH))
    seconds = time.perf_counter() - start
    return {"genome_bp": genome.total_length, "contigs": len(genome), "windows_per_s": NUM_WINDOWS / seconds,
            "tokens_per_s": NUM_WINDOWS * WINDOW / seconds, "acgt_frac": tokens / (NUM_WINDOWS * WINDOW),
            "reference_rss_mb": reference_rss, "peak_rss_mb": peak_rss_mb()}


def in_subprocess(genome_path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", str(genome_path)], check=True,
                         capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_bgzip(plain: Path, target: Path) -> Path:
    from Bio import bgzf

    with open(plain, "rb") as src, bgzf.BgzfWriter(str(target), "wb") as dst:
        for chunk in iter(lambda: src.read(65280), b""):  # samtools' block size
            dst.write(chunk)
            dst.flush()
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    sys.path.insert(0, str(REPO))
    from dnadiff.data.fasta import decompress_to_cache

    with tempfile.TemporaryDirectory() as tmp:
        yeast_plain = decompress_to_cache(SHARED / "yeast/S288C_sacCer_16chr.fa.gz", tmp)
        yeast_bgzip = write_bgzip(yeast_plain, Path(tmp) / "yeast.fa.gz")
        runs = {"hg38_piece_bgzip": in_subprocess(SHARED / "hg38/hg38_chr2_1-2333275.fa.gz"),
                "yeast_plain": in_subprocess(yeast_plain), "yeast_bgzip": in_subprocess(yeast_bgzip)}
    hg38, yeast = runs["hg38_piece_bgzip"], runs["yeast_bgzip"]
    growth = lambda r: r["peak_rss_mb"] - r["reference_rss_mb"]
    result = {"benchmark": "data_loader", "window": WINDOW, "batch": BATCH, "windows_timed": NUM_WINDOWS,
              **{f"{name}_{key}": round(value, 3) for name, r in runs.items() for key, value in r.items()},
              "genome_size_ratio_yeast_vs_hg38": round(yeast["genome_bp"] / hg38["genome_bp"], 2),
              "rss_growth_mb_hg38": round(growth(hg38), 1), "rss_growth_mb_yeast_bgzip": round(growth(yeast), 1),
              "peak_rss_ratio_yeast_vs_hg38": round(yeast["peak_rss_mb"] / hg38["peak_rss_mb"], 3),
              "min_loader_vs_training_tokens_per_s": round(
                  min(r["tokens_per_s"] for r in runs.values()) / TRAINING_TOKENS_PER_S, 1),
              "note": "wall-clock on a shared 2-core machine; other processes distort timings"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
