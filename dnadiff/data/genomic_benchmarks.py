"""Genomic Benchmarks (Grešová et al. 2023) classification data, from three offline sources.

1. the ``genomic-benchmarks`` package cache: ``<cache>/<task>/{train,test}/<class>/*.txt``
   (what its ``download_dataset`` writes; downloaded only when asked with ``download=True``);
2. the benchmark's coordinate files ``<task>/{train,test}/<class>.csv.gz``
   (``id,region,start,end,strand``: 0-based start, end exclusive, reverse complement on ``-``)
   cut from a local reference FASTA with pyfaidx;
3. a TSV/CSV table with a sequence column and a label column (integers or class names).

Class names and their number always come from the data; class ids are the class names in
sorted order (integer labels sort numerically).
"""
from __future__ import annotations

import csv
import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnadiff.errors import LeakageWarning, UserError
from dnadiff.paths import kind_of, open_text, require_file
from dnadiff.rc import reverse_complement_str
from dnadiff.data.fasta import Genome, open_genome

#: the 9 tasks: the 8 of the Caduceus / MDLM tables plus drosophila_enhancers_stark.
TASKS = (
    "dummy_mouse_enhancers_ensembl",
    "demo_coding_vs_intergenomic_seqs",
    "demo_human_or_worm",
    "human_enhancers_cohn",
    "human_enhancers_ensembl",
    "human_ensembl_regulatory",
    "human_nontata_promoters",
    "human_ocr_ensembl",
    "drosophila_enhancers_stark",
)
#: short names accepted for a task, with the note shown when one is used.
ALIASES = {
    "human_enhancers": (
        "human_enhancers_cohn",
        "'human_enhancers' means human_enhancers_cohn (the Caduceus/MDLM table task); "
        "the other human enhancer task is human_enhancers_ensembl",
    ),
}
SPLITS = ("train", "test")
_INTEGER = re.compile(r"^[+-]?\d+$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
_SEQ_COLUMNS = ("seq", "sequence", "sequences", "dna")
_LABEL_COLUMNS = ("label", "labels", "class", "target", "y")


@dataclass
class Split:
    """One split: ``seqs`` (N strings) and ``labels`` (int64[N], class ids)."""

    seqs: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.seqs)

    def subset(self, index: np.ndarray) -> "Split":
        """The examples at ``index`` (int[M]) as a new Split."""
        return Split([self.seqs[i] for i in index], self.labels[index])


@dataclass
class TaskData:
    """A task's examples: ``train`` always, ``test`` when the source has an official test split."""

    task: str
    class_names: list[str]
    train: Split
    test: Split | None
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def resolve_task(name: str) -> tuple[str, str | None]:
    """Canonical task name and a note when an alias was used; UserError listing the tasks otherwise."""
    if name in TASKS:
        return name, None
    if name in ALIASES:
        return ALIASES[name]
    valid = ", ".join(TASKS + tuple(ALIASES))
    raise UserError(f"unknown Genomic Benchmarks task {name!r}: use one of {valid}")


# ---------------------------------------------------------------- source 1: package cache
def package_cache_dir() -> Path:
    """The genomic-benchmarks package's own cache folder (``~/.genomic_benchmarks``)."""
    from genomic_benchmarks.utils.paths import CACHE_PATH

    return Path(CACHE_PATH)


def load_from_cache(task: str, cache_dir: str | Path | None = None, download: bool = False) -> TaskData:
    """Read ``<cache>/<task>/{train,test}/<class>/*.txt`` (files in name order within a class).

    With ``download=True`` a missing task is first fetched with the package's
    ``download_dataset`` (needs the network); otherwise a missing task is a UserError.
    """
    cache = Path(cache_dir) if cache_dir is not None else package_cache_dir()
    root = cache / task
    if not (root / "train").is_dir():
        if not download:
            raise UserError(
                f"{task} is not in the genomic-benchmarks cache {cache}: pass --download on a networked "
                "machine, or give --data FILE.tsv or --genome FASTA --coordinates DIR"
            )
        from genomic_benchmarks.loc2seq import download_dataset

        cache.mkdir(parents=True, exist_ok=True)
        try:
            download_dataset(task, dest_path=cache)
        except Exception as err:  # network and package errors: tell the user the offline routes
            raise UserError(f"downloading {task} failed ({err}): use an offline source (--data or --coordinates)") from err
    class_names = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not class_names:
        raise UserError(f"{root / 'train'} holds no class folders: re-download the task with --download")
    splits = {}
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        seqs, labels = [], []
        for class_id, name in enumerate(class_names):
            for path in sorted((root / split / name).glob("*.txt"), key=_natural_key):
                seqs.append(path.read_text().strip())
                labels.append(class_id)
        splits[split] = _checked_split(seqs, labels, f"{root / split}")
    return TaskData(task, class_names, splits["train"], splits.get("test"), source=f"cache:{root}")


def _natural_key(path: Path):
    stem = path.stem
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


# ---------------------------------------------------------------- source 2: coordinates + FASTA
def read_coordinates(path: str | Path) -> list[tuple[str, str, int, int, str]]:
    """Rows ``(id, region, start, end, strand)`` of one ``<class>.csv.gz`` (empty strand means ``+``)."""
    path = Path(path)
    rows = []
    try:
        with open_text(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"id", "region", "start", "end"} - set(reader.fieldnames or ())
            if missing:
                raise UserError(f"{path} lacks the columns {sorted(missing)}: expected id,region,start,end,strand")
            for row in reader:
                where = f"{path} line {reader.line_num}"
                lacking = [c for c in ("id", "region", "start", "end") if not (row.get(c) or "").strip()]
                if lacking:
                    raise UserError(f"{where} lacks the {', '.join(lacking)} cell: fill it in or remove the line")
                try:
                    start, end = int(row["start"]), int(row["end"])
                except ValueError:
                    raise UserError(f"{where}: start {row['start']!r} / end {row['end']!r} are not integers: fix the "
                                    "coordinate file") from None
                rows.append((row["id"], row["region"], start, end, (row.get("strand") or "+").strip() or "+"))
    except (OSError, ValueError, EOFError, gzip.BadGzipFile, csv.Error) as err:
        raise UserError(f"cannot read coordinates {path} ({err}): give the benchmark's <class>.csv.gz files") from err
    return rows


def rebuild_sequences(fasta, rows: list[tuple[str, str, int, int, str]], where: str = "") -> list[str]:
    """Cut each row's ``[start, end)`` from ``fasta`` (a :class:`dnadiff.data.fasta.Genome` from ``open_genome``,
    or a pyfaidx.Fasta), reverse-complemented on ``-``.

    A region missing from the reference (also tried with/without a ``chr`` prefix) or an
    interval outside its contig is a UserError. Returns upper-case strings.
    """

    if isinstance(fasta, Genome):
        names = set(fasta.names)
        length_of = lambda contig: int(fasta.lengths[fasta.contig_index(contig)])  # noqa: E731
        cut = lambda contig, start, end: fasta.fetch_bytes(contig, start, end).decode("ascii")  # noqa: E731
    else:
        names = set(fasta.keys())
        length_of = lambda contig: len(fasta[contig])  # noqa: E731
        cut = lambda contig, start, end: str(fasta[contig][start:end])  # noqa: E731
    seqs = []
    for ident, region, start, end, strand in rows:
        contig = _match_contig(region, names)
        if contig is None:
            raise UserError(
                f"{where}example {ident}: region {region!r} is not in the reference (it has {_few(names)}): "
                "give the genome the coordinates were made on (hg38 for the human tasks)"
            )
        length = length_of(contig)
        if not 0 <= start < end <= length:
            raise UserError(
                f"{where}example {ident}: {region}:{start}-{end} lies outside the reference contig {contig} "
                f"(length {length}): give the full genome the coordinates were made on"
            )
        seq = cut(contig, start, end).upper()
        if strand == "-":
            seq = reverse_complement_str(seq)
        elif strand != "+":
            raise UserError(f"{where}example {ident}: strand {strand!r} is not '+' or '-': fix the coordinate file")
        seqs.append(seq)
    return seqs


def warn_interval_overlap(train: list[tuple], test: list[tuple], where: str) -> int:
    """Warn (:class:`LeakageWarning`) when test intervals overlap train intervals (rows ``(id, region, start, end,
    strand)``, half-open): the overlapping bases are seen in training. Returns the number of such test rows."""
    import bisect
    import warnings

    grouped: dict[str, list[tuple[int, int]]] = {}
    for row in train:
        grouped.setdefault(row[1], []).append((row[2], row[3]))
    by_region: dict[str, tuple[list[int], list[int]]] = {}
    for region, spans in grouped.items():
        spans.sort()
        ends, best = [], 0
        for _, end in spans:  # running maximum of the ends: any earlier interval reaching past a start
            best = max(best, end)
            ends.append(best)
        by_region[region] = ([a for a, _ in spans], ends)
    hits = []
    for row in test:
        starts, ends = by_region.get(row[1], ([], []))
        k = bisect.bisect_left(starts, row[3])  # train intervals starting before the test interval ends
        if k and ends[k - 1] > row[2]:
            hits.append(row)
    if hits:
        ident, region, start, end, _ = hits[0]
        warnings.warn(f"{where}: {len(hits)} test interval(s) overlap training intervals (first: {ident} at "
                      f"{region}:{start}-{end}): those bases are seen in training and the test score overstates "
                      "generalisation; use coordinates with disjoint splits", LeakageWarning, stacklevel=2)
    return len(hits)


def _match_contig(region: str, names: set[str]) -> str | None:
    for candidate in (region, "chr" + region, region[3:] if region.startswith("chr") else None):
        if candidate and candidate in names:
            return candidate
    return None


def _few(names: set[str]) -> str:
    shown = sorted(names)[:5]
    return ", ".join(shown) + (", ..." if len(names) > 5 else "")


def load_from_coordinates(task: str, coordinates: str | Path, genome: str | Path) -> TaskData:
    """Rebuild a task from ``<coordinates>[/<task>]/{train,test}/<class>.csv.gz`` and a reference FASTA."""
    root = Path(coordinates)
    if (root / task / "train").is_dir():
        root = root / task
    if not (root / "train").is_dir():
        raise UserError(f"no {task}/train folder under {coordinates}: give the benchmark's coordinates folder")


    genome = require_file(genome, "reference FASTA", "give a local genome with --genome")
    class_names = sorted(p.name[: -len(".csv.gz")] for p in (root / "train").glob("*.csv.gz"))
    if not class_names:
        raise UserError(f"{root / 'train'} holds no <class>.csv.gz files: give the benchmark's coordinates folder")
    # the checks of every other command: plain gzip, truncated bgzip, a stale or foreign .fai (issue 27)
    fasta = open_genome(genome)
    splits, intervals = {}, {}
    try:
        for split in SPLITS:
            if not (root / split).is_dir():
                continue
            seqs, labels, rows_of_split = [], [], []
            for class_id, name in enumerate(class_names):
                path = root / split / f"{name}.csv.gz"
                if not path.is_file():
                    continue
                rows = read_coordinates(path)
                seqs += rebuild_sequences(fasta, rows, where=f"{task}/{split}/{name}: ")
                labels += [class_id] * len(rows)
                rows_of_split += rows
            splits[split] = _checked_split(seqs, labels, f"{root / split}")
            intervals[split] = rows_of_split
    finally:
        fasta.close()
    if "test" in intervals:
        warn_interval_overlap(intervals["train"], intervals["test"], f"{root}")
    return TaskData(task, class_names, splits["train"], splits.get("test"), source=f"coordinates:{root}+{genome}")


# ---------------------------------------------------------------- source 3: TSV / CSV table
#: the largest integer label (class ids are int64)
_INT64_MAX = 2**63 - 1


def read_table(path: str | Path) -> tuple[list[str], list[str]]:
    """Sequence and raw label strings of a TSV/CSV (tab, comma or semicolon; header optional).

    The header names the columns (``seq``/``sequence`` and ``label``/``class``); without a
    header the first column is the sequence and the second the label. See :func:`read_table_lines`.
    """
    seqs, labels, _ = read_table_lines(path)
    return seqs, labels


def read_table_lines(path: str | Path) -> tuple[list[str], list[str], list[int]]:
    """(sequences, raw labels, the 1-based line number of each) of a TSV/CSV table.

    Reads UTF-8 with or without a byte-order mark, and any line ending (LF, CRLF, CR only). UserError (one line
    naming the file, the line and the fix) for an unreadable or empty file, a header without sequence/label
    columns, a header without rows, or a row lacking the sequence or label cell.
    """

    path = Path(path)
    if kind_of(path) not in ("a regular file", "missing"):  # a FIFO would block, /dev/zero never end
        raise UserError(f"sequence file {path} is {kind_of(path)}, not a file: give a TSV/CSV with sequence and "
                        "label columns")
    try:
        with open_text(path, newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as err:
        raise UserError(f"cannot read sequence file {path} ({err}): give a TSV/CSV with sequence and label columns") from err
    numbered = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not numbered:
        raise UserError(f"sequence file {path} is empty: give a TSV/CSV with sequence and label columns")
    first = numbered[0][1]
    delimiter = max("\t,;", key=first.count)
    rows = list(csv.reader([line for _, line in numbered], delimiter=delimiter))
    header = [cell.strip().lower() for cell in rows[0]]
    seq_col = next((header.index(c) for c in _SEQ_COLUMNS if c in header), None)
    label_col = next((header.index(c) for c in _LABEL_COLUMNS if c in header), None)
    if seq_col is None and label_col is None and len(header) >= 2 and set(header[0].upper()) <= set("ACGTN"):
        seq_col, label_col, start = 0, 1, 0  # headerless
    elif seq_col is None or label_col is None:
        raise UserError(
            f"{path}: no sequence/label columns in the header {rows[0]}: name them 'seq' and 'label'"
        )
    else:
        start = 1
    if len(rows) <= start:
        raise UserError(f"sequence file {path} has a header but no examples: add rows of sequence and label")
    seqs, labels, lines = [], [], []
    for (number, _), row in zip(numbered[start:], rows[start:]):
        if len(row) <= max(seq_col, label_col):
            missing = "label" if len(row) > seq_col else "sequence"
            raise UserError(f"{path} line {number} has {len(row)} column(s), no {missing} (column "
                            f"{max(seq_col, label_col) + 1} expected): fill in the missing cell or remove the line")
        seqs.append(row[seq_col].strip())
        labels.append(row[label_col].strip())
        lines.append(number)
    return seqs, labels, lines


def parse_labels(raw: list[str], where: str, lines: list[int] | None = None) -> tuple[np.ndarray, list[str]]:
    """Class ids int64[N] and class names from label strings: all integers, or all names.

    Integer labels keep their numeric order (names ``"0"``, ``"1"``, ...); names sort
    alphabetically. Anything else (floats, blanks, a mix, integers beyond int64) is a UserError naming
    the line (``lines``: the 1-based line number of each label, from :func:`read_table_lines`).
    """
    def at(i: int) -> str:
        return f"{where} line {lines[i]}" if lines is not None else where

    if all(_INTEGER.match(v) for v in raw):
        values = [int(v) for v in raw]
        huge = next((i for i, v in enumerate(values) if abs(v) > _INT64_MAX), None)
        if huge is not None:
            raise UserError(f"{at(huge)}: label {raw[huge][:30]!r} is beyond the 64-bit range of class ids: use small "
                            "integers (0, 1, ...) or class names (negative, positive)")
        values = np.array(values, dtype=np.int64)
        uniques = np.unique(values)
        return np.searchsorted(uniques, values).astype(np.int64), [str(u) for u in uniques]
    if all(_NAME.match(v) for v in raw):
        names = sorted(set(raw))
        lookup = {name: i for i, name in enumerate(names)}
        return np.array([lookup[v] for v in raw], dtype=np.int64), names
    bad = next((i for i, v in enumerate(raw) if not (_INTEGER.match(v) or _NAME.match(v))), None)
    if bad is not None:
        problem = (f"label {raw[bad]!r} is neither an integer class id nor a class name" if raw[bad]
                   else "the label cell is empty ('' is neither a class id nor a name)")
        raise UserError(f"{at(bad)}: {problem}: use integers (0, 1, ...) or names (negative, positive) throughout")
    first_name = next(i for i, v in enumerate(raw) if not _INTEGER.match(v))
    raise UserError(f"{at(first_name)}: label {raw[first_name]!r} is a name but other labels are integers (labels mix integers and class names): use "
                    "integers (0, 1, ...) or names (negative, positive) throughout")


def warn_duplicates(seqs: list[str], where: str, lines: list[int] | None = None,
                    labels: list | None = None) -> int:
    """Warn (:class:`LeakageWarning`) when a sequence occurs more than once in a table (a repeat lands in both the
    training and the held-out part of a fold); says when the copies disagree on the label. Returns the number
    of repeated rows."""
    import warnings

    first: dict[str, int] = {}
    repeats, conflict = [], None
    for i, seq in enumerate(seqs):
        key = seq.upper()
        if key in first:
            repeats.append((first[key], i))
            if labels is not None and conflict is None and labels[first[key]] != labels[i]:
                conflict = (first[key], i)
        else:
            first[key] = i
    if repeats:
        a, b = conflict or repeats[0]
        line = (lambda i: f"line {lines[i]}") if lines is not None else (lambda i: f"example {i}")
        extra = " with different labels" if conflict else ""
        warnings.warn(f"{where}: {len(repeats)} row(s) repeat an earlier sequence (e.g. {line(b)} repeats {line(a)}"
                      f"{extra}): repeats fall on both sides of a fold split and inflate the scores; remove "
                      "duplicates", LeakageWarning, stacklevel=2)
    return len(repeats)


def warn_test_overlap(train: list[str], test: list[str], where: str, lines: list[int] | None = None) -> int:
    """Warn (:class:`LeakageWarning`) when test sequences also occur in the train split. Returns their number."""
    import warnings

    seen = {s.upper() for s in train}
    shared = [i for i, s in enumerate(test) if s.upper() in seen]
    if shared:
        line = f"line {lines[shared[0]]}" if lines is not None else f"example {shared[0]}"
        warnings.warn(f"{where}: {len(shared)} test sequence(s) also occur in the train split (first: {line}): the "
                      "test score then measures memorisation; remove them from one of the two", LeakageWarning,
                      stacklevel=2)
    return len(shared)


def load_from_table(task: str, path: str | Path, test_path: str | Path | None = None) -> TaskData:
    """A task from a sequence/label table (the train split) and optionally a test table."""
    seqs, raw, lines = read_table_lines(path)
    labels, class_names = parse_labels(raw, str(path), lines)
    train = _checked_split(seqs, labels.tolist(), str(path), lines)
    warn_duplicates(seqs, str(path), lines, raw)
    test = None
    if test_path is not None:
        test_seqs, test_raw, test_lines = read_table_lines(test_path)
        unknown = sorted(set(test_raw) - set(raw))
        if unknown:
            bad = test_raw.index(unknown[0])
            raise UserError(f"{test_path} line {test_lines[bad]}: labels {unknown[:5]} do not occur in {path}: give "
                            "test labels of the same classes")
        lookup = {v: int(i) for v, i in zip(raw, labels)}
        test = _checked_split(test_seqs, [lookup[v] for v in test_raw], str(test_path), test_lines)
        warn_duplicates(test_seqs, str(test_path), test_lines, test_raw)
        warn_test_overlap(seqs, test_seqs, str(test_path), test_lines)
    return TaskData(task, class_names, train, test, source=f"table:{path}")


def _checked_split(seqs: list[str], labels: list[int], where: str, lines: list[int] | None = None) -> Split:
    def at(i: int) -> str:
        return f"{where} line {lines[i]}" if lines is not None else f"{where}: example {i}"

    if not seqs:
        raise UserError(f"{where} holds no examples: give a non-empty split")
    empty = next((i for i, s in enumerate(seqs) if not s), None)
    if empty is not None:
        raise UserError(f"{at(empty)} has an empty sequence: remove it or fix the file")
    bad = next((i for i, s in enumerate(seqs) if set(s.upper()) - set("ACGTNRYKMSWBDHV")), None)
    if bad is not None:
        raise UserError(f"{at(bad)}: sequence {seqs[bad][:30]!r} is not DNA: give sequences over A, C, G, T (N allowed)")
    return Split(seqs, np.asarray(labels, dtype=np.int64))


# ---------------------------------------------------------------- one entry point
def load_task(
    task: str,
    data: str | Path | None = None,
    test_data: str | Path | None = None,
    genome: str | Path | None = None,
    coordinates: str | Path | None = None,
    cache: str | Path | None = None,
    download: bool = False,
) -> TaskData:
    """Load ``task`` (canonical name) from the one source the arguments name.

    ``data`` -> table (source 3); ``genome`` + ``coordinates`` -> coordinates (source 2);
    otherwise the package cache (source 1, ``cache`` or the package default).
    """
    if data is not None:
        if genome is not None or coordinates is not None:
            raise UserError("give either --data or --genome/--coordinates, not both")
        return load_from_table(task, data, test_data)
    if genome is not None or coordinates is not None:
        if genome is None or coordinates is None:
            raise UserError("the coordinate source needs both --genome FASTA and --coordinates DIR")
        return load_from_coordinates(task, coordinates, genome)
    return load_from_cache(task, cache, download=download)
