"""Interval splits (BED, held-out contigs, contig ends) and region parsing on real genomes."""
from __future__ import annotations

import numpy as np
import pytest

from dnadiff.data.fasta import decompress_to_cache, open_genome
from dnadiff.data.intervals import Intervals, make_splits, parse_region, read_bed
from dnadiff.errors import UserError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def hg38(shared_data):
    return open_genome(shared_data / "hg38/hg38_chr2_1-2333275.fa.gz")


@pytest.fixture(scope="module")
def yeast(shared_data, tmp_path_factory):
    return open_genome(decompress_to_cache(shared_data / "yeast/S288C_sacCer_16chr.fa.gz",
                                           tmp_path_factory.mktemp("yeast")))


def covered(intervals: Intervals, contig: int, length: int) -> np.ndarray:
    """int array [length]: how many intervals cover each bp of ``contig``."""
    depth = np.zeros(length, dtype=np.int64)
    for c, s, e in zip(intervals.contig, intervals.start, intervals.end):
        if c == contig:
            depth[s:e] += 1
    return depth


def test_one_contig_held_out_at_its_end(hg38):
    splits = make_splits(hg38)
    held = round(2333275 * 0.05)  # 116664 bp each for val and test
    assert held == 116664
    assert (splits["train"].start.tolist(), splits["train"].end.tolist()) == ([0], [2333275 - 2 * held])
    assert (splits["test"].start.tolist(), splits["test"].end.tolist()) == ([2333275 - 2 * held], [2333275 - held])
    assert (splits["val"].start.tolist(), splits["val"].end.tolist()) == ([2333275 - held], [2333275])
    total = sum(covered(splits[s], 0, 2333275) for s in ("train", "val", "test"))
    assert (total == 1).all()  # disjoint and complete


def test_every_contig_held_out_at_its_end_without_contig_names(yeast):
    splits = make_splits(yeast, holdout_frac=0.1)
    assert len(splits["train"]) == len(splits["val"]) == len(splits["test"]) == 16
    held = np.rint(yeast.lengths * 0.1).astype(np.int64)
    np.testing.assert_array_equal(splits["val"].lengths, held)
    np.testing.assert_array_equal(splits["val"].end, yeast.lengths)
    assert splits["train"].total_length + splits["val"].total_length + splits["test"].total_length == yeast.total_length


def test_held_out_contigs(yeast):
    val, test = yeast.names[3], yeast.names[9]
    splits = make_splits(yeast, val_contigs=[val], test_contigs=[test])
    assert splits["val"].contig.tolist() == [3] and splits["test"].contig.tolist() == [9]
    assert sorted(splits["train"].contig.tolist()) == [i for i in range(16) if i not in (3, 9)]
    assert splits["val"].end.tolist() == [yeast.lengths[3]]
    only_val = make_splits(yeast, val_contigs=[val])
    assert len(only_val["test"]) == 0 and len(only_val["train"]) == 15


def test_bed_with_split_column(yeast, tmp_path):
    names = yeast.names
    bed = tmp_path / "seqs.bed"
    bed.write_text(f"# comment\n{names[0]}\t0\t100000\ttrain\n{names[0]}\t100000\t150000\tvalid\n"
                   f"{names[1]}\t5000\t65000\ttest\n{names[2]}\t0\t{yeast.lengths[2]}\ttrain\n")
    splits = make_splits(yeast, bed=bed)
    assert splits["train"].contig.tolist() == [0, 2] and splits["train"].end.tolist() == [100000, yeast.lengths[2]]
    assert (splits["val"].start.tolist(), splits["val"].end.tolist()) == ([100000], [150000])
    assert (splits["test"].contig.tolist(), splits["test"].start.tolist()) == ([1], [5000])
    with pytest.raises(UserError, match="already has a split column"):
        make_splits(yeast, bed=bed, val_contigs=[names[5]])


def test_three_column_bed_is_split_by_contig_ends(hg38, tmp_path):
    bed = tmp_path / "usable.bed"
    bed.write_text("chr2\t10000\t1000000\nchr2\t1200000\t2333275\n")
    intervals, labels = read_bed(bed, hg38)
    assert labels is None and intervals.total_length == 990000 + 1133275
    splits = make_splits(hg38, bed=bed)
    assert splits["train"].start.tolist() == [10000, 1200000]
    assert splits["train"].end.tolist() == [1000000, 2333275 - 2 * 116664]
    assert splits["val"].start.tolist() == [2333275 - 116664]


@pytest.mark.parametrize("line, problem", [
    ("chrZZ\t0\t100\ttrain", "names contig 'chrZZ', which is not in"),
    ("chr2\t2333000\t2333276\ttrain", "past the end of contig chr2"),
    ("chr2\t100\t50\ttrain", "empty or negative"),
    ("chr2\tten\t50\ttrain", "not integers"),
    ("chr2\t0\t50\tholdout", "is not train, valid/val or test"),
    ("chr2\t0", "expected `chrom start end"),
])
def test_bad_bed_is_one_line_user_error(hg38, tmp_path, line, problem):
    bed = tmp_path / "bad.bed"
    bed.write_text("chr2\t0\t1000\ttrain\n" + line + "\n")
    with pytest.raises(UserError, match=problem) as err:
        make_splits(hg38, bed=bed)
    assert "line 2" in str(err.value) and "\n" not in str(err.value)


def test_bad_split_options(yeast, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        make_splits(yeast, bed=tmp_path / "missing.bed")
    with pytest.raises(UserError, match="'chr99' is not in"):
        make_splits(yeast, val_contigs=["chr99"])
    with pytest.raises(UserError, match="both a validation and a test contig"):
        make_splits(yeast, val_contigs=[yeast.names[0]], test_contigs=[yeast.names[0]])
    with pytest.raises(UserError, match="training split is empty"):
        make_splits(yeast, val_contigs=yeast.names[:8], test_contigs=yeast.names[8:])


def test_parse_region(hg38):
    region = parse_region("chr2:10,001-10,100", hg38)
    assert (region.contig.tolist(), region.start.tolist(), region.end.tolist()) == ([0], [10000], [10100])
    whole = parse_region("chr2", hg38)
    assert (whole.start.tolist(), whole.end.tolist()) == ([0], [2333275])
    for bad, problem in [("chr2:100", "not `chr:start-end`"), ("chr2:200-100", "empty or outside"),
                         ("chr2:1-2333276", "empty or outside"), ("chr7:1-100", "'chr7' is not in")]:
        with pytest.raises(UserError, match=problem):
            parse_region(bad, hg38)


def test_standard_bed6_name_column_is_not_a_split(hg38, tmp_path):
    """BED4/BED6 name columns (name1, peak_7, ...) are names, not splits: the intervals split by contig ends."""
    bed = tmp_path / "peaks.bed"
    bed.write_text("chr2\t10000\t1000000\tname1\t0\t+\nchr2\t1200000\t2333275\tname2\t960\t-\n")
    intervals, labels = read_bed(bed, hg38)
    assert labels is None and intervals.start.tolist() == [10000, 1200000]
    three = tmp_path / "three.bed"
    three.write_text("chr2\t10000\t1000000\nchr2\t1200000\t2333275\n")
    assert {k: v.start.tolist() for k, v in make_splits(hg38, bed=bed).items()} == \
        {k: v.start.tolist() for k, v in make_splits(hg38, bed=three).items()}


def test_held_out_interval_overlapping_training_warns(hg38, tmp_path):
    from dnadiff.errors import LeakageWarning

    bed = tmp_path / "leaky.bed"
    bed.write_text("chr2\t0\t100000\ttrain\nchr2\t500000\t600000\ttrain\n"
                   "chr2\t99000\t120000\ttest\nchr2\t300000\t400000\tval\nchr2\t550000\t560000\tvalid\n")
    with pytest.warns(LeakageWarning, match=r"2 held-out interval\(s\) overlap training intervals "
                                            r"\(first: chr2:99000-120000 \(test\)\)"):
        read_bed(bed, hg38)
    disjoint = tmp_path / "disjoint.bed"
    disjoint.write_text("chr2\t0\t100000\ttrain\nchr2\t100000\t120000\ttest\n")  # half-open: touching is disjoint
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", LeakageWarning)
        read_bed(disjoint, hg38)
