"""Fine-tuning tables and the DHS table (issue 27): byte-order marks and CR-only line endings read, a row
missing a cell or a label beyond int64 refused in one line naming the file and the line, duplicated rows and
test rows shared with the train split warned about (leakage), stratification that cannot hold every class
falling back instead of scikit-learn's traceback, and the DHS reader refusing header-only tables, missing
cells and empty sequences before training."""
from __future__ import annotations

import gzip
import warnings

import numpy as np
import pytest

from dnadiff.data.dhs import CLASS_NAMES, load_dhs
from dnadiff.data.genomic_benchmarks import (LeakageWarning, Split, load_from_table, parse_labels, read_table,
                                             read_table_lines)
from dnadiff.errors import UserError

RNG = np.random.default_rng(0)
SEQS = ["".join(RNG.choice(list("ACGT"), size=40)) for _ in range(12)]


def table(rows, header="seq\tlabel", newline="\n") -> str:
    return newline.join([header] + rows) + newline


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR only"])
@pytest.mark.parametrize("bom", [False, True], ids=["", "BOM"])
def test_any_line_ending_and_a_byte_order_mark_read_the_same(tmp_path, newline, bom):
    rows = [f"{s}\t{i % 2}" for i, s in enumerate(SEQS)]
    path = tmp_path / "t.tsv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + table(rows, newline=newline).encode())
    seqs, labels, lines = read_table_lines(path)
    assert seqs == SEQS and labels == [str(i % 2) for i in range(12)] and lines == list(range(2, 14))
    gz = tmp_path / "t.tsv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert read_table(gz) == (seqs, labels)


def test_line_numbers_count_blank_lines(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text(f"seq\tlabel\n\n{SEQS[0]}\t0\n\n\n{SEQS[1]}\n")
    with pytest.raises(UserError, match=r"t.tsv line 6 has 1 column\(s\), no label"):
        read_table(path)


def test_labels_beyond_int64_and_mixed_labels_name_the_line():
    with pytest.raises(UserError, match=r"x.tsv line 4: label '9223372036854775808' is beyond the 64-bit"):
        parse_labels(["0", "1", str(2**63)], "x.tsv", [2, 3, 4])
    ids, names = parse_labels(["-3", str(2**63 - 1), "-3"], "x.tsv", [2, 3, 4])  # the int64 edge is fine
    assert ids.tolist() == [0, 1, 0] and names == ["-3", str(2**63 - 1)]
    with pytest.raises(UserError, match=r"x.tsv line 3: label 'b' is a name but other labels are integers"):
        parse_labels(["0", "b"], "x.tsv", [2, 3])


def test_duplicated_rows_and_test_rows_seen_in_training_are_warned_about(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text(table([f"{s}\t{i % 2}" for i, s in enumerate(SEQS)] + [f"{SEQS[3].lower()}\t0"]))
    test = tmp_path / "test.tsv"
    test.write_text(table([f"{SEQS[5]}\t1", f"{SEQS[0]}\t0"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_from_table("t", train, test)
    messages = [str(w.message) for w in caught if issubclass(w.category, LeakageWarning)]
    assert len(messages) == 2, messages
    assert "train.tsv: 1 row(s) repeat an earlier sequence (e.g. line 14 repeats line 5 with different labels)" in messages[0]
    assert "test.tsv: 2 test sequence(s) also occur in the train split (first: line 2)" in messages[1]
    assert len(data.train) == 13 and len(data.test) == 2  # a warning, not a refusal
    clean = tmp_path / "clean.tsv"
    clean.write_text(table([f"{s}\t{i % 2}" for i, s in enumerate(SEQS)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_from_table("t", clean)


def test_subsampling_more_classes_than_a_part_can_hold_falls_back_to_unstratified():
    from dnadiff.finetuning import subsample

    labels = np.repeat(np.arange(6), 5)  # 6 classes of 5: 28 of 30 leaves 2 < 6 for the other part
    split = Split([f"A{i}" for i in range(30)], labels)
    kept = subsample(split, 28, seed=0)
    assert len(kept) == 28 and len(set(kept.seqs)) == 28
    kept = subsample(split, 12, seed=0)  # both parts can hold every class: stratified, 2 of each
    assert np.bincount(kept.labels).tolist() == [2] * 6


def test_the_folds_hint_never_suggests_the_folds_already_given():
    from dnadiff.finetuning.cv import check_class_counts

    with pytest.raises(UserError) as err:
        check_class_counts(np.array([0, 0, 0, 1, 1, 1, 1]), 2, ["a", "b"])
    assert "lower --folds" not in str(err.value) and "at least 4 examples per class" in str(err.value)
    with pytest.raises(UserError, match="lower --folds to at most 2"):
        check_class_counts(np.array([0] * 4 + [1] * 10), 5, ["a", "b"])


# ------------------------------------------------------------------ the DHS table
HEADER = "dhs_id\tsequence\tTAG\tdata_label"


def dhs_rows(n=8, length=20):
    rng = np.random.default_rng(1)
    return [f"d{i}\t{''.join(rng.choice(list('ACGT'), size=length))}\t{CLASS_NAMES[i % 4]}_ENCLB{i}\t"
            f"{('training', 'validation')[i % 2]}" for i in range(n)]


def test_a_good_dhs_table_with_a_bom_and_cr_only_lines(tmp_path):
    path = tmp_path / "dhs.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "\r".join([HEADER] + dhs_rows()).encode() + b"\r")
    data = load_dhs(path)
    assert len(data.sequences) == 8 and data.labels.tolist() == [0, 1, 2, 3] * 2
    assert data.split.tolist() == ["training", "validation"] * 4


@pytest.mark.parametrize("rows, pattern", [
    ([], "has a header but no rows"),
    (dhs_rows()[:3] + ["d9\tACGT"], r"line 5 lacks the TAG, data_label cell"),
    (dhs_rows()[:2] + [f"d9\t\tK562_X\ttraining"], r"line 4: the sequence '' is empty"),
    (dhs_rows()[:2] + [f"d9\t{'ACGU' * 5}\tK562_X\ttraining"], r"line 4: the sequence 'ACGUACGU.*not DNA"),
    (dhs_rows()[:2] + dhs_rows(length=30)[2:3], r"line 4: the sequence has 30 bp but line 2's has 20"),
    (dhs_rows()[:2] + ["d9\t" + "A" * 20 + "\tMCF7_X\ttraining"], r"line 4: row d9 has cell type 'MCF7'"),
], ids=["header only", "missing cells", "empty sequence", "not DNA", "lengths differ", "cell type"])
def test_a_bad_dhs_table_is_one_line_naming_the_line(tmp_path, rows, pattern):
    path = tmp_path / "dhs.txt"
    path.write_text("\n".join([HEADER] + rows) + "\n")
    with pytest.raises(UserError, match=pattern) as err:
        load_dhs(path)
    assert "\n" not in str(err.value) and "dhs.txt" in str(err.value)


# ------------------------------------------------------------------ coordinates: leakage and the genome's checks
def _coords(root, rows_by_split):
    import csv

    for split, rows in rows_by_split.items():
        for cls in ("negative", "positive"):
            folder = root / "human_enhancers_cohn" / split
            folder.mkdir(parents=True, exist_ok=True)
            with gzip.open(folder / f"{cls}.csv.gz", "wt", newline="") as out:
                writer = csv.writer(out)
                writer.writerow(["id", "region", "start", "end", "strand"])
                writer.writerows((f"{cls}{r[0]}", *r[1:]) for r in rows)


def test_test_intervals_overlapping_training_are_warned_about_and_the_sequences_are_exact(tmp_path):
    from dnadiff.data.genomic_benchmarks import load_from_coordinates, warn_interval_overlap
    from dnadiff.rc import reverse_complement_str

    genome = "".join(np.random.default_rng(2).choice(list("ACGT"), size=600))
    (tmp_path / "g.fa").write_text(">c0\n" + "\n".join(genome[i:i + 60] for i in range(0, 600, 60)) + "\n")
    train = [("a", "c0", 0, 100, "+"), ("b", "c0", 300, 350, "-")]
    _coords(tmp_path / "ok", {"train": train, "test": [("t", "c0", 100, 200, "+"), ("u", "c0", 350, 400, "+")]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # touching ends (half-open) do not overlap
        data = load_from_coordinates("human_enhancers_cohn", tmp_path / "ok", tmp_path / "g.fa")
    assert data.train.seqs == [genome[0:100], reverse_complement_str(genome[300:350])] * 2
    assert data.test.seqs == [genome[100:200], genome[350:400]] * 2
    _coords(tmp_path / "leak", {"train": train, "test": [("t", "c0", 99, 200, "+"), ("u", "c0", 320, 330, "+")]})
    with pytest.warns(LeakageWarning, match=r"4 test interval\(s\) overlap training intervals \(first: negativet at c0:99-200\)"):
        load_from_coordinates("human_enhancers_cohn", tmp_path / "leak", tmp_path / "g.fa")
    # the interval test against brute force
    rng = np.random.default_rng(3)
    spans = [("x", "c0", int(s), int(s + w), "+") for s, w in zip(rng.integers(0, 1000, 40), rng.integers(1, 60, 40))]
    probes = [("y", "c0", int(s), int(s + w), "+") for s, w in zip(rng.integers(0, 1000, 200), rng.integers(1, 60, 200))]
    brute = sum(any(a < e and s < b for _, _, a, b, _ in spans) for _, _, s, e, _ in probes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert warn_interval_overlap(spans, probes, "w") == brute


def test_a_stale_index_is_refused_on_the_coordinates_route(tmp_path):
    from dnadiff.data.fasta import open_genome
    from dnadiff.data.genomic_benchmarks import load_from_coordinates

    (tmp_path / "g.fa").write_text(">c0\n" + "ACGT" * 100 + "\n")
    open_genome(tmp_path / "g.fa").close()
    fai = (tmp_path / "g.fa.fai").read_bytes()
    (tmp_path / "g.fa").write_text(">c0\n" + "GATTACA" * 60 + "\n")  # another genome under the old index
    (tmp_path / "g.fa.fai").write_bytes(fai)
    os_stat = (tmp_path / "g.fa").stat()
    import os
    os.utime(tmp_path / "g.fa.fai", ns=(os_stat.st_atime_ns, os_stat.st_mtime_ns + 10**9))  # the index looks newer
    _coords(tmp_path / "c", {"train": [("a", "c0", 0, 100, "+"), ("b", "c0", 100, 200, "+")]})
    with pytest.raises(UserError, match=r"g.fa"):
        load_from_coordinates("human_enhancers_cohn", tmp_path / "c", tmp_path / "g.fa")


# ------------------------------------------------------------------ what is there when it is not a file
@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_a_fifo_a_device_or_a_folder_is_named_not_called_missing(tmp_path, kind):
    import os

    from dnadiff.data.fasta import open_genome
    from dnadiff.checkpoints.format import load_checkpoint

    path = tmp_path / "thing"
    if kind == "fifo":
        os.mkfifo(path)  # opening it would block: it must be refused before
        expected = "is a FIFO (named pipe), not a file"
    elif kind == "device":
        path = "/dev/zero"  # reading it never ends
        expected = "is a character device, not a file"
    else:
        path.mkdir()
        expected = "is a folder, not a file"
    for call in (load_checkpoint, open_genome, read_table, load_dhs):
        with pytest.raises(UserError) as err:
            call(path)
        message = str(err.value)
        assert expected in message and "does not exist" not in message and "\n" not in message, (call, message)


def test_crlf_fasta_opens_and_cr_only_is_named(tmp_path):
    from dnadiff.data.fasta import open_genome

    text = ">c0\nACGTACGTAA\nCCGG\n>c1\nTTTT\n"
    (tmp_path / "crlf.fa").write_bytes(text.replace("\n", "\r\n").encode())
    genome = open_genome(tmp_path / "crlf.fa")
    assert genome.names == ["c0", "c1"] and genome.lengths.tolist() == [14, 4]
    assert genome.fetch_bytes("c0", 8, 12) == b"AACC"
    genome.close()
    (tmp_path / "cr.fa").write_bytes(text.replace("\n", "\r").encode())
    for _ in range(2):  # the same advice the second time: no index was built to blame
        with pytest.raises(UserError, match="CR-only line endings"):
            open_genome(tmp_path / "cr.fa")
    assert not (tmp_path / "cr.fa.fai").exists()
