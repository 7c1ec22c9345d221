"""Inputs and outputs of the scorers: sequences from FASTA or TSV (streamed), rows written as TSV or JSON
lines, arrays as ``.npy`` with an id list, VCF lines with an INFO field, every file through the atomic writer."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from dnadiff.atomic import atomic_write
from dnadiff.errors import UserError

_DNA = set("ACGTNacgtn")


def _open_text(path: Path):
    with open(path, "rb") as handle:
        head = handle.read(2)
    return gzip.open(path, "rt") if head == b"\x1f\x8b" else open(path, "rt")


def read_sequences(path: str | Path) -> Iterator[tuple[str, str]]:
    """(id, sequence) pairs of a FASTA (plain or gzip; the id is the header's first word) or of a TSV
    (``id<TAB>sequence``, an optional header line), streamed in file order.

    Raises:
        UserError: a missing, empty, binary or malformed file (one line naming it and the fix).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sequence file {path} does not exist: check the path")
    count = 0
    try:
        with _open_text(path) as handle:
            first = ""
            for first in handle:
                if first.strip():
                    break
            if not first.strip():
                raise UserError(f"{path} is empty: give a FASTA or a TSV of id<TAB>sequence")
            if first.startswith(">"):
                name, chunks = first[1:].split()[0] if first[1:].split() else f"seq{count}", []
                for line in handle:
                    if line.startswith(">"):
                        yield name, "".join(chunks)
                        count += 1
                        name, chunks = (line[1:].split() or [f"seq{count}"])[0], []
                    else:
                        chunks.append(line.strip())
                yield name, "".join(chunks)
                return
            lines = [first]
            for lineno, line in enumerate(_chain(lines, handle), start=1):
                if not line.strip():
                    continue
                cols = line.rstrip("\n\r").split("\t")
                if len(cols) < 2:
                    raise UserError(f"{path}: line {lineno} is neither FASTA nor id<TAB>sequence: give a FASTA (> headers) "
                                    "or a two-column TSV")
                seq = cols[1].strip()
                if set(seq) - _DNA:
                    if lineno == 1:
                        continue  # header line
                    raise UserError(f"{path}: line {lineno} has a sequence with letters other than A/C/G/T/N: fix the row")
                yield cols[0], seq
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text FASTA or TSV: give sequences as FASTA or id<TAB>sequence") from None


def _chain(first: list[str], rest) -> Iterator[str]:
    yield from first
    yield from rest


def check_output(path: str | Path, force: bool = False) -> Path:
    """Fail before any work when ``path`` cannot be written (see :func:`dnadiff.generate.check_writable`)."""
    from dnadiff.generate import check_writable

    return check_writable(path, overwrite=force)


def _cell(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_rows(path: str | Path, columns: list[str], rows: Iterable[dict], fmt: str = "tsv") -> int:
    """Write rows (dicts over ``columns``) as TSV (a header line) or JSON lines, streamed into a temporary
    file that replaces ``path`` only once complete. Returns the number of rows."""
    count = 0

    def write(handle):
        nonlocal count
        if fmt == "tsv":
            handle.write(("\t".join(columns) + "\n").encode())
        for row in rows:
            if fmt == "tsv":
                handle.write(("\t".join(_cell(row.get(c, "")) for c in columns) + "\n").encode())
            else:
                clean = {c: (None if isinstance(row.get(c), float) and math.isnan(row[c]) else row.get(c)) for c in columns}
                handle.write((json.dumps(clean) + "\n").encode())
            count += 1

    _atomic(path, write)
    return count


def write_text(path: str | Path, chunks: Iterable[str]) -> None:
    """Write text chunks (streamed) atomically."""
    _atomic(path, lambda handle: [handle.write(c.encode()) for c in chunks])


def write_npy_stream(path: str | Path, blocks: Iterator[np.ndarray], rows: int) -> int:
    """Write ``rows`` float32 rows arriving as [b, D] blocks into one ``.npy`` file (header first, then the
    rows: memory holds one block), atomically. Returns D."""
    width = 0

    def write(handle):
        nonlocal width
        done = 0
        for block in blocks:
            block = np.ascontiguousarray(block, dtype="<f4")
            if done == 0:
                width = block.shape[1]
                np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False,
                                                              "shape": (rows, width)})
            handle.write(block.tobytes())
            done += len(block)
        if done != rows:
            raise ValueError(f"{done} rows written for a header of {rows}")

    _atomic(path, write)
    return width


def _atomic(path, write: Callable) -> None:
    try:
        atomic_write(path, write)
    except OSError as err:
        raise UserError(f"could not write {path} ({err.strerror}): choose another --out") from None
