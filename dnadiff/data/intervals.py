"""Usable genome intervals and their train/val/test splits.

Sources of splits, in order:

1. A BED file ``chrom start end split`` (0-based, end exclusive; ``split`` one of train, valid/val,
   test), the format of the Basenji/HyenaDNA ``human-sequences.bed`` that Caduceus uses.
2. A BED file with only ``chrom start end``: those intervals are the usable genome, split as in 3/4.
3. Held-out contigs (``val_contigs``, ``test_contigs``): every interval on them goes to that split.
4. Otherwise held-out ranges at the contig ends, for a one-contig genome as for several: on each contig
   of length n, the last ``round(holdout_frac * n)`` bp are val, the same amount just before them is
   test, and the rest ``[0, n - 2 * round(holdout_frac * n))`` is train.

Regions are written ``chr:start-end`` (1-based, inclusive, commas allowed, like samtools) or ``chr``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from dnadiff.data.fasta import Genome
from dnadiff.errors import LeakageWarning, UserError

SPLITS = ("train", "val", "test")
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                "validation": "val", "test": "test"}
DEFAULT_HOLDOUT_FRAC = 0.05


@dataclass(frozen=True)
class Intervals:
    """A set of half-open intervals ``[start, end)`` on contigs (indices into ``Genome.names``).

    Attributes:
        contig, start, end: int64 arrays [n].
    """

    contig: np.ndarray
    start: np.ndarray
    end: np.ndarray

    @staticmethod
    def build(contig: Iterable[int], start: Iterable[int], end: Iterable[int]) -> "Intervals":
        """Intervals from three sequences of ints, empty intervals dropped."""
        c, s, e = (np.asarray(list(v), dtype=np.int64).reshape(-1) for v in (contig, start, end))
        keep = e > s
        return Intervals(c[keep], s[keep], e[keep])

    def __len__(self) -> int:
        return len(self.contig)

    @property
    def lengths(self) -> np.ndarray:
        """int64 [n]: length of each interval."""
        return self.end - self.start

    @property
    def total_length(self) -> int:
        """Total bp covered."""
        return int(self.lengths.sum())

    def select(self, keep: np.ndarray) -> "Intervals":
        """The intervals where the bool array ``keep`` [n] is True."""
        return Intervals(self.contig[keep], self.start[keep], self.end[keep])

    def clip(self, lo: np.ndarray, hi: np.ndarray) -> "Intervals":
        """Intersect each interval with ``[lo[contig], hi[contig])`` (per-contig bounds, int64 [num_contigs])."""
        return Intervals.build(self.contig, np.maximum(self.start, lo[self.contig]),
                               np.minimum(self.end, hi[self.contig]))


def whole_genome(genome: Genome) -> Intervals:
    """One interval per contig covering it entirely."""
    n = len(genome)
    return Intervals.build(range(n), np.zeros(n, dtype=np.int64), genome.lengths)


def read_bed(path: str | os.PathLike, genome: Genome) -> tuple[Intervals, list[str] | None]:
    """Read a BED file of usable intervals, with an optional 4th ``split`` column.

    Returns:
        (intervals, splits): splits is a list of "train"/"val"/"test" per interval, or None when
        the file has only three columns.
    Raises:
        UserError: missing file, malformed line, contig absent from the FASTA, interval past a
        contig's end, unknown split name, mixed 3- and 4-column lines.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"BED file {path} does not exist: check the path")
    contigs, starts, ends, fourth = [], [], [], []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise UserError(f"BED file {path} is not a text file: give a BED file (chrom start end [split])") from None
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith(("#", "track", "browser")):
            continue
        where = f"{path.name} line {number}"
        if len(fields) < 3:
            raise UserError(f"{where} has {len(fields)} columns, expected `chrom start end [split]`: fix the BED")
        try:
            start, end = int(fields[1]), int(fields[2])
        except ValueError:
            raise UserError(f"{where}: start/end {fields[1]!r} {fields[2]!r} are not integers: fix the BED") from None
        name = fields[0]
        if name not in genome.names:
            raise UserError(f"{where} names contig {name!r}, which is not in {genome.path.name}: "
                            f"use a BED made for this genome")
        contig = genome.contig_index(name)
        length = int(genome.lengths[contig])
        if not 0 <= start < end:
            raise UserError(f"{where}: interval {name}:{start}-{end} is empty or negative: fix the BED")
        if end > length:
            raise UserError(f"{where}: interval {name}:{start}-{end} is past the end of contig {name} "
                            f"(length {length}): use a BED made for this genome")
        fourth.append((where, fields[3] if len(fields) >= 4 else None))
        contigs.append(contig)
        starts.append(start)
        ends.append(end)
    if not contigs:
        raise UserError(f"BED file {path} has no intervals: check the file")
    splits = _split_column(path, fourth)
    intervals = Intervals.build(contigs, starts, ends)
    if splits is not None:
        _warn_split_overlap(path, genome, contigs, starts, ends, splits)
    return intervals, splits


def _split_column(path: Path, fourth: list[tuple[str, str | None]]) -> list[str] | None:
    """The split of each interval from the 4th column, or None: a column of split names is a split column; a
    column of other values is a standard BED name column (BED4, BED6, ...) and says nothing about splits."""
    given = [(where, value) for where, value in fourth if value is not None]
    named = [(where, value) for where, value in given if value.lower() in _SPLIT_NAMES]
    if not named:
        return None
    if len(named) != len(fourth):
        where, value = next(((w, v) for w, v in fourth if v is None or v.lower() not in _SPLIT_NAMES))
        if value is None:
            raise UserError(f"{path.name} mixes lines with and without a split column ({where} has none): give every "
                            "line a split or none")
        raise UserError(f"{where}: split {value!r} is not train, valid/val or test, while other lines name splits in "
                        "the 4th column: fix the BED")
    return [_SPLIT_NAMES[value.lower()] for _, value in named]


def _warn_split_overlap(path: Path, genome: Genome, contigs, starts, ends, splits) -> int:
    """Warn (:class:`~dnadiff.errors.LeakageWarning`) when val/test intervals overlap train intervals: those bases
    would be trained on and scored as held out. Returns the number of overlapping held-out intervals."""
    import warnings

    contigs, starts, ends = np.asarray(contigs), np.asarray(starts), np.asarray(ends)
    train = np.array([s == "train" for s in splits])
    hits, first = 0, None
    for contig in np.unique(contigs[~train]):
        mine = train & (contigs == contig)
        if not mine.any():
            continue
        order = np.argsort(starts[mine])
        t_start, t_end = starts[mine][order], np.maximum.accumulate(ends[mine][order])
        for i in np.flatnonzero(~train & (contigs == contig)):
            k = np.searchsorted(t_start, ends[i], side="left") - 1  # the last train interval starting before our end
            if k >= 0 and t_end[k] > starts[i]:
                hits += 1
                first = first or f"{genome.names[int(contig)]}:{starts[i]}-{ends[i]} ({splits[i]})"
    if hits:
        warnings.warn(f"{path.name}: {hits} held-out interval(s) overlap training intervals (first: {first}): those "
                      "bases are trained on and scored as held out; make the splits disjoint", LeakageWarning,
                      stacklevel=3)
    return hits


def split_by_contigs(usable: Intervals, genome: Genome, val_contigs: Sequence[str],
                     test_contigs: Sequence[str]) -> dict[str, Intervals]:
    """Assign every interval on a val (test) contig to val (test) and the rest to train."""
    val = {genome.contig_index(name) for name in val_contigs}
    test = {genome.contig_index(name) for name in test_contigs}
    both = val & test
    if both:
        raise UserError(f"contig {genome.names[min(both)]!r} is both a validation and a test contig: name it once")
    is_val = np.isin(usable.contig, list(val))
    is_test = np.isin(usable.contig, list(test))
    return {"train": usable.select(~is_val & ~is_test), "val": usable.select(is_val),
            "test": usable.select(is_test)}


def split_by_contig_ends(usable: Intervals, genome: Genome,
                         holdout_frac: float = DEFAULT_HOLDOUT_FRAC) -> dict[str, Intervals]:
    """Hold out ranges at each contig's end: last ``holdout_frac`` val, the same amount before it test."""
    if not 0 < holdout_frac < 0.5:
        raise UserError(f"holdout fraction {holdout_frac} must be between 0 and 0.5")
    held = np.rint(genome.lengths * holdout_frac).astype(np.int64)
    val_start = genome.lengths - held
    test_start = val_start - held
    zeros = np.zeros_like(genome.lengths)
    return {"train": usable.clip(zeros, test_start), "test": usable.clip(test_start, val_start),
            "val": usable.clip(val_start, genome.lengths)}


def make_splits(genome: Genome, bed: str | os.PathLike | None = None, val_contigs: Sequence[str] = (),
                test_contigs: Sequence[str] = (),
                holdout_frac: float = DEFAULT_HOLDOUT_FRAC) -> dict[str, Intervals]:
    """Train/val/test intervals of a genome (see the module docstring for the rules).

    Returns:
        {"train": Intervals, "val": Intervals, "test": Intervals} (val/test may be empty only when
        held-out contigs were named for one split and not the other).
    Raises:
        UserError: bad BED, unknown contig, both a BED split column and held-out contigs, empty train split.
    """
    usable, bed_splits = read_bed(bed, genome) if bed is not None else (whole_genome(genome), None)
    if bed_splits is not None:
        if val_contigs or test_contigs:
            raise UserError("the BED file already has a split column: drop --val-contigs/--test-contigs "
                            "or use a BED with three columns")
        labels = np.array(bed_splits)
        splits = {name: usable.select(labels == name) for name in SPLITS}
    elif val_contigs or test_contigs:
        splits = split_by_contigs(usable, genome, val_contigs, test_contigs)
    else:
        splits = split_by_contig_ends(usable, genome, holdout_frac)
    if len(splits["train"]) == 0:
        raise UserError("the training split is empty: hold out fewer contigs or add train intervals to the BED")
    return splits


def parse_region(text: str, genome: Genome) -> Intervals:
    """Parse ``chr:start-end`` (1-based inclusive, commas allowed) or ``chr`` into one interval.

    Returns:
        Intervals with one 0-based half-open interval ``[start - 1, end)``.
    """
    text = text.strip()
    if text in genome.names:
        contig = genome.contig_index(text)
        return Intervals.build([contig], [0], [genome.lengths[contig]])
    name, colon, span = text.rpartition(":")
    first, dash, last = span.replace(",", "").partition("-")
    if not colon or not dash or not first.isdigit() or not last.isdigit():
        raise UserError(f"region {text!r} is not `chr:start-end` (1-based, inclusive) or a contig name: fix --region")
    contig = genome.contig_index(name)
    start, end, length = int(first) - 1, int(last), int(genome.lengths[contig])
    if not 0 <= start < end <= length:
        raise UserError(f"region {text!r} is empty or outside contig {name} (1-{length}): fix --region")
    return Intervals.build([contig], [start], [end])
