"""``dnadiff sample``: generate sequences from a checkpoint into a FASTA file, optionally with a quality report
(:meth:`dnadiff.DNAModel.generate`, :func:`dnadiff.eval.sample_report.build_report`).

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
import json
import sys
import time

from dnadiff.commands.devices import add_device_arguments, torch_device
from dnadiff.errors import UserError
from dnadiff.plots import report_plot
from dnadiff.provenance import draw_seed, fasta_description, write_provenance
from dnadiff.keys import option
from dnadiff.config import SampleConfig

#: the sampling options' types, bounds and defaults (the config tree's ``sample`` section)
SAMPLE = SampleConfig.keys()

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
    parser.add_argument("--steps", type=option(SAMPLE["steps"]), default=SAMPLE["steps"].default, help="reverse steps per window (default: min(length, window))")
    parser.add_argument("--sampler", choices=SAMPLE["sampler"].choices, default=SAMPLE["sampler"].default,
                        help="cached/ancestral/first-hitting: exact; remdm: remasking (--remdm-strategy, --eta); "
                             "confidence: top-k by confidence (--block-length), not exact")
    parser.add_argument("--remdm-strategy", choices=SAMPLE["remdm_strategy"].choices, default=SAMPLE["remdm_strategy"].default)
    parser.add_argument("--eta", type=float, default=None, help="ReMDM remasking rate (default: the strategy's published one)")
    parser.add_argument("--block-length", type=option(SAMPLE["block_length"]), default=SAMPLE["block_length"].default, help="confidence sampler: semi-autoregressive block size")
    parser.add_argument("--temperature", type=option(SAMPLE["temperature"]), default=SAMPLE["temperature"].default)
    parser.add_argument("--top-p", type=option(SAMPLE["top_p"]), default=SAMPLE["top_p"].default, help="nucleus sampling mass (1.0 = off)")
    parser.add_argument("--prefix", default=None, help="A/C/G/T bases kept at the start of every sequence")
    parser.add_argument("--template", default=None, help="a sequence whose N positions are generated (other bases kept)")
    parser.add_argument("--class", dest="class_name", default=None, help="class to generate (class-conditional checkpoints)")
    parser.add_argument("--guidance", type=option(SAMPLE["guidance"]), default=SAMPLE["guidance"].default, help="classifier-free guidance weight (needs --class)")
    parser.add_argument("--seed", type=option(SAMPLE["seed"]), default=SAMPLE["seed"].default)
    parser.add_argument("--batch-size", type=option(SAMPLE["batch_size"]), default=SAMPLE["batch_size"].default, help="sequences generated together")
    parser.add_argument("--guide", default=None, help="classifier guidance: a classifier_fold_K.pt from "
                        "`dnadiff finetune --save-model` (--noisy for one valid at every step)")
    parser.add_argument("--target", default=None, help="the guide's class to design toward")
    parser.add_argument("--gamma", type=option(SAMPLE["gamma"]), default=SAMPLE["gamma"].default, help="classifier guidance strength")
    parser.add_argument("--guide-form", choices=SAMPLE["guide_form"].choices, default=SAMPLE["guide_form"].default,
                        help="exact: the classifier on the 4 bases of every revealed position; first-order: one gradient per step")
    parser.add_argument("--oracle", default=None, help="--report: an independent classifier (trained on data disjoint "
                        "from the guide's) scoring the designs beside unguided samples and CFG")
    add_device_arguments(parser, training=False)
    parser.add_argument("--report", action="store_true", help="print quality metrics of the samples")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line instead of a table")
    parser.add_argument("--real", default=None, help="real held-out sequences for --report: FASTA, seq<TAB>label table or the DHS table")
    parser.add_argument("--train", default=None, help="training sequences for the memorisation check of --report (FASTA or table)")
    parser.add_argument("--out", required=True, help="output FASTA (written atomically; an existing file needs --force)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists; run a request estimated "
                                                                  "to take more than 12 hours on the device")


def _print_report(metrics: dict) -> None:
    for key, value in metrics.items():
        if isinstance(value, dict):
            value = " ".join(f"k={k}:{v:.4f}" for k, v in value.items())
        elif isinstance(value, list):
            value = "[" + ", ".join(f"{v:.4f}" for v in value) + "]"
        elif isinstance(value, float):
            value = f"{value:.4f}"
        print(f"  {key:<26} {value}")


def run(args: argparse.Namespace) -> int:
    from dnadiff.data.reference import read_reference
    from dnadiff.design import guide_fill
    from dnadiff.diffusion import SampleStats
    from dnadiff.eval.sample_report import build_report, comparable_pieces
    from dnadiff.finetuning.classifier import Classifier
    from dnadiff.generate import check_writable, load, sampler_options, write_fasta
    from dnadiff.progress import CallProgress, human

    device = torch_device(args)  # a bad device option fails before any work
    check_writable(args.out, overwrite=args.force)
    options = sampler_options(args.remdm_strategy, args.eta, args.block_length, args.sampler)
    reference = read_reference(args.real) if args.report and args.real else None
    train = read_reference(args.train, "--train").held_out if args.report and args.train else None
    model = load(args.checkpoint, device=device, download=args.download)
    guide = Classifier.load(args.guide) if args.guide else None  # refuses a file that is not a saved classifier
    oracle = Classifier.load(args.oracle) if args.oracle and args.report else None
    if args.target is not None and guide is None and oracle is None:
        raise UserError("--target needs --guide (or --report --oracle): give the classifier to design toward")
    if oracle is not None and args.target is None:
        raise UserError("--oracle needs --target: name the class the oracle should score")
    guided = dict(guide=guide, target=args.target, gamma=args.gamma, guide_form=args.guide_form) if guide else {}
    length = args.length or (len(args.template) if args.template else model.window)
    calls, estimate = model.estimate(args.num, length, args.steps, args.batch_size, args.guidance)
    if estimate > MAX_ESTIMATED_SECONDS and not args.force:
        raise UserError(f"this request needs up to {calls:,} denoiser calls, about {human(estimate)} on {device} "
                        f"({estimate / calls * 1e3:.2f} ms each): lower --length, --num or --steps, use a GPU, "
                        f"or add --force to run it anyway")
    if reference is not None and not comparable_pieces(reference.held_out, length):
        raise UserError(f"--real {args.real} has no stretch of {length} bp that is not mostly N: give real "
                        "sequences (not assembly gaps) to compare with")
    seed = args.seed if args.seed is not None else draw_seed()
    started = time.perf_counter()
    inner = model.denoiser
    stats = SampleStats()
    if estimate > PROGRESS_AFTER_SECONDS:
        print(f"sampling: up to {calls:,} denoiser calls, about {human(estimate)}", file=sys.stderr, flush=True)
        model.denoiser = CallProgress(inner, calls)
    try:
        seqs = model.generate(args.num, length=args.length, steps=args.steps, sampler=args.sampler,
                              temperature=args.temperature, top_p=args.top_p, prefix=args.prefix,
                              template=args.template, class_name=args.class_name, guidance=args.guidance,
                              seed=seed, batch_size=args.batch_size, stats=stats, **options, **guided)
    finally:
        model.denoiser = inner
    seconds = time.perf_counter() - started
    suffix = f"_{args.class_name}" if args.class_name else ""
    description = fasta_description(args.checkpoint, args.sampler, stats.steps, seed, args.class_name,
                                    args.guidance, temperature=args.temperature if args.temperature != 1.0 else None,
                                    top_p=args.top_p if args.top_p != 1.0 else None)
    write_fasta(seqs, args.out, names=[f"sample_{i}{suffix} {description}" for i in range(len(seqs))])
    write_provenance(f"{args.out}.provenance.json", config={**vars(args), "seed": seed, "length": length,
                     "steps": stats.steps}, device=device)
    if args.seed is None:  # said once the run succeeded (a refused request prints only its error)
        print(f"seed {seed} (drawn; --seed {seed} repeats this run)", file=sys.stderr, flush=True)
    print(f"wrote {len(seqs)} sequences of {length} bp to {args.out} "
          f"({stats.denoiser_calls} denoiser calls, {seconds:.1f} s, {len(seqs) / seconds:.2f} sequences/s)")
    if guide is not None:
        print(f"guided toward {args.target} (gamma {args.gamma}, {args.guide_form}, fill {guide_fill(guide)}): "
              f"{stats.classifier_calls} classifier calls, {stats.classifier_rows} rows")
    if args.report:
        metrics = build_report(model, seqs, args.class_name, reference, train)
        if oracle is not None:
            from dnadiff.design import oracle_comparison

            same = dict(length=args.length, steps=args.steps, sampler=args.sampler, temperature=args.temperature,
                        top_p=args.top_p, prefix=args.prefix, template=args.template, class_name=args.class_name,
                        guidance=args.guidance, seed=seed, batch_size=args.batch_size, **options)
            for group, figures in oracle_comparison(model, oracle, seqs, args.target, same).items():
                metrics.update({f"{group}_{k}": v for k, v in figures.items()})
        picture = report_plot(metrics, f"{args.out}.report.png")
        if args.json:
            print(json.dumps(metrics, default=str))
        else:
            print("report (generated vs real):" if reference else "report (no --real given: reference-free figures only):")
            _print_report(metrics)
        if picture is not None:
            print(f"figure -> {picture}", file=sys.stderr)
    return 0
