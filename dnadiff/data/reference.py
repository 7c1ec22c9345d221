"""Real sequences to compare generated DNA with: a FASTA file (plain or gzip), a ``seq[<TAB>label]`` table
with a header (Genomic Benchmarks style) or the DNA-Diffusion DHS table (its test split is the held-out set,
its training split the memorisation reference and the classifier's training data)."""
from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass, field
from pathlib import Path

from dnadiff.errors import UserError


@dataclass
class Reference:
    """Real sequences for the report: held-out ones, a memorisation reference, labelled ones."""

    held_out: list[str]
    train: list[str] | None = None
    labelled: list[str] = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)


def _open_text(path: Path):
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", newline="") if gzipped else open(path, newline="")


def read_reference(path: str | Path, option: str = "--real") -> Reference:
    """Read real sequences from a FASTA file, a ``seq[<TAB>label]`` table or the DHS table.

    Raises:
        UserError: missing file or an unrecognised layout.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"real sequences {path} not found: pass a FASTA file or a seq<TAB>label table to {option}")
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
    with _open_text(path) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    seqs = [row[column].upper() for row in rows]
    if "label" in header:
        return Reference(held_out=seqs, labelled=seqs, label_names=[row["label"] for row in rows])
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
