"""Genome FASTA access on real data (bgzip hg38 piece, plain chrM, plain-gzip yeast) and bad inputs."""
from __future__ import annotations

import gzip
import os
import pickle
import shutil

import numpy as np
import pytest
from Bio import SeqIO

from dnadiff.data.fasta import compression_of, decompress_to_cache, open_genome
from dnadiff.errors import UserError

HG38 = "hg38/hg38_chr2_1-2333275.fa.gz"
YEAST = "yeast/S288C_sacCer_16chr.fa.gz"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Indexes of read-only genomes (../shared) go to a per-test cache, never into ../shared."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def independent_ids(seq: str) -> np.ndarray:
    """Token ids computed without the tokenizer: A0 C1 G2 T3, everything else N=5."""
    table = {"A": 0, "C": 1, "G": 2, "T": 3}
    return np.array([table.get(ch, 5) for ch in seq.upper()], dtype=np.int64)


def read_all(path) -> dict[str, str]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as handle:
        return {rec.id: str(rec.seq) for rec in SeqIO.parse(handle, "fasta")}


@pytest.fixture(scope="module")
def hg38_seq(shared_data) -> str:
    return read_all(shared_data / HG38)["chr2"]


def test_compression_detection(shared_data):
    assert compression_of(shared_data / HG38) == "bgzip"
    assert compression_of(shared_data / YEAST) == "gzip"
    assert compression_of(shared_data / "hg38/hg38_chrM.fa") == "plain"


def test_bgzip_fetch_equals_independent_read(shared_data, hg38_seq):
    genome = open_genome(shared_data / HG38)
    assert genome.names == ["chr2"] and genome.lengths.tolist() == [len(hg38_seq)] == [2333275]
    rng = np.random.default_rng(0)
    starts = [0, 9990, len(hg38_seq) - 1000] + rng.integers(0, len(hg38_seq) - 1000, 20).tolist()
    for start in starts:
        got = genome.fetch(0, start, start + 1000).numpy()
        np.testing.assert_array_equal(got, independent_ids(hg38_seq[start:start + 1000]))
    # the telomeric N run of chr2 ends at 10,000 (0-based), soft-masked lower case follows
    assert genome.fetch("chr2", 9995, 10005).tolist() == [5] * 5 + independent_ids(hg38_seq[10000:10005]).tolist()


def test_bgzip_index_built_when_missing(shared_data, hg38_seq, tmp_path):
    copy = tmp_path / "piece.fa.gz"
    shutil.copy(shared_data / HG38, copy)
    genome = open_genome(copy)
    assert (tmp_path / "piece.fa.gz.fai").read_text() == (shared_data / (HG38 + ".fai")).read_text()
    assert (tmp_path / "piece.fa.gz.gzi").exists()
    assert not list(tmp_path.glob("*.tmp-*"))  # built under temporary names, renamed into place
    np.testing.assert_array_equal(genome.fetch(0, 500_000, 500_300).numpy(),
                                  independent_ids(hg38_seq[500_000:500_300]))


def test_index_goes_to_cache_when_folder_not_writable(shared_data, tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    shutil.copy(shared_data / "hg38/hg38_chrM.fa", folder / "chrM.fa")
    folder.chmod(0o555)
    try:
        genome = open_genome(folder / "chrM.fa")
        assert sorted(p.name for p in folder.iterdir()) == ["chrM.fa"]
    finally:
        folder.chmod(0o755)
    assert len(list((tmp_path / "cache/dnadiff/fai").glob("*/chrM.fa.fai"))) == 1
    chrm = read_all(shared_data / "hg38/hg38_chrM.fa")["chrM"]
    assert genome.lengths.tolist() == [16569]
    np.testing.assert_array_equal(genome.fetch("chrM", 16000, 16569).numpy(), independent_ids(chrm[16000:]))


def test_yeast_plain_gzip_decompressed_once_into_cache(shared_data, tmp_path):
    target = decompress_to_cache(shared_data / YEAST, tmp_path)
    mtime = target.stat().st_mtime_ns
    assert decompress_to_cache(shared_data / YEAST, tmp_path) == target and target.stat().st_mtime_ns == mtime
    genome = open_genome(target)
    records = read_all(shared_data / YEAST)
    assert genome.names == list(records) and len(genome) == 16
    assert genome.lengths.tolist() == [len(s) for s in records.values()]
    assert 12_000_000 < genome.total_length < 12_200_000
    rng = np.random.default_rng(1)
    for name in genome.names[::3]:
        seq = records[name]
        start = int(rng.integers(0, len(seq) - 500))
        np.testing.assert_array_equal(genome.fetch(name, start, start + 500).numpy(),
                                      independent_ids(seq[start:start + 500]))


def test_genome_pickles_by_reopening(shared_data):
    genome = pickle.loads(pickle.dumps(open_genome(shared_data / HG38)))
    assert genome.fetch(0, 20_000, 20_010).tolist() == open_genome(shared_data / HG38).fetch(0, 20_000, 20_010).tolist()


def test_plain_gzip_error_names_bgzip(shared_data, tmp_path):
    with pytest.raises(UserError, match="plain gzip.*bgzip"):
        open_genome(shared_data / YEAST)
    small = tmp_path / "small.fa.gz"
    with gzip.open(small, "wt") as handle:
        handle.write(">a\nACGT\n")
    with pytest.raises(UserError, match="bgzip"):
        open_genome(small)


@pytest.mark.parametrize("content, problem", [
    (None, "does not exist"),
    ("hello world\nnot a genome\n", "not a FASTA"),
    (">chr1\n>chr2\nACGTACGT\n", "empty contig 'chr1'"),
    ("", "not a FASTA"),
    (">a\nACGT\nACGTAC\nAC\n", "not a well-formed FASTA"),
])
def test_bad_fasta_is_one_line_user_error(tmp_path, content, problem):
    path = tmp_path / "genome.fa"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=problem) as err:
        open_genome(path)
    assert "\n" not in str(err.value)


def test_window_longer_than_every_contig(shared_data):
    genome = open_genome(shared_data / "hg38/hg38_chrM.fa")
    genome.check_window(16569)
    with pytest.raises(UserError, match="longer than every contig.*chrM.*16569"):
        genome.check_window(16570)


def test_fetch_outside_contig_is_user_error(shared_data):
    genome = open_genome(shared_data / "hg38/hg38_chrM.fa")
    with pytest.raises(UserError, match="outside contig chrM"):
        genome.fetch(0, 16500, 16600)
    with pytest.raises(UserError, match="'chrX' is not in"):
        genome.fetch("chrX", 0, 10)
    assert not (shared_data / "hg38/hg38_chrM.fa.fai").exists()  # read-only folder: index went to the cache


def test_full_64k_bgzf_blocks_read_at_every_block_boundary(shared_data, hg38_seq, tmp_path):
    """Biopython writes BGZF blocks of 65,536 bytes; regions starting on a block boundary must read right."""
    from Bio import bgzf

    body = ">chr2\n" + "\n".join(hg38_seq[i:i + 60] for i in range(0, 300_000, 60)) + "\n"
    path = tmp_path / "full_blocks.fa.gz"
    with bgzf.BgzfWriter(str(path), "wb") as handle:
        handle.write(body.encode())
    genome = open_genome(path)
    for block in range(1, len(body) // 65536 + 1):
        byte = block * 65536  # first byte of the block; sequence position skips the header and newlines
        position = next(p for p in range(byte - 6 - (byte - 6) // 61 - 2, byte) if 6 + p + p // 60 >= byte)
        for start in (position - 1, position, position + 1):
            np.testing.assert_array_equal(genome.fetch(0, start, start + 100).numpy(),
                                          independent_ids(hg38_seq[start:start + 100]))


# ------------------------------------------------------------------ corrupt genomes and indexes that lie
def _bgzip_bytes(text: str, path) -> bytes:
    from Bio import bgzf

    with bgzf.BgzfWriter(str(path), "wb") as handle:
        handle.write(text.encode())
    return path.read_bytes()


def _random_fasta(seed: int, contigs: int, length: int, width: int) -> str:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(contigs):
        seq = "".join(rng.choice(list("ACGT"), size=length))
        out.append(f">chr{i}\n" + "\n".join(seq[j:j + width] for j in range(0, length, width)) + "\n")
    return "".join(out)


def test_truncated_bgzip_is_refused_in_one_line(tmp_path):
    blob = _bgzip_bytes(_random_fasta(0, 30, 4000, 60), tmp_path / "full.fa.gz")
    cut = tmp_path / "cut.fa.gz"
    cut.write_bytes(blob[: len(blob) * 2 // 3])
    with pytest.raises(UserError) as err:
        open_genome(cut)
    message = str(err.value)
    assert "\n" not in message and "cut.fa.gz" in message and "truncated" in message and "bgzip" in message
    assert not (tmp_path / "cut.fa.gz.fai").exists()


def test_corrupt_bgzip_block_is_refused_in_one_line(tmp_path):
    blob = bytearray(_bgzip_bytes(_random_fasta(1, 30, 4000, 60), tmp_path / "full.fa.gz"))
    blob[len(blob) // 3 : len(blob) // 3 + 64] = bytes(64)  # zeros in the middle of a deflate stream
    bad = tmp_path / "bad.fa.gz"
    bad.write_bytes(bytes(blob))
    with pytest.raises(UserError) as err:
        open_genome(bad)
    assert "\n" not in str(err.value) and "bad.fa.gz" in str(err.value) and "corrupt" in str(err.value)


@pytest.mark.parametrize("compressed", [False, True])
def test_an_index_kept_fresh_by_its_times_but_describing_another_file_is_refused(tmp_path, compressed):
    """cp -p / rsync -t / tar keep modification times: an old index beside a new FASTA looks up to date."""
    name = "g.fa.gz" if compressed else "g.fa"
    path = tmp_path / name
    old, new = _random_fasta(2, 3, 5000, 60), _random_fasta(3, 3, 5200, 70)
    if compressed:
        _bgzip_bytes(old, path)
    else:
        path.write_text(old)
    open_genome(path).close()
    fai = tmp_path / (name + ".fai")
    stamp = fai.stat().st_mtime - 100
    if compressed:
        _bgzip_bytes(new, path)
    else:
        path.write_text(new)
    os.utime(path, (stamp, stamp))  # the FASTA looks older than its index
    with pytest.raises(UserError) as err:
        open_genome(path)
    message = str(err.value)
    assert "\n" not in message and f"{name}.fai does not describe {name}" in message and f"delete {name}.fai" in message


def test_an_index_that_matches_passes_the_check_and_reads_correctly(tmp_path):
    text = _random_fasta(4, 4, 3001, 61).replace("\n", "\r\n")  # CRLF and a partial last line
    (tmp_path / "crlf.fa").write_bytes(text.encode())
    genome = open_genome(tmp_path / "crlf.fa")
    seq = "".join(text.split(">chr3\r\n")[1].split())
    assert genome.fetch_bytes("chr3", 0, 3001).decode() == seq
    genome.close()
    genome = open_genome(tmp_path / "crlf.fa")  # the second open uses the existing index and checks it
    assert list(genome.lengths) == [3001] * 4
