"""Inputs and outputs of the scorers: sequences from FASTA or TSV (streamed), rows written as TSV or JSON
lines, arrays as ``.npy`` with an id list, VCF lines with an INFO field, every file through the atomic writer."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from dnadiff.atomic import atomic_write
from dnadiff.errors import UserError
from dnadiff.paths import check_writable, open_text

_DNA = set("ACGTNacgtn")


def _open_text(path: Path):
    return open_text(path)


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
    """Fail before any work when ``path`` cannot be written (see :func:`dnadiff.paths.check_writable`)."""

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


class Ticker:
    """Progress on stderr at most every ``every`` seconds: ``LABEL: N done, elapsed`` (and ``of TOTAL`` when known)."""

    def __init__(self, label: str, total: int | None = None, every: float = 10.0, stream=None):
        import sys
        import time

        self.label, self.total, self.every = label, total, every
        self.stream = stream or sys.stderr
        self._time = time.perf_counter
        self.started = self.last = self._time()

    def __call__(self, done: int) -> None:
        now = self._time()
        if now - self.last >= self.every:
            self.last = now
            of = f" of {self.total:,}" if self.total else ""
            print(f"{self.label}: {done:,}{of} done, {now - self.started:.0f} s elapsed", file=self.stream, flush=True)


VARIANT_COLUMNS = ["chrom", "pos", "id", "ref", "alt", "llr", "stderr", "method", "status"]

INFO_LINES = (
    '##INFO=<ID=DNADIFF_LLR,Number=A,Type=Float,Description="dnadiff zero-shot log-likelihood ratio log p(alt) - '
    'log p(ref) in nats (masked marginal for single-base substitutions, paired ELBO difference otherwise)">',
    '##INFO=<ID=DNADIFF_SE,Number=A,Type=Float,Description="Monte-Carlo standard error of DNADIFF_LLR (0 when exact)">',
    '##INFO=<ID=DNADIFF_METHOD,Number=A,Type=String,Description="masked_marginal, paired_elbo, identical, or why the '
    'allele was not scored (symbolic, ambiguous, ref_mismatch)">',
)


def variant_rows(results: Iterable) -> Iterator[dict]:
    """TSV / JSON rows of (Allele, AlleleScore) pairs."""
    for allele, score in results:
        r = allele.record
        yield {"chrom": r.chrom, "pos": r.pos, "id": r.id, "ref": r.ref, "alt": allele.alt, "llr": score.llr,
               "stderr": score.stderr, "method": score.method, "status": allele.status}


def annotated_vcf(header: str, results: Iterable) -> Iterator[str]:
    """The VCF text of (Allele, AlleleScore) pairs (consecutive alleles of one record merged back): the input
    header with the DNADIFF INFO lines declared, each record's line with DNADIFF_LLR / _SE / _METHOD appended."""
    lines = header.rstrip("\n").split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("#CHROM"))
    yield "\n".join(lines[:at] + list(INFO_LINES) + lines[at:]) + "\n"
    group: list = []

    def flush():
        record = group[0][0].record
        cols = record.line.split("\t")
        by_alt = {a.alt: (a, s) for a, s in group}
        llr, se, method = [], [], []
        for alt in record.alts or (".",):
            a, s = by_alt.get(alt, (None, None))
            ok = s is not None and not math.isnan(s.llr)
            llr.append(f"{s.llr:.6g}" if ok else ".")
            se.append(f"{s.stderr:.3g}" if ok and not math.isnan(s.stderr) else ".")
            method.append(s.method if ok else (a.status if a is not None else "none"))
        extra = f"DNADIFF_LLR={','.join(llr)};DNADIFF_SE={','.join(se)};DNADIFF_METHOD={','.join(method)}"
        cols[7] = extra if cols[7] in (".", "") else cols[7] + ";" + extra
        return "\t".join(cols) + "\n"

    for allele, score in results:
        if group and group[0][0].record.number != allele.record.number:
            yield flush()
            group = []
        group.append((allele, score))
    if group:
        yield flush()
