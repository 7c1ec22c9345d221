"""Real sequences to compare generated DNA with: a FASTA file (plain or gzip), a ``seq[<TAB>label]`` table
with a header (Genomic Benchmarks style) or the DNA-Diffusion DHS table (its test split is the held-out set,
its training split the memorisation reference and the classifier's training data)."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from dnadiff.errors import UserError
from dnadiff.paths import open_text, require_file


@dataclass
class Reference:
    """Real sequences for the report: held-out ones, a memorisation reference, labelled ones."""

    held_out: list[str]
    train: list[str] | None = None
    labelled: list[str] = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)


def _open_text(path: Path):
    return open_text(path, newline="")  # a byte-order mark is not part of the first column's name


def read_reference(path: str | Path, option: str = "--real") -> Reference:
    """Read real sequences from a FASTA file, a ``seq[<TAB>label]`` table or the DHS table.

    Raises:
        UserError: missing file or an unrecognised layout.
    """
    path = require_file(path, "real sequences", f"pass a FASTA file or a seq<TAB>label table to {option}")
    try:
        with _open_text(path) as handle:
            first = handle.readline()
            handle.read(1 << 16)  # a binary file fails here, not halfway through reading it
    except (UnicodeDecodeError, OSError, EOFError) as err:
        raise UserError(f"{path} is not a text file ({type(err).__name__}): pass a FASTA file or a seq<TAB>label table to {option}") from None
    if first.startswith(">"):
        return Reference(held_out=_read_fasta(path))
    header = first.rstrip("\r\n").split("\t")
    if {"sequence", "TAG", "data_label"} <= set(header):
        from dnadiff.data.dhs import load_dhs

        dhs = load_dhs(path)
        test, training = dhs.subset("test"), dhs.subset("training")
        names = [dhs.class_names[i] for i in training.labels]
        return Reference(held_out=test.sequences, train=training.sequences, labelled=training.sequences, label_names=names)
    column = next((c for c in ("seq", "sequence") if c in header), None)
    if column is None:
        raise UserError(f"{path} is neither FASTA nor a table with a 'seq' column: give FASTA or seq<TAB>label with a header")
    wanted = [column] + (["label"] if "label" in header else [])
    seqs, labels = [], []
    with _open_text(path) as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        for row in reader:
            missing = [name for name in wanted if not (row.get(name) or "").strip()]
            if missing:
                raise UserError(f"{path} line {reader.line_num} has no {missing[0]!r} value: fill in or remove that "
                                f"line ({option} needs every row to have {' and '.join(wanted)})")
            seqs.append(row[column].strip().upper())
            labels.append(row.get("label", "").strip())
    if not seqs:
        raise UserError(f"{path} has a header but no rows: give real sequences to {option}")
    if "label" in header:
        return Reference(held_out=seqs, labelled=seqs, label_names=labels)
    return Reference(held_out=seqs)


def _read_fasta(path: Path) -> list[str]:
    seqs: list[str] = []
    with _open_text(path) as handle:
        for line in handle:
            line = line.strip()
            if line.startswith(">"):
                seqs.append("")
            elif line and seqs:
                seqs[-1] += line.upper()
    if not seqs:
        raise UserError(f"{path} holds no FASTA record: check the file")
    return seqs
