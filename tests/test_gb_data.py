"""Genomic Benchmarks data: task names, and the three offline sources on real sequences."""
from __future__ import annotations

import csv
import gzip
from collections import defaultdict

import numpy as np
import pytest

from dnadiff.data import genomic_benchmarks as gb
from dnadiff.errors import UserError


def test_nine_tasks_and_alias_note():
    assert len(gb.TASKS) == 9 and "drosophila_enhancers_stark" in gb.TASKS
    name, note = gb.resolve_task("human_enhancers")
    assert name == "human_enhancers_cohn" and "human_enhancers_ensembl" in note
    assert gb.resolve_task("human_nontata_promoters") == ("human_nontata_promoters", None)


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(UserError) as err:
        gb.resolve_task("human_enhancer_cohn")
    message = str(err.value)
    assert "\n" not in message and all(task in message for task in gb.TASKS)


# ------------------------------------------------------------------ source 3: tables
@pytest.mark.parametrize("task,n,per_class,length", [
    ("human_enhancers_cohn", 6948, [3474, 3474], 500),
    ("human_nontata_promoters", 9034, [4119, 4915], 251),
])
def test_real_test_split_tables(shared_data, task, n, per_class, length):
    data = gb.load_task(task, data=shared_data / "genomic_benchmarks" / f"{task}.test.tsv")
    assert data.class_names == ["0", "1"] and data.num_classes == 2 and data.test is None
    assert len(data.train) == n and np.bincount(data.train.labels).tolist() == per_class
    assert {len(s) for s in data.train.seqs} == {length}


def test_table_with_class_names_csv(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("sequence,class\nACGT,promoter\nGGCC,enhancer\nTTAA,ocr\nACGA,promoter\n")
    data = gb.load_task("human_ensembl_regulatory", data=path)
    assert data.class_names == ["enhancer", "ocr", "promoter"]
    assert data.train.labels.tolist() == [2, 0, 1, 2] and data.train.seqs[1] == "GGCC"


def test_integer_labels_keep_numeric_order(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("seq\tlabel\nAC\t10\nGT\t2\nAA\t2\n")
    labels, names = gb.parse_labels(["10", "2", "2"], "x")
    assert names == ["2", "10"] and labels.tolist() == [1, 0, 0]
    assert gb.load_task("human_enhancers_cohn", data=path).train.labels.tolist() == [1, 0, 0]


@pytest.mark.parametrize("content,fragment", [
    ("", "is empty"),
    ("seq\tlabel\n", "no examples"),
    ("seq\tlabel\nACGT\t0.5\nACGT\t1\n", "'0.5' is neither"),
    ("seq\tlabel\nACGT\t0\nACGT\tpositive\n", "mix integers and class names"),
    ("seq\tlabel\nACGT\t\nACGT\t1\n", "'' is neither"),
    ("foo\tbar\nACGT\t1\n", "no sequence/label columns"),
    ("seq\tlabel\nHELLO WORLD\t1\n", "not DNA"),
])
def test_bad_tables_are_user_errors(tmp_path, content, fragment):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        gb.load_task("human_enhancers_cohn", data=path)


def test_unreadable_tables_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        gb.load_task("human_enhancers_cohn", data=tmp_path / "missing.tsv")
    binary = tmp_path / "binary.tsv"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UserError, match="cannot read"):
        gb.load_task("human_enhancers_cohn", data=binary)


# ------------------------------------------------------------------ source 2: coordinates + FASTA
def _published_examples(shared_data):
    """{(task, split, class): [(id, region, start, end, strand, seq), ...]} of the 643 real examples."""
    groups = defaultdict(list)
    with open(shared_data / "genomic_benchmarks" / "gb_examples_in_hg38_chr2_1-2333275.tsv") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            groups[row["dataset"], row["split"], row["class"]].append(
                (row["id"], row["region"], int(row["start"]), int(row["end"]), row["strand"], row["seq"]))
    return groups


def _write_coordinates(root, rows_by_class):
    for (split, name), rows in rows_by_class.items():
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        with gzip.open(folder / f"{name}.csv.gz", "wt", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["id", "region", "start", "end", "strand"])
            writer.writerows(row[:5] for row in rows)


def test_coordinates_rebuild_equals_published_sequences(shared_data, tmp_path):
    genome = shared_data / "hg38" / "hg38_chr2_1-2333275.fa.gz"
    groups = _published_examples(shared_data)
    assert sum(len(v) for v in groups.values()) == 643
    assert sum(r[4] == "-" for v in groups.values() for r in v) > 0  # reverse strand is exercised
    tasks = sorted({task for task, _, _ in groups})
    checked = 0
    for task in tasks:
        by_class = {(split, name): rows for (t, split, name), rows in groups.items() if t == task}
        if not any(split == "train" for split, _ in by_class):
            continue
        _write_coordinates(tmp_path / task, by_class)
        data = gb.load_task(task, genome=genome, coordinates=tmp_path)
        names = sorted({name for split, name in by_class if split == "train"})
        assert data.class_names == names
        for split_name, split in (("train", data.train), ("test", data.test)):
            expected = [(r[5], names.index(name)) for name in names for r in by_class.get((split_name, name), [])]
            if split is None:
                assert not expected
                continue
            assert list(zip(split.seqs, split.labels.tolist())) == expected
            checked += len(expected)
    assert checked >= 600


def _one_row_task(tmp_path, row):
    _write_coordinates(tmp_path / "human_enhancers_cohn", {("train", "positive"): [row]})
    return tmp_path


@pytest.mark.parametrize("row,fragment", [
    (("a", "chr2", 2333000, 2333500, "+"), "outside the reference"),
    (("b", "chr2", -5, 10, "+"), "outside the reference"),
    (("c", "chr5", 100, 200, "+"), "region 'chr5' is not in the reference"),
])
def test_coordinates_outside_reference(shared_data, tmp_path, row, fragment):
    genome = shared_data / "hg38" / "hg38_chr2_1-2333275.fa.gz"
    with pytest.raises(UserError, match=fragment):
        gb.load_task("human_enhancers_cohn", genome=genome, coordinates=_one_row_task(tmp_path, row))


def test_reverse_strand_is_reverse_complement(shared_data, tmp_path):
    import pyfaidx

    genome = shared_data / "hg38" / "hg38_chr2_1-2333275.fa.gz"
    with pyfaidx.Fasta(str(genome)) as fasta:
        plus, minus = gb.rebuild_sequences(fasta, [("p", "chr2", 100000, 100012, "+"), ("m", "chr2", 100000, 100012, "-")])
        raw = str(fasta["chr2"][100000:100012]).upper()
    assert plus == raw and minus == raw[::-1].translate(str.maketrans("ACGTN", "TGCAN"))


# ------------------------------------------------------------------ source 1: package cache layout
def test_package_cache_layout(shared_data, tmp_path):
    table = gb.load_task("human_nontata_promoters", data=shared_data / "genomic_benchmarks" / "human_nontata_promoters.test.tsv")
    names = {0: "negative", 1: "positive"}
    written = defaultdict(list)
    for split, offset in (("train", 0), ("test", 4000)):
        for i in range(offset, offset + 40):
            j = i if i % 2 else len(table.train) - 1 - i  # both classes
            label = names[int(table.train.labels[j])]
            folder = tmp_path / "human_nontata_promoters" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{len(written[split, label])}.txt").write_text(table.train.seqs[j])
            written[split, label].append(table.train.seqs[j])
    data = gb.load_task("human_nontata_promoters", cache=tmp_path)
    assert data.class_names == ["negative", "positive"] and data.source.startswith("cache:")
    for split_name, split in (("train", data.train), ("test", data.test)):
        expected = written[split_name, "negative"] + written[split_name, "positive"]
        assert split.seqs == expected
        assert split.labels.tolist() == [0] * len(written[split_name, "negative"]) + [1] * len(written[split_name, "positive"])


def test_missing_cache_asks_for_download(tmp_path):
    with pytest.raises(UserError, match="--download"):
        gb.load_task("human_enhancers_cohn", cache=tmp_path)


def test_default_cache_is_the_packages():
    from genomic_benchmarks.utils.paths import CACHE_PATH

    assert gb.package_cache_dir() == CACHE_PATH
