"""Zero-shot variant effects: records, their checks against the genome, the masked-marginal log-likelihood
ratio, the paired-ELBO difference with common random numbers, and in-silico saturation mutagenesis.

Scores are log-likelihood ratios in nats, log p(alt) - log p(ref) (negative: the model finds the alternative
allele less likely):

* single-base substitutions: the masked marginal, log p(x_i = alt | context) - log p(x_i = ref | context) with
  position i alone masked and ``context`` bp of the genome on each side (a window of 2 * context + 1, shorter at
  contig ends); for Caduceus-Ph averaged over both strands, exact for Caduceus-PS (``strands``);
* indels and multi-base substitutions (after trimming the bases REF and ALT share at either end): the difference
  of the NELBOs of the ref window (left flank + REF + right flank) and the alt window (left flank + ALT + right
  flank), NELBO(ref) - NELBO(alt), an estimate of log p(alt window) - log p(ref window), from ``num_t`` draws
  with *common random numbers*: both windows use the same times t and the same uniforms for the flanks (and for
  the allele when REF and ALT have the same length), so the masks agree wherever the windows do and the
  difference has far lower variance than two independent estimates. Its standard error is reported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from dnadiff.data.tokenizer import MASK, NUM_BASES, encode
from dnadiff.diffusion.process import stratified_times
from dnadiff.errors import UserError
from dnadiff.paths import open_text
from dnadiff.scoring.common import (device_of, masked_logprobs, parts, resolve_strands, strand_logprobs)
from dnadiff.data.fasta import Genome, open_genome
from dnadiff.atomic import atomic_write

REF_MISMATCH = ("refuse", "skip", "flag")
_BASE_INDEX = {"A": 0, "C": 1, "G": 2, "T": 3}
_LETTERS = set("ACGTN")


# ------------------------------------------------------------------------------------------- records
@dataclass
class Record:
    """One input record: a VCF line or a TSV row. ``pos`` is 1-based; ``alts`` may hold several alleles."""

    number: int
    chrom: str
    pos: int
    ref: str
    alts: tuple[str, ...]
    id: str = "."
    line: str | None = None  # the VCF line as read (for writing it back with an INFO field)


@dataclass
class Allele:
    """One (record, ALT) pair after the checks. ``contig``: the genome's name for the record's chromosome;
    ``start``: 0-based position of REF. ``status``: ``ok``, ``symbolic`` (skipped), ``ambiguous`` (an N in REF or
    ALT: skipped) or ``ref_mismatch`` (flagged, not scored)."""

    record: Record
    alt: str
    contig: str
    start: int
    status: str = "ok"


@dataclass
class AlleleScore:
    """``llr`` nats (log p(alt) - log p(ref)), its Monte-Carlo ``stderr`` (0 for the exact masked marginal),
    ``method``: ``masked_marginal``, ``paired_elbo``, ``identical`` (REF = ALT) or ``none`` (not scored)."""

    llr: float
    stderr: float
    method: str


def is_symbolic(alt: str) -> bool:
    """Symbolic or breakend ALT (<DEL>, <*>, ``*``, ``.``, N[chr:pos[ ...): not a sequence that can be scored."""
    return alt in ("*", ".", "") or alt.startswith("<") or "[" in alt or "]" in alt


def vcf_kind(path: str | Path) -> bool:
    """True when ``path`` names a VCF/BCF (by its suffix), False for a TSV."""
    name = str(path).lower()
    return name.endswith((".vcf", ".vcf.gz", ".vcf.bgz", ".bcf"))


def read_records(path: str | Path) -> Iterator[Record]:
    """Records of a VCF (plain, bgzip or BCF, read by pysam) or of a TSV (``chrom pos ref alt [id]``, 1-based
    pos, tab-separated, an optional header line; several ALTs separated by commas), streamed.

    Raises:
        UserError: a missing or unreadable file, a malformed row (its line number and the fix).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"variant file {path} does not exist: check the path")
    if vcf_kind(path):
        yield from _read_vcf(path)
    else:
        yield from _read_tsv(path)


def _read_vcf(path: Path) -> Iterator[Record]:
    import pysam

    try:
        vcf = pysam.VariantFile(str(path))
    except (ValueError, OSError) as err:
        raise UserError(f"{path} is not a readable VCF ({str(err).strip() or type(err).__name__}): check the file "
                        "(plain text or bgzip, with a ##fileformat header)") from None
    number = 0
    try:
        for number, rec in enumerate(vcf, start=1):
            yield Record(number, rec.chrom, rec.pos, (rec.ref or "").upper(), tuple(a.upper() for a in (rec.alts or ())),
                         rec.id or ".", str(rec).rstrip("\n"))
    except (ValueError, OSError) as err:
        raise UserError(f"{path}: record {number + 1} cannot be read ({str(err).strip()}): fix the VCF line") from None
    finally:
        vcf.close()


def vcf_header(path: str | Path) -> str:
    """The header text of a VCF (``##`` lines and the ``#CHROM`` line)."""
    import pysam

    with pysam.VariantFile(str(path)) as vcf:
        return str(vcf.header)


def _read_tsv(path: Path) -> Iterator[Record]:
    try:
        with open_text(path) as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip() or line.startswith("#"):
                    continue
                cols = line.rstrip("\n").split("\t")
                if len(cols) < 4:
                    raise UserError(f"{path}: line {lineno} has {len(cols)} columns: give chrom, pos, ref, alt "
                                    "(and optionally id), tab-separated")
                if lineno == 1 and not cols[1].strip().lstrip("-").isdigit():
                    continue  # header
                try:
                    pos = int(cols[1])
                except ValueError:
                    raise UserError(f"{path}: line {lineno} has position {cols[1]!r}: give a 1-based integer") from None
                alts = tuple(a.strip().upper() for a in cols[3].split(","))
                yield Record(lineno, cols[0].strip(), pos, cols[2].strip().upper(), alts,
                             cols[4].strip() if len(cols) > 4 and cols[4].strip() else ".")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text TSV: give chrom, pos, ref, alt columns (or a .vcf / .vcf.gz)") from None


# ------------------------------------------------------------------------------------------- checks
def _alternatives(name: str) -> list[str]:
    if name.startswith("chr"):
        bare = name[3:]
        return [bare] + (["MT"] if bare == "M" else [])
    return ["chr" + name] + (["chrM"] if name == "MT" else [])


class ContigNames:
    """Maps a record's chromosome name onto the genome's, with ``match`` mapping ``1`` <-> ``chr1`` (and MT <-> chrM)."""

    def __init__(self, genome, match: bool = False):
        self.genome, self.match = genome, match
        self.known = set(genome.names)
        self.cache: dict[str, str] = {}

    def __call__(self, name: str, where: str) -> str:
        if name in self.cache:
            return self.cache[name]
        if name in self.known:
            found = name
        else:
            other = next((n for n in _alternatives(name) if n in self.known), None)
            if other is None:
                known = ", ".join(self.genome.names[:4]) + (", ..." if len(self.genome.names) > 4 else "")
                raise UserError(f"{where}: contig {name!r} is not in {self.genome.path.name} (it has {known}): "
                                "check that the variants and the genome are the same assembly")
            if not self.match:
                raise UserError(f"{where}: contig {name!r} is named {other!r} in {self.genome.path.name} (one names "
                                "chromosomes 1, 2, X, the other chr1, chr2, chrX): add --match-contig-names to map them")
            found = other
        self.cache[name] = found
        return found


@dataclass
class CheckSummary:
    """Counts of a check pass over the records."""

    records: int = 0
    alleles: int = 0
    multiallelic: int = 0
    symbolic: int = 0
    ambiguous: int = 0
    ref_mismatch: int = 0
    renamed: dict = field(default_factory=dict)

    def line(self) -> str:
        parts = [f"{self.records:,} records, {self.alleles:,} alleles"]
        if self.multiallelic:
            parts.append(f"{self.multiallelic:,} multi-allelic records split")
        if self.symbolic:
            parts.append(f"{self.symbolic:,} symbolic alleles skipped")
        if self.ambiguous:
            parts.append(f"{self.ambiguous:,} alleles with N skipped")
        if self.ref_mismatch:
            parts.append(f"{self.ref_mismatch:,} REF mismatches")
        if self.renamed:
            parts.append("contigs renamed " + ", ".join(f"{a}->{b}" for a, b in list(self.renamed.items())[:3]))
        return "; ".join(parts)


def alleles_of(record: Record, genome, names: ContigNames, ref_mismatch: str = "refuse",
               summary: CheckSummary | None = None) -> list[Allele]:
    """Check one record against the genome and split it into its alleles.

    Raises:
        UserError (one line naming the record and the fix): an unknown contig (or one named ``1`` where the genome
        says ``chr1``, without ``match``), a position outside its contig, letters other than A/C/G/T/N, a REF that
        differs from the genome with ``ref_mismatch="refuse"``.
    """
    where = f"record {record.number} ({record.chrom}:{record.pos})"
    contig = names(record.chrom, where)
    if contig != record.chrom and summary is not None:
        summary.renamed.setdefault(record.chrom, contig)
    length = int(names.genome.lengths[names.genome.contig_index(contig)])
    ref = record.ref
    if not ref or set(ref) - _LETTERS:
        raise UserError(f"{where}: REF {ref!r} is not a DNA sequence: give REF in A/C/G/T/N")
    if record.pos < 1 or record.pos - 1 + len(ref) > length:
        raise UserError(f"{where}: position outside contig {contig} (length {length:,}): check that the variants and the "
                        "genome are the same assembly")
    start = record.pos - 1
    if summary is not None:
        summary.records += 1
        summary.multiallelic += len(record.alts) > 1
    genome_ref = names.genome.fetch_bytes(contig, start, start + len(ref)).decode("ascii").upper()
    mismatch = genome_ref != ref
    if mismatch and ref_mismatch == "refuse":
        raise UserError(f"{where}: REF {ref} but the genome has {genome_ref}: use the genome the variants were called "
                        "on, or add --ref-mismatch skip (drop such records) or flag (keep them, unscored)")
    out = []
    for alt in record.alts or (".",):
        if is_symbolic(alt):
            status = "symbolic"
        elif set(alt) - _LETTERS:
            raise UserError(f"{where}: ALT {alt!r} is not a DNA sequence: give ALT in A/C/G/T/N or a symbolic allele")
        elif mismatch:
            status = "ref_mismatch"
        elif "N" in alt or "N" in ref:
            status = "ambiguous"
        else:
            status = "ok"
        if summary is not None:
            summary.alleles += 1
            summary.symbolic += status == "symbolic"
            summary.ambiguous += status == "ambiguous"
            summary.ref_mismatch += status == "ref_mismatch"
        out.append(Allele(record, alt, contig, start, status))
    return out


def check_records(records: Iterable[Record], genome, match_names: bool = False,
                  ref_mismatch: str = "refuse") -> CheckSummary:
    """Check every record before any scoring (see :func:`alleles_of`): a pass over the records that holds none."""
    if ref_mismatch not in REF_MISMATCH:
        raise UserError(f"unknown --ref-mismatch {ref_mismatch!r}: use refuse, skip or flag")
    names = ContigNames(genome, match_names)
    summary = CheckSummary()
    for record in records:
        alleles_of(record, genome, names, ref_mismatch, summary)
    if summary.records == 0:
        raise UserError("the variant file holds no records: give a VCF or TSV with at least one variant")
    return summary


# ------------------------------------------------------------------------------------------- scoring
def trim(ref: str, alt: str, start: int) -> tuple[str, str, int]:
    """Drop the bases REF and ALT share at the end, then at the start (moving ``start``): (ref, alt, start)."""
    while ref and alt and ref[-1] == alt[-1]:
        ref, alt = ref[:-1], alt[:-1]
    while ref and alt and ref[0] == alt[0]:
        ref, alt, start = ref[1:], alt[1:], start + 1
    return ref, alt, start


def nelbo_given(denoiser, diffusion, x: torch.Tensor, t: torch.Tensor, u: torch.Tensor, strands: str = "forward") -> torch.Tensor:
    """One NELBO draw per row with the forward process's randomness given: position n of row k is masked when
    u[k, n] >= alpha(t_k) (N positions never), then weight(t) * cross-entropy over the masked positions + the prior
    terms: FloatTensor[K] nats (float64). x LongTensor[K, L], t FloatTensor[K], u FloatTensor[K, L] in [0, 1)."""
    counted = x < NUM_BASES
    keep = (u < diffusion.keep_probability(x, t)) | ~counted
    z = torch.where(keep, x, torch.full_like(x, MASK))
    logp = strand_logprobs(denoiser, diffusion, z, t, strands)
    masked = ~keep
    ce = -logp.gather(-1, torch.where(masked, x, torch.zeros_like(x)).unsqueeze(-1)).squeeze(-1).double()
    ce_sum = (ce * masked).sum(-1)
    term = torch.where(masked.any(-1), diffusion.loss_weight(t).double() * ce_sum, torch.zeros_like(ce_sum))
    return term + diffusion.prior_nats(counted.sum(-1).double())


def _check_process(diffusion) -> None:
    from dnadiff.diffusion.masked import MaskedDiffusion

    if not isinstance(diffusion, MaskedDiffusion):
        raise UserError("indels and multi-base substitutions need a state-independent masking schedule and this "
                        "checkpoint uses GenMD4's learned per-base schedule: score single-base substitutions only")


@torch.no_grad()
def paired_elbo_difference(denoiser, diffusion, left: torch.Tensor, ref: torch.Tensor, alt: torch.Tensor,
                           right: torch.Tensor, num_t: int = 8, strands: str = "forward",
                           generator: torch.Generator | None = None, paired: bool = True) -> tuple[float, float]:
    """NELBO(left+ref+right) - NELBO(left+alt+right) from ``num_t`` draws: (mean, standard error) in nats, an
    estimate of log p(alt window) - log p(ref window).

    Common random numbers (``paired=True``): both windows use the same stratified times and the same mask uniforms
    on the flanks (aligned from the left on the left flank and from the right on the right flank) and on the allele
    when REF and ALT have equal length. ``paired=False`` draws the two estimates independently (the reference the
    variance reduction is measured against).

    Args: left, ref, alt, right: LongTensor[n] token ids (ref or alt may be empty for an indel).
    """
    _check_process(diffusion)
    device = left.device
    K = num_t

    def rand(*shape):
        return torch.rand(*shape, device=device, generator=generator, dtype=torch.float64).float()

    def times():
        return stratified_times(rand(1), torch.arange(K, device=device), K, diffusion.num_steps)

    t = times()
    uL, uR, uA = rand(K, len(left)), rand(K, len(right)), rand(K, len(ref))
    uB = uA if len(alt) == len(ref) else rand(K, len(alt))
    x_ref = torch.cat([left, ref, right])[None].expand(K, -1)
    x_alt = torch.cat([left, alt, right])[None].expand(K, -1)
    n_ref = nelbo_given(denoiser, diffusion, x_ref, t, torch.cat([uL, uA, uR], 1), strands)
    if not paired:
        t = times()
        uL, uR, uB = rand(K, len(left)), rand(K, len(right)), rand(K, len(alt))
    n_alt = nelbo_given(denoiser, diffusion, x_alt, t, torch.cat([uL, uB, uR], 1), strands)
    d = (n_ref - n_alt).cpu()
    se = float(d.std() / math.sqrt(K)) if K > 1 else math.nan
    return float(d.mean()), se


#: tokens per denoiser call of the masked marginals (both strands counted): long windows get fewer rows, since
#: on a CPU a call's activations (the selective scan's states) outgrow the caches and memory (benchmarks/scoring.py)
MAX_TOKENS = 32_768


def _marginals(denoiser, diffusion, items: Sequence[tuple[torch.Tensor, int]], strands: str,
               batch_size: int, max_tokens: int = MAX_TOKENS) -> torch.Tensor:
    """Masked-marginal log-probabilities FloatTensor[n, 4] of (window LongTensor[W], centre) items, batched by length
    (at most ``batch_size`` windows and ``max_tokens`` tokens, both strands counted, per call)."""
    device = device_of(denoiser)
    out = torch.empty(len(items), NUM_BASES, dtype=torch.float64)
    groups: dict[int, list[int]] = {}
    for i, (w, _) in enumerate(items):
        groups.setdefault(len(w), []).append(i)
    for width, same in groups.items():
        per_call = max(1, min(batch_size, max_tokens // (width * (2 if strands == "both" else 1))))
        for s in range(0, len(same), per_call):
            rows = same[s : s + per_call]
            windows = torch.stack([items[i][0] for i in rows]).to(device)
            centers = torch.tensor([items[i][1] for i in rows], device=device)
            out[rows] = masked_logprobs(denoiser, diffusion, windows, centers, strands).double().cpu()
    return out


def _span(length: int, start: int, end: int, context: int) -> tuple[int, int]:
    return max(0, start - context), min(length, end + context)


@torch.no_grad()
def score_alleles(model, genome, alleles: Sequence[Allele], context: int, num_t: int = 8, strands: str = "auto",
                  batch_size: int = 64, seed: int = 0) -> list[AlleleScore]:
    """Scores of checked alleles (one :class:`AlleleScore` each, same order); see the module docstring.

    Args:
        genome: a :class:`dnadiff.data.fasta.Genome` (the flanks). context: bp of genome on each side.
        num_t: draws of the paired ELBO (indels, multi-base substitutions). strands: auto, both or forward.
        batch_size: windows per denoiser call for the masked marginals.
    """
    denoiser, diffusion, _ = parts(model)
    strands = resolve_strands(denoiser, strands)
    device = device_of(denoiser)
    generator = torch.Generator(device=device).manual_seed(seed)
    scores: list[AlleleScore | None] = [None] * len(alleles)
    snv_items, snv_rows, snv_bases = [], [], []
    for i, a in enumerate(alleles):
        if a.status != "ok":
            scores[i] = AlleleScore(math.nan, math.nan, "none")
            continue
        ref, alt, start = trim(a.record.ref, a.alt, a.start)
        if not ref and not alt:
            scores[i] = AlleleScore(0.0, 0.0, "identical")
            continue
        length = int(genome.lengths[genome.contig_index(a.contig)])
        lo, hi = _span(length, start, start + len(ref), context)
        if len(ref) == 1 and len(alt) == 1:
            snv_items.append((genome.fetch(a.contig, lo, hi), start - lo))
            snv_rows.append(i)
            snv_bases.append((_BASE_INDEX[ref], _BASE_INDEX[alt]))
            continue
        left = genome.fetch(a.contig, lo, start).to(device)
        right = genome.fetch(a.contig, start + len(ref), hi).to(device)
        llr, se = paired_elbo_difference(denoiser, diffusion, left, encode(ref).to(device), encode(alt).to(device), right,
                                         num_t, strands, generator)
        scores[i] = AlleleScore(llr, se, "paired_elbo")
    if snv_items:
        logp = _marginals(denoiser, diffusion, snv_items, strands, batch_size)
        for k, (i, (r, b)) in enumerate(zip(snv_rows, snv_bases)):
            scores[i] = AlleleScore(float(logp[k, b] - logp[k, r]), 0.0, "masked_marginal")
    return scores


def variant_effects(model, variants: str | Path | Iterable[Record | tuple], genome, context: int | None = None,
                    num_t: int = 8, strands: str = "auto", ref_mismatch: str = "refuse", match_names: bool = False,
                    batch_size: int = 64, chunk: int = 4096, seed: int = 0) -> Iterator[tuple[Allele, AlleleScore]]:
    """Score every allele of a VCF / TSV path or of records / (chrom, pos, ref, alt) tuples, streamed in chunks
    (bounded memory): yields (allele, score) in input order, multi-allelic records split. Every record is checked
    first (:func:`check_records`) when ``variants`` is a path. ``genome``: a path or an opened Genome.
    ``context`` defaults to (window - 1) // 2 of the model. Alleles skipped with ``ref_mismatch="skip"`` are not yielded.
    """

    genome = genome if isinstance(genome, Genome) else open_genome(genome)
    _, _, window = parts(model)
    context = (window - 1) // 2 if context is None else int(context)
    if context < 0:
        raise UserError(f"context {context} is negative: give the bp of genome on each side, e.g. 256")
    if isinstance(variants, (str, Path)):
        check_records(read_records(variants), genome, match_names, ref_mismatch)
        records: Iterable[Record] = read_records(variants)
    else:
        records = (r if isinstance(r, Record) else Record(n, str(r[0]), int(r[1]), str(r[2]).upper(),
                                                           tuple(str(r[3]).upper().split(",")))
                   for n, r in enumerate(variants, start=1))
    names = ContigNames(genome, match_names)
    buffer: list[Allele] = []
    for record in records:
        for allele in alleles_of(record, genome, names, ref_mismatch):
            if allele.status == "ref_mismatch" and ref_mismatch == "skip":
                continue
            buffer.append(allele)
        if len(buffer) >= chunk:
            yield from zip(buffer, score_alleles(model, genome, buffer, context, num_t, strands, batch_size, seed))
            buffer = []
    if buffer:
        yield from zip(buffer, score_alleles(model, genome, buffer, context, num_t, strands, batch_size, seed))


# ------------------------------------------------------------------------------------------- saturation
@dataclass
class Saturation:
    """In-silico saturation mutagenesis of a sequence of L bases: ``llr`` float64[L, 4] (nats, log p(b) - log p(ref)
    at each position, 0 at the reference base, NaN at N), ``sequence`` the L reference bases, ``chrom``/``start``
    (1-based first position; None and 1 for a sequence given directly)."""

    llr: np.ndarray
    sequence: str
    chrom: str | None = None
    start: int = 1

    def to_tsv(self) -> str:
        """One row per position: chrom, pos, ref, then the four LLRs (A, C, G, T)."""
        lines = ["chrom\tpos\tref\tA\tC\tG\tT"]
        for i, base in enumerate(self.sequence):
            vals = "\t".join("nan" if math.isnan(v) else f"{v:.6g}" for v in self.llr[i])
            lines.append(f"{self.chrom or '.'}\t{self.start + i}\t{base}\t{vals}")
        return "\n".join(lines) + "\n"


def parse_region(region: str) -> tuple[str, int, int]:
    """``chr:start-end`` (1-based, inclusive; commas allowed) -> (chrom, start, end)."""
    try:
        chrom, span = region.rsplit(":", 1)
        start, end = (int(v.replace(",", "")) for v in span.split("-"))
    except ValueError:
        raise UserError(f"region {region!r} is not chr:start-end: write it like chr2:100000-100200 (1-based)") from None
    if start < 1 or end < start:
        raise UserError(f"region {region!r} is empty or starts before 1: give chr:start-end with 1 <= start <= end")
    return chrom, start, end


@torch.no_grad()
def saturation_mutagenesis(model, sequence: str | None = None, genome=None, region: str | None = None,
                           context: int | None = None, strands: str = "auto", batch_size: int = 64,
                           match_names: bool = False) -> Saturation:
    """All 3L single-base substitutions of a sequence, or of a genome region (its flanks as context): the
    masked-marginal LLR of each base at each position (L masked windows in ceil(L / batch_size) calls).

    Args: sequence: a DNA string, or genome (path or Genome) with region ``chr:start-end`` (1-based inclusive).
        context: bp on each side of each position (default (window - 1) // 2); windows stop at the sequence or
        contig ends.
    """
    denoiser, diffusion, window = parts(model)
    strands = resolve_strands(denoiser, strands)
    context = (window - 1) // 2 if context is None else int(context)
    if (sequence is None) == (region is None):
        raise UserError("give either a sequence or a genome region to saturate, not both")
    if sequence is not None:
        if not sequence:
            raise UserError("the sequence to saturate is empty: give at least one base")
        full, offset, chrom, first = sequence.upper(), 0, None, 1
        n = len(full)
    else:

        genome = genome if isinstance(genome, Genome) else open_genome(genome)
        chrom, start, end = parse_region(region)
        contig = ContigNames(genome, match_names)(chrom, f"region {region}")
        length = int(genome.lengths[genome.contig_index(contig)])
        if end > length:
            raise UserError(f"region {region} ends past contig {contig} (length {length:,}): shorten the region")
        lo, hi = _span(length, start - 1, end, context)
        full = genome.fetch_bytes(contig, lo, hi).decode("ascii").upper()
        offset, first, n = start - 1 - lo, start, end - start + 1
    tokens = encode(full)
    items, rows = [], []
    for i in range(n):
        p = offset + i
        if int(tokens[p]) >= NUM_BASES:
            continue
        lo, hi = _span(len(full), p, p + 1, context)
        items.append((tokens[lo:hi], p - lo))
        rows.append(i)
    llr = np.full((n, NUM_BASES), math.nan)
    if items:
        logp = _marginals(denoiser, diffusion, items, strands, batch_size).numpy()
        ref_ids = tokens[[offset + i for i in rows]].numpy()
        llr[rows] = logp - logp[np.arange(len(rows)), ref_ids][:, None]
    return Saturation(llr, full[offset : offset + n], chrom, first)


def heatmap(sat: Saturation, path: str | Path) -> bool:
    """Write a positions x bases heatmap PNG of a saturation matrix (reference bases marked with dots), atomically.
    Returns False (writing nothing) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    import io


    L = len(sat.sequence)
    fig, ax = plt.subplots(figsize=(min(2 + L * 0.12, 40), 2.6))
    lim = np.nanmax(np.abs(sat.llr)) if np.isfinite(sat.llr).any() else 1.0
    im = ax.imshow(sat.llr.T, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    for i, b in enumerate(sat.sequence):
        if b in _BASE_INDEX:
            ax.plot(i, _BASE_INDEX[b], "k.", markersize=3)
    ax.set_yticks(range(4), list("ACGT"))
    ax.set_xlabel(f"position ({sat.chrom}:{sat.start}-{sat.start + L - 1})" if sat.chrom else "position")
    fig.colorbar(im, ax=ax, label="log p(alt) - log p(ref) (nats)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, lambda handle: handle.write(buf.getvalue()))
    return True
