"""Window dataset: exact sequence, RC augmentation, N filtering, determinism, sharding and resume."""
from __future__ import annotations

import gzip
import itertools

import numpy as np
import pytest
import torch
from Bio import SeqIO
from torch.utils.data import DataLoader

from dnadiff.data.fasta import decompress_to_cache, open_genome
from dnadiff.data.intervals import Intervals, make_splits, whole_genome
from dnadiff.data.windows import GenomeWindows
from dnadiff.errors import UserError

HG38 = "hg38/hg38_chr2_1-2333275.fa.gz"
COMPLEMENT = str.maketrans("ACGTN", "TGCAN")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def hg38_path(shared_data):
    return shared_data / HG38


@pytest.fixture(scope="module")
def hg38_seq(hg38_path) -> str:
    with gzip.open(hg38_path, "rt") as handle:
        return str(next(SeqIO.parse(handle, "fasta")).seq).upper()


def as_string(tokens: torch.Tensor) -> str:
    return "".join("ACGT?NP"[i] for i in tokens.tolist())


def expected(seq: str, start: int, length: int, strand: int) -> str:
    """The window read independently, non-ACGT as N, reverse-complemented on strand -1."""
    window = "".join(ch if ch in "ACGT" else "N" for ch in seq[start:start + length])
    return window if strand > 0 else window.translate(COMPLEMENT)[::-1]


def chr2(start: int, end: int) -> Intervals:
    return Intervals.build([0], [start], [end])


def take(dataset, n: int) -> list[dict]:
    return list(itertools.islice(iter(dataset), n))


def test_random_windows_equal_independent_read_and_rc_is_exact(hg38_path, hg38_seq):
    plus = GenomeWindows(hg38_path, chr2(0, 2333275), 512, seed=3, max_n_frac=0.1)
    both = GenomeWindows(hg38_path, chr2(0, 2333275), 512, seed=3, max_n_frac=0.1, rc_aug=True)
    strands = []
    for a, b in zip(take(plus, 60), take(both, 60)):
        assert (a["index"], a["contig"], a["start"]) == (b["index"], b["contig"], b["start"])
        assert a["strand"] == 1 and a["tokens"].dtype == torch.long and a["tokens"].shape == (512,)
        assert as_string(a["tokens"]) == expected(hg38_seq, a["start"], 512, 1)
        assert as_string(b["tokens"]) == expected(hg38_seq, b["start"], 512, b["strand"])
        torch.testing.assert_close(b["loss_mask"], b["tokens"] < 4)
        strands.append(b["strand"])
    assert 15 < strands.count(-1) < 45  # both strands, about half each


def test_no_all_n_window_and_n_fraction_respected(hg38_path, hg38_seq):
    # chr2 starts with 10,000 N: windows of 1024 in [0, 12000) are mostly all-N
    for max_n_frac in (1.0, 0.1):
        for item in take(GenomeWindows(hg38_path, chr2(0, 12000), 1024, seed=0, max_n_frac=max_n_frac), 40):
            n = int((item["tokens"] == 5).sum())
            assert n < 1024 and n <= max_n_frac * 1024
            assert item["loss_mask"].sum() == 1024 - n
    tiles = lambda frac: [t["start"] for t in GenomeWindows(hg38_path, chr2(0, 12000), 1024, mode="tile",
                                                            max_n_frac=frac)]
    assert tiles(1.0) == [9216, 10240]  # tiles 0..8 are all N; tile 9 has 784 N
    assert tiles(0.1) == [10240]
    with pytest.raises(UserError, match="mostly N"):
        take(GenomeWindows(hg38_path, chr2(0, 9000), 1024, max_n_frac=0.5, max_attempts=8), 1)


def test_tiles_cover_the_grid_and_cap_is_evenly_spaced(hg38_path, hg38_seq):
    every = [t["start"] for t in GenomeWindows(hg38_path, chr2(100_000, 110_000), 1000, mode="tile")]
    assert every == list(range(100_000, 110_000, 1000))
    capped = [t["start"] for t in GenomeWindows(hg38_path, chr2(100_000, 110_000), 1000, mode="tile", num_windows=4)]
    assert capped == [100_000, 102_000, 105_000, 107_000]  # tiles 0, 10//4, 20//4, 30//4
    strided = GenomeWindows(hg38_path, chr2(200_000, 201_000), 400, mode="tile", stride=300)
    assert [(t["start"], as_string(t["tokens"])) for t in strided] == [
        (s, expected(hg38_seq, s, 400, 1)) for s in (200_000, 200_300, 200_600)]


def test_uniform_start_enumeration_is_a_bijection(hg38_path):
    intervals = Intervals.build([0, 0, 0], [100, 500, 900], [110, 503, 950])
    dataset = GenomeWindows(hg38_path, intervals, 3, mode="random")
    starts = [dataset._locate(p, 1) for p in range(dataset.total)]
    valid = [(0, s) for a, b in [(100, 110), (500, 503), (900, 950)] for s in range(a, b - 2)]
    assert dataset.total == len(valid) and sorted(starts) == valid


def test_yeast_windows_are_length_weighted_over_contigs(shared_data, tmp_path_factory):
    plain = decompress_to_cache(shared_data / "yeast/S288C_sacCer_16chr.fa.gz", tmp_path_factory.mktemp("y"))
    genome = open_genome(plain)
    records = {r.id: str(r.seq).upper() for r in SeqIO.parse(str(plain), "fasta")}
    dataset = GenomeWindows(plain, whole_genome(genome), 200, seed=5)
    items = take(dataset, 3000)
    for item in items[:50]:
        seq = records[genome.names[item["contig"]]]
        assert as_string(item["tokens"]) == expected(seq, item["start"], 200, 1)
    counts = np.bincount([i["contig"] for i in items], minlength=16)
    weights = (genome.lengths - 199) / (genome.lengths - 199).sum()
    sd = np.sqrt(3000 * weights * (1 - weights))
    assert (np.abs(counts - 3000 * weights) < 4 * sd + 1).all()


def test_same_seed_same_stream_other_seed_other_stream(hg38_path):
    a = [(i["contig"], i["start"]) for i in take(GenomeWindows(hg38_path, chr2(0, 2333275), 128, seed=11), 30)]
    b = [(i["contig"], i["start"]) for i in take(GenomeWindows(hg38_path, chr2(0, 2333275), 128, seed=11), 30)]
    c = [(i["contig"], i["start"]) for i in take(GenomeWindows(hg38_path, chr2(0, 2333275), 128, seed=12), 30)]
    assert a == b and a != c and len(set(a)) == 30


def test_ranks_and_workers_read_disjoint_and_complete_index_sets(hg38_path):
    dataset = GenomeWindows(hg38_path, chr2(0, 2333275), 64, start_index=5, num_windows=5 + 203, block_size=4)
    seen = []
    for rank, worker in itertools.product(range(2), range(3)):
        seen.append(list(dataset.shard_indices(rank, 2, worker, 3)))
        assert seen[-1] == sorted(seen[-1])
    flat = [i for shard in seen for i in shard]
    assert len(flat) == len(set(flat)) and sorted(flat) == list(range(5, 208))
    # block b goes to worker w, rank r with b mod 6 == w*2 + r: worker 1 of rank 0 reads block 2 first
    assert seen[1][:4] == [5 + 8, 6 + 8, 7 + 8, 8 + 8]


def test_dataloader_workers_serve_consecutive_blocks_and_resume_exactly(hg38_path):
    """With W worker processes, step s of rank r gets block s*R + r, so a resumed stream at
    start_index + S*R*B continues exactly; checked here with 2 real workers, R = 2 ranks."""
    batch, ranks = 4, 2

    def batches(rank, start_index, steps, workers):
        dataset = GenomeWindows(hg38_path, chr2(0, 2333275), 64, seed=9, start_index=start_index,
                                block_size=batch, rank=rank, world_size=ranks)
        loader = DataLoader(dataset, batch_size=batch, num_workers=workers)
        return [(b["index"].tolist(), b["start"].tolist()) for b in itertools.islice(loader, steps)]

    for rank in range(ranks):
        full = batches(rank, 0, 7, workers=2)
        assert [idx for idx, _ in full] == [list(range((s * ranks + rank) * batch, (s * ranks + rank + 1) * batch))
                                            for s in range(7)]
        resumed = batches(rank, 3 * ranks * batch, 4, workers=0)  # resume after 3 steps, other worker count
        assert resumed == full[3:]


def test_bad_settings(hg38_path):
    with pytest.raises(UserError, match="no interval is at least 5000 bp"):
        GenomeWindows(hg38_path, chr2(0, 4000), 5000)
    with pytest.raises(UserError, match="window mode 'spiral'"):
        GenomeWindows(hg38_path, chr2(0, 4000), 100, mode="spiral")
    with pytest.raises(UserError, match="max_n_frac"):
        GenomeWindows(hg38_path, chr2(0, 4000), 100, max_n_frac=1.5)
