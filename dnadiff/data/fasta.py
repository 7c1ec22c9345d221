"""Random access to a genome FASTA (plain or bgzip) through pyfaidx, never loading it into memory.

``open_genome(path)`` checks the file (exists, is FASTA, not plain gzip, no empty contig), finds or
builds its ``.fai`` (and ``.gzi`` for bgzip) index, and returns a :class:`Genome` whose
``fetch(contig, start, end)`` reads just that region as dnadiff token ids.

Index location: next to the FASTA when the index is there and up to date or the folder is writable;
otherwise in the user cache (``$XDG_CACHE_HOME/dnadiff/fai``, default ``~/.cache/dnadiff/fai``).
A plain-gzip FASTA cannot be read by random access: the error names ``bgzip``, and
:func:`decompress_to_cache` is the explicit opt-in that decompresses it once into a cache folder.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pyfaidx
import torch

from dnadiff.data.tokenizer import encode
from dnadiff.errors import UserError
from dnadiff.paths import GZIP_MAGIC as _GZIP_MAGIC, require_file

#: the empty block every complete BGZF file ends with (SAM/BAM specification, section 4.1.2)
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_LINE_END = (b"\n", b"\r\n")


def default_cache_dir() -> Path:
    """The user cache folder of dnadiff (``$XDG_CACHE_HOME/dnadiff`` or ``~/.cache/dnadiff``)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "dnadiff"


def compression_of(path: str | os.PathLike) -> str:
    """Return ``"plain"``, ``"bgzip"`` or ``"gzip"`` (plain gzip) from the file's first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(18)
    if not head.startswith(_GZIP_MAGIC):
        return "plain"
    # BGZF: gzip with FEXTRA (flag bit 2) holding a 'BC' subfield (SAM/BAM specification, section 4.1).
    if len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC":
        return "bgzip"
    return "gzip"


def _check_line_endings(path: Path, compression: str) -> None:
    """UserError for CR-only line endings (classic Mac OS), which neither pyfaidx nor samtools index (the index
    would then be blamed, and rebuilding it gives the same error again)."""
    opener = open if compression == "plain" else gzip.open
    try:
        with opener(path, "rb") as handle:
            chunk = handle.read(1 << 16)
    except (OSError, EOFError):
        return  # reported by the checks that follow
    if b"\r" in chunk and b"\n" not in chunk:
        raise UserError(f"{path} uses CR-only line endings (classic Mac OS), which FASTA indexes cannot describe: "
                        f"convert them with `tr '\\r' '\\n' < {path.name} > fixed.fa`"
                        + (" and bgzip the result" if compression == "bgzip" else ""))


def _first_line(path: Path, compression: str) -> bytes:
    opener = open if compression == "plain" else gzip.open
    try:
        with opener(path, "rb") as handle:
            for line in handle:
                if line.strip():
                    return line.strip()
    except (OSError, EOFError) as err:  # corrupt gzip stream
        raise UserError(f"{path} cannot be read as a FASTA file ({err}): check the file") from err
    return b""


def _source_key(path: Path) -> str:
    """A short key naming this version of a file (absolute path, size, modification time)."""
    stat = path.stat()
    raw = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    return hashlib.sha1(raw).hexdigest()[:16]


def _writable(folder: Path) -> bool:
    """True when we may write into ``folder``: accessible for writing and not marked read-only
    (no write bit at all), which root would otherwise ignore."""
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


def _index_paths(path: Path, bgzip: bool) -> tuple[Path, Path | None, bool]:
    """Where the .fai (and .gzi) live, and whether they are there and up to date.

    Next to the FASTA when the index is there and fresh or the folder is writable, else in the user cache.
    """
    def located(fai: Path, gzi: Path | None) -> tuple[Path, Path | None, bool]:
        mtime = path.stat().st_mtime
        fresh = all(p.exists() and p.stat().st_mtime >= mtime for p in (fai, gzi) if p is not None)
        return fai, gzi, fresh

    beside = located(Path(str(path) + ".fai"), Path(str(path) + ".gzi") if bgzip else None)
    if beside[2] or _writable(path.parent):
        return beside
    cache = default_cache_dir() / "fai" / _source_key(path)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot write the index of {path}: its folder is read-only and the cache {cache} is not "
            f"writable ({err}); set XDG_CACHE_HOME to a writable folder"
        ) from err
    return located(cache / (path.name + ".fai"), cache / (path.name + ".gzi") if bgzip else None)


def _open_indexed(path: Path, fai: Path, gzi: Path | None, fresh: bool) -> pyfaidx.Fasta:
    """Open with pyfaidx; a missing or stale index is built under temporary names and renamed into
    place, so processes building it at the same time (DDP ranks) never see a half-written index."""
    if fresh:
        return pyfaidx.Fasta(str(path), indexname=str(fai), gzi_indexname=str(gzi) if gzi else None,
                             as_raw=True, sequence_always_upper=False, rebuild=False)
    suffix = f".tmp-{os.getpid()}"
    tmp_fai = Path(str(fai) + suffix)
    tmp_gzi = Path(str(gzi) + suffix) if gzi is not None else None
    try:
        fasta = pyfaidx.Fasta(str(path), indexname=str(tmp_fai),
                              gzi_indexname=str(tmp_gzi) if tmp_gzi else None,
                              as_raw=True, sequence_always_upper=False)
        os.replace(tmp_fai, fai)
        if tmp_gzi is not None:
            os.replace(tmp_gzi, gzi)
    finally:
        for tmp in (tmp_fai, tmp_gzi):
            if tmp is not None and tmp.exists():
                tmp.unlink()
    return fasta


class Genome:
    """An opened, indexed genome FASTA. Read regions with :meth:`fetch`; nothing is held in memory
    beyond the index and pyfaidx's small block cache.

    Attributes:
        path: the FASTA file.
        names: contig names in file order.
        lengths: int64 array [num_contigs], each contig's length in bp.
    """

    def __init__(self, path: Path, fasta: pyfaidx.Fasta):
        self.path = path
        self._fasta = fasta
        self.names: list[str] = list(fasta.keys())
        self.lengths = np.array([len(fasta[name]) for name in self.names], dtype=np.int64)
        self._index = {name: i for i, name in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    @property
    def total_length(self) -> int:
        """Sum of contig lengths in bp."""
        return int(self.lengths.sum())

    def contig_index(self, name: str) -> int:
        """Index of contig ``name``; UserError listing a few known names when absent."""
        if name not in self._index:
            known = ", ".join(self.names[:5]) + (", ..." if len(self.names) > 5 else "")
            raise UserError(f"contig {name!r} is not in {self.path.name} (it has {known}): check the contig name")
        return self._index[name]

    def check_window(self, window: int) -> None:
        """UserError when ``window`` bp is longer than every contig."""
        longest = int(self.lengths.argmax())
        if window > self.lengths[longest]:
            raise UserError(
                f"window {window} bp is longer than every contig of {self.path.name} (the longest, "
                f"{self.names[longest]}, has {self.lengths[longest]} bp): use a shorter window"
            )

    def fetch_bytes(self, contig: int | str, start: int, end: int) -> bytes:
        """Raw upper/lower-case sequence bytes of ``[start, end)`` (0-based, end exclusive)."""
        name = contig if isinstance(contig, str) else self.names[contig]
        length = self.lengths[self.contig_index(name)]
        if not 0 <= start <= end <= length:
            raise UserError(f"region {name}:{start}-{end} is outside contig {name} of length {length}")
        if start == end:
            return b""
        try:
            return str(self._fasta.faidx.fetch(name, start + 1, end)).encode("ascii")
        except ValueError:
            # pyfaidx 0.9 seeks one block too early when a region starts exactly on the boundary of a
            # full 65,536-byte BGZF block (as Biopython writes them; samtools uses 65,280): read one
            # base more from inside the previous block instead and drop it.
            if start == 0:
                raise
            return str(self._fasta.faidx.fetch(name, start, end)).encode("ascii")[1:]

    def fetch(self, contig: int | str, start: int, end: int) -> torch.Tensor:
        """Token ids of ``[start, end)`` on the + strand.

        Returns:
            LongTensor[end - start] of ids in {A, C, G, T, N} (dnadiff tokenizer).
        """
        return encode(self.fetch_bytes(contig, start, end))

    def __reduce__(self):
        return open_genome, (self.path,)  # a pickled genome reopens its file in the new process

    def close(self) -> None:
        """Close the underlying file handle."""
        self._fasta.close()


def open_genome(path: str | os.PathLike) -> Genome:
    """Open a plain or bgzip FASTA for random access, building its index if missing.

    Raises:
        UserError: missing file, plain gzip (names ``bgzip``), not a FASTA, empty contig, unreadable index.
    """

    path = require_file(path, "genome file", "check the path (give a FASTA file)")
    compression = compression_of(path)
    if compression == "gzip":
        raise UserError(
            f"{path} is plain gzip, which cannot be read by random access: recompress it with "
            f"`gunzip {path.name} && bgzip {path.stem}`, or decompress it once into a cache "
            f"(dnadiff.data.fasta.decompress_to_cache)"
        )
    _check_line_endings(path, compression)
    first = _first_line(path, compression)
    if not first.startswith(b">"):
        raise UserError(f"{path} is not a FASTA file (the first line does not start with '>'): check the file")
    if compression == "bgzip":
        _check_bgzf_end(path)
    fai, gzi, fresh = _index_paths(path, compression == "bgzip")
    try:
        fasta = _open_indexed(path, fai, gzi, fresh)
    except (pyfaidx.FastaIndexingError, ValueError) as err:
        raise UserError(f"{path} is not a well-formed FASTA file ({_first(err)}): fix the file") from None
    except (EOFError, zlib.error, struct.error, IndexError, RuntimeError) as err:
        raise UserError(f"{path} is corrupt or truncated ({_first(err)}): download it again or recompress it with bgzip") from None
    except OSError as err:
        if compression == "bgzip":
            raise UserError(f"{path} is corrupt or truncated ({_first(err)}): download it again or recompress it with bgzip") from None
        raise UserError(f"cannot index {path} ({_first(err)}): check the file and its folder") from None
    try:
        check_index(path, fasta.faidx, fai)
    except UserError:
        fasta.close()
        raise
    genome = Genome(path, fasta)
    if len(genome) == 0:
        genome.close()
        raise UserError(f"{path} contains no sequence: check the file")
    empty = [name for name, n in zip(genome.names, genome.lengths) if n == 0]
    if empty:
        genome.close()
        raise UserError(f"{path} has an empty contig {empty[0]!r} (no sequence after its header): remove it")
    return genome


def _first(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:160]


def _check_bgzf_end(path: Path) -> None:
    """UserError when a bgzip file lacks its end-of-file block (cut short by an interrupted copy)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        handle.seek(max(0, size - len(BGZF_EOF)))
        tail = handle.read()
    if tail != BGZF_EOF:
        raise UserError(f"{path} is truncated (its BGZF end-of-file block is missing): download or copy it again, "
                        f"or recompress the FASTA with bgzip")


def _reader(faidx: pyfaidx.Faidx):
    """read(offset, n) -> bytes at uncompressed ``offset`` of the FASTA behind ``faidx`` (plain or bgzip)."""
    import bisect

    def read(offset: int, n: int) -> bytes:
        if offset < 0 or n <= 0:
            return b""
        with faidx.lock:
            if faidx._bgzf:
                from Bio.bgzf import make_virtual_offset

                i = bisect.bisect_right([b.ustart for b in faidx.gzi_index], offset) - 1
                block = faidx.gzi_index[max(i, 0)]
                faidx.file.seek(make_virtual_offset(block.cstart, offset - block.ustart))
            else:
                faidx.file.seek(offset)
            return faidx.file.read(n)

    return read


def check_index(path: Path, faidx: pyfaidx.Faidx, fai: Path, samples: int = 3) -> None:
    """Check that the .fai describes this FASTA, from the contents, not the modification times (copies made
    with ``cp -p``, ``rsync -t`` or ``tar`` keep old times): the last record ends where the file ends, and at
    a few records (first, middle, last) the header names the record just before its offset, lines break
    where the index says and the sequence ends at the recorded length.

    Raises:
        UserError: one line naming the index, the first mismatch and the fix (delete the index).
    """
    names = list(faidx.index)
    if not names:
        return
    read = _reader(faidx)

    def fail(what: str):
        gzi = f" and {fai.name[:-4]}.gzi" if faidx._bgzf else ""
        raise UserError(f"the index {fai} does not describe {path.name} ({what}): delete {fai.name}{gzi} so dnadiff "
                        f"rebuilds it")

    try:
        last = faidx.index[names[-1]]
        if not faidx._bgzf:
            size = path.stat().st_size
            if last.bend > size or size - last.bend > 1024:
                fail(f"it ends at byte {last.bend}, the file has {size} bytes")
            if read(last.bend, size - last.bend).strip():
                fail(f"bytes follow the end of the last record {names[-1]}")
        picks = sorted({0, len(names) // 2, len(names) - 1})[:samples]
        for name in (names[i] for i in picks):
            rec = faidx.index[name]
            before = read(max(0, rec.offset - 4096), min(rec.offset, 4096))
            header = before[:-1].rsplit(b"\n", 1)[-1].rstrip(b"\r") if before.endswith(b"\n") else b""
            if not (header.startswith(b">" + name.encode()) and header[len(name) + 1:][:1] in (b"", b" ", b"\t")):
                fail(f"no header '>{name}' ends just before byte {rec.offset}")
            width, terminator = rec.lenc, rec.lenb - rec.lenc
            if rec.rlen == 0 or width <= 0:
                continue  # an empty record: refused by open_genome with its own message
            if rec.rlen > width and read(rec.offset + width, terminator) not in _LINE_END:
                fail(f"record {name} does not break its lines after {width} bases")
            full, rest = divmod(rec.rlen, width)
            end = rec.offset + full * rec.lenb + rest  # just past the last base
            if rest == 0:
                end -= terminator
            tail = read(end - 1, 1 + terminator)
            if not tail[:1].isalpha() and tail[:1] not in (b"*", b"-"):
                fail(f"record {name} does not end after {rec.rlen} bases")
            if tail[1:] and tail[1:] not in _LINE_END and tail[1:2] not in (b"\n", b"\r"):
                fail(f"record {name} is longer than its {rec.rlen} bases")
    except UserError:
        raise
    except (OSError, EOFError, zlib.error, struct.error, ValueError, IndexError, AttributeError, RuntimeError) as err:
        fail(f"reading it failed: {_first(err)}")


def decompress_to_cache(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Decompress a plain-gzip FASTA once into ``cache_dir`` and return the plain FASTA's path.

    The cached file's name carries a key of the source (path, size, mtime), so a changed source is
    decompressed again and an unchanged one is reused. Writing goes through a temporary file and an
    atomic rename, so an interrupted run never leaves a half file behind.
    Files that are not gzip are returned unchanged.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"genome file {path} does not exist: check the path")
    if compression_of(path) == "plain":
        return path
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "fasta"
    cache.mkdir(parents=True, exist_ok=True)
    name = path.name[:-3] if path.name.endswith(".gz") else path.name + ".plain"
    target = cache / f"{_source_key(path)}-{name}"
    if target.exists():
        return target
    handle, tmp = tempfile.mkstemp(dir=cache, prefix=".partial-")
    try:
        with os.fdopen(handle, "wb") as out, gzip.open(path, "rb") as src:
            shutil.copyfileobj(src, out, length=1 << 22)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return target
