"""``dnadiff sample``: generate sequences from a checkpoint into a FASTA file, optionally with a quality report.

    dnadiff sample --checkpoint demo_out/model.pt --num 100 --length 1000 --out samples.fa
    dnadiff sample --checkpoint dhs.pt --num 200 --class K562 --guidance 2 --out k562.fa \\
        --report --real ../shared/data/dna_diffusion/K562_hESCT0_HepG2_GM12878_12k_sequences_per_group.txt.gz

``--real`` is a FASTA file (plain or gzip), a ``seq<TAB>label`` table with a header (Genomic
Benchmarks style; the label column is optional) or the DNA-Diffusion DHS table (then its test
split is the held-out set, its training split the memorisation reference and the classifier's
training data). Without ``--real`` the report holds only the figures that need no reference.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dnadiff.commands.devices import add_device_arguments, torch_device
from dnadiff.errors import UserError
from dnadiff.training.config import option

#: at most this many labelled real sequences train the report's k-mer classifier (a few seconds).
CLASSIFIER_TRAIN_SIZE = 10_000
#: a request estimated to take longer than this on the device is refused unless --force
MAX_ESTIMATED_SECONDS = 12 * 3600.0
#: progress lines are printed for requests estimated to take longer than this
PROGRESS_AFTER_SECONDS = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="model.pt, a pretraining .ckpt, an original Caduceus folder or a Hugging Face hub id")
    parser.add_argument("--download", action="store_true", help="fetch a hub id missing from the Hugging Face cache")
    parser.add_argument("--num", type=option("int", lo=1), required=True, help="number of sequences")
    parser.add_argument("--length", type=option("int", lo=1), default=None, help="bases per sequence (default: the template's length or the model's window)")
    parser.add_argument("--steps", type=option("int", lo=0), default=None, help="reverse steps per window (default: min(length, window))")
    parser.add_argument("--sampler", choices=("cached", "ancestral", "first-hitting", "remdm", "confidence"), default="cached",
                        help="cached/ancestral/first-hitting: exact; remdm: remasking (--remdm-strategy, --eta); "
                             "confidence: top-k by confidence (--block-length), not exact")
    parser.add_argument("--remdm-strategy", choices=("cap", "rescale", "loop"), default="loop")
    parser.add_argument("--eta", type=float, default=None, help="ReMDM remasking rate (default: the strategy's published one)")
    parser.add_argument("--block-length", type=option("int", lo=1), default=None, help="confidence sampler: semi-autoregressive block size")
    parser.add_argument("--temperature", type=option("float", lo=0, lo_open=True), default=1.0)
    parser.add_argument("--top-p", type=option("float", lo=0, hi=1, lo_open=True), default=1.0, help="nucleus sampling mass (1.0 = off)")
    parser.add_argument("--prefix", default=None, help="A/C/G/T bases kept at the start of every sequence")
    parser.add_argument("--template", default=None, help="a sequence whose N positions are generated (other bases kept)")
    parser.add_argument("--class", dest="class_name", default=None, help="class to generate (class-conditional checkpoints)")
    parser.add_argument("--guidance", type=option("float", lo=0), default=0.0, help="classifier-free guidance weight (needs --class)")
    parser.add_argument("--seed", type=option("int", lo=0, hi=2**63 - 1), default=None)
    parser.add_argument("--batch-size", type=option("int", lo=1, hi=65_536), default=256, help="sequences generated together")
    add_device_arguments(parser, training=False)
    parser.add_argument("--report", action="store_true", help="print quality metrics of the samples")
    parser.add_argument("--real", default=None, help="real held-out sequences for --report: FASTA, seq<TAB>label table or the DHS table")
    parser.add_argument("--train", default=None, help="training sequences for the memorisation check of --report (FASTA or table)")
    parser.add_argument("--out", required=True, help="output FASTA (written atomically; an existing file needs --force)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists; run a request estimated "
                                                                  "to take more than 12 hours on the device")


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


MAX_REFERENCE_PIECES = 256


def comparable_pieces(real: list[str], length: int, limit: int = MAX_REFERENCE_PIECES,
                      max_n_frac: float = 0.1) -> list[str]:
    """Real sequences cut to the generated length (a whole chromosome becomes windows), at most
    ``limit`` evenly spaced pieces, so the report compares like with like in bounded time. Pieces
    with more than ``max_n_frac`` non-A/C/G/T letters (assembly gaps) are left out, as the training
    windows leave them out: a run of N is no real sequence to compare generated DNA with."""
    pieces = [s[i:i + length] for s in real for i in range(0, max(1, len(s) - length + 1), length)]
    pieces = [p for p in pieces if p and sum(map(p.upper().count, "ACGT")) >= (1.0 - max_n_frac) * len(p)]
    if len(pieces) > limit:
        step = len(pieces) / limit
        pieces = [pieces[int(k * step)] for k in range(limit)]
    return pieces


def build_report(generator, seqs: list[str], class_name: str | None, reference: Reference | None,
                 train: list[str] | None) -> dict:
    """Quality figures of the generated ``seqs`` (see :func:`dnadiff.eval.sequence_metrics.report`)."""
    from dnadiff.eval.sequence_metrics import KmerClassifier, gc_fractions, report

    score = lambda s: generator.bits_per_base(s, class_name=class_name)  # noqa: E731
    if reference is None:
        bits = score(seqs)
        return {"num_generated": len(seqs), "gc_mean_generated": float(np.nanmean(gc_fractions(seqs))),
                "bits_per_base_generated": float(bits.mean())}
    train = train if train is not None else reference.train
    held_out = comparable_pieces(reference.held_out, max(len(s) for s in seqs))
    classifier = requested = None
    if class_name is not None and class_name in set(reference.label_names):
        names = sorted(set(reference.label_names))
        rng = np.random.default_rng(0)
        keep = rng.permutation(len(reference.labelled))[:CLASSIFIER_TRAIN_SIZE]
        classifier = KmerClassifier().fit([reference.labelled[i] for i in keep],
                                          [names.index(reference.label_names[i]) for i in keep])
        requested = [names.index(class_name)] * len(seqs)
    metrics = report(seqs, held_out, train=train, classifier=classifier, requested=requested, bits_per_base=score)
    from dnadiff.eval.field_metrics import flat_field_figures

    names = sorted(set(reference.label_names))
    metrics.update(flat_field_figures(seqs, held_out, reference.labelled, [names.index(n) for n in reference.label_names]))
    return metrics


def _print_report(metrics: dict) -> None:
    for key, value in metrics.items():
        if isinstance(value, dict):
            value = " ".join(f"k={k}:{v:.4f}" for k, v in value.items())
        elif isinstance(value, list):
            value = "[" + ", ".join(f"{v:.4f}" for v in value) + "]"
        elif isinstance(value, float):
            value = f"{value:.4f}"
        print(f"  {key:<26} {value}")


def sampler_options(args: argparse.Namespace) -> dict:
    """ReMDM / confidence options from the command line (checked before any work)."""
    from dnadiff.diffusion.confidence import ConfidenceOptions
    from dnadiff.diffusion.remdm import ReMDMOptions

    try:
        return {"remdm": ReMDMOptions(getattr(args, "remdm_strategy", "loop"), getattr(args, "eta", None)),
                "confidence": ConfidenceOptions(block_length=getattr(args, "block_length", None))}
    except ValueError as err:
        raise UserError(f"{err}: fix --eta / --block-length") from None


def estimate_request(generator, args, device) -> tuple[int, float]:
    """(denoiser calls at most, estimated seconds) of this request on ``device``; UserError when the estimate
    exceeds :data:`MAX_ESTIMATED_SECONDS` and ``--force`` is not given."""
    from dnadiff.progress import human, planned_calls, seconds_per_call

    length = requested_length(args, generator)
    steps = args.steps or min(length, generator.window)
    calls = planned_calls(args.num, length, steps, generator.window, args.batch_size)
    rows = min(args.batch_size, args.num) * (2 if args.guidance > 0 else 1)
    per_call = seconds_per_call(generator.denoiser, generator.diffusion.vocab_size, rows, min(length, generator.window),
                                generator.conditional, torch.device(device))
    estimate = calls * per_call
    if estimate > MAX_ESTIMATED_SECONDS and not args.force:
        raise UserError(f"this request needs up to {calls:,} denoiser calls, about {human(estimate)} on {device} "
                        f"({per_call * 1e3:.2f} ms each): lower --length, --num or --steps, use a GPU, "
                        f"or add --force to run it anyway")
    return calls, estimate


def requested_length(args: argparse.Namespace, generator) -> int:
    """Bases per generated sequence: --length, else the template's length, else the model's window."""
    return args.length or (len(args.template) if args.template else generator.window)


def run(args: argparse.Namespace) -> int:
    from dnadiff.generate import check_writable, load, write_fasta

    device = torch_device(args)  # a bad device option fails before any work
    check_writable(args.out, overwrite=args.force)
    sampler_options(args)
    reference = read_reference(args.real) if args.report and args.real else None
    train = read_reference(args.train, "--train").held_out if args.report and args.train else None
    generator = load(args.checkpoint, device=device, download=args.download)
    calls, estimate = estimate_request(generator, args, device)
    if reference is not None and not comparable_pieces(reference.held_out, requested_length(args, generator)):
        raise UserError(f"--real {args.real} has no stretch of {requested_length(args, generator)} bp that is "
                        f"not mostly N: give real sequences (not assembly gaps) to compare with")
    started = time.perf_counter()
    inner = generator.denoiser
    if estimate > PROGRESS_AFTER_SECONDS:
        from dnadiff.progress import CallProgress, human

        print(f"sampling: up to {calls:,} denoiser calls, about {human(estimate)}", file=sys.stderr, flush=True)
        generator.denoiser = CallProgress(inner, calls)
    try:
        seqs = generator.generate(
            args.num, length=args.length, steps=args.steps, sampler=args.sampler, temperature=args.temperature,
            top_p=args.top_p, prefix=args.prefix, template=args.template, class_name=args.class_name,
            guidance=args.guidance, seed=args.seed, batch_size=args.batch_size, **sampler_options(args),
        )
    finally:
        generator.denoiser = inner
    seconds = time.perf_counter() - started
    suffix = f"_{args.class_name}" if args.class_name else ""
    write_fasta(seqs, args.out, names=[f"sample_{i}{suffix}" for i in range(len(seqs))])
    stats = generator.last_stats
    print(f"wrote {len(seqs)} sequences of {stats['length']} bp to {args.out} "
          f"({stats['denoiser_calls']} denoiser calls, {seconds:.1f} s, {len(seqs) / seconds:.2f} sequences/s)")
    if args.report:
        metrics = build_report(generator, seqs, args.class_name, reference, train)
        print("report (generated vs real):" if reference else "report (no --real given: reference-free figures only):")
        _print_report(metrics)
        print(json.dumps(metrics, default=str))
    return 0
