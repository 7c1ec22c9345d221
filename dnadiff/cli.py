"""The `dnadiff` command line: ``dnadiff {pretrain,evaluate,finetune,sample,export} ...``.

Each sub-command lives in ``dnadiff/commands/<name>.py``: it parses its options, calls the library
(:mod:`dnadiff`'s public API) and prints. The library imports torch and Lightning only when a command runs,
so ``dnadiff --help`` is fast. User errors (:class:`dnadiff.errors.UserError`) become one line on stderr
and exit code 2, a library :class:`~dnadiff.errors.ParameterError` naming the option instead of the
parameter (``batch_size=0 ...`` -> ``--batch-size 0 ...``); nothing else is caught.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from dnadiff.version import __version__
from dnadiff.errors import ParameterError, UserError

COMMANDS = {
    "pretrain": "Pretrain a masked-diffusion model on a genome (or text / images).",
    "evaluate": "Held-out NELBO, bits per token and perplexity of a checkpoint, beside a Markov baseline.",
    "finetune": "Fine-tune on a Genomic Benchmarks task with 5-fold cross-validation.",
    "sample": "Generate sequences from a checkpoint (unconditional, infilling, class-conditional).",
    "export": "Write a model in the original Caduceus Hugging Face format (config.json + model.safetensors).",
    "score": "Per-sequence NELBO bits/base (and per-position masked log-probabilities) of sequences.",
    "embed": "Reverse-complement-invariant sequence embeddings (.npy + ids) from a checkpoint.",
    "variants": "Zero-shot variant effects (VCF/TSV + genome) and in-silico saturation mutagenesis.",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line (``dnadiff sample: error: ...``), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="dnadiff", description="Masked discrete diffusion on DNA.")
    parser.add_argument("--version", action="version", version=f"dnadiff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=f"dnadiff.commands.{name}")
        _load(name).add_arguments(p)
        p.add_argument("--verbose", action="store_true",
                       help="show the frameworks' messages too (Lightning banners, device lines)")
    return parser


def _load(name: str):
    return importlib.import_module(f"dnadiff.commands.{name}")


def as_option(err: UserError, flags: dict[str, str] | None = None) -> str:
    """The message of a library error in the CLI's terms: a :class:`ParameterError`'s leading ``name=value``
    becomes ``--name value`` (``flags`` maps parameters whose option has another name, e.g. class_name -> --class)."""
    message = str(err)
    if isinstance(err, ParameterError) and message[len(err.parameter):][:1] in ("=", " ") \
            and message.startswith(err.parameter):
        flag = (flags or {}).get(err.parameter, "--" + err.parameter.replace("_", "-"))
        message = f"{flag} {message[len(err.parameter) + 1:]}"
    return message


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may sit anywhere among the options
    overrides = [x for x in extra if "=" in x and not x.startswith("-")]
    leftover = [x for x in extra if x not in overrides]
    if leftover or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(leftover or overrides)}")
    if overrides:
        args.overrides = list(args.overrides or []) + overrides
    from dnadiff.logs import configure

    configure(verbose=args.verbose)
    from dnadiff.provenance import set_command

    set_command(["dnadiff", *(sys.argv[1:] if argv is None else argv)])  # what provenance.json records
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except UserError as err:
        print(f"dnadiff {args.command}: error: {as_option(err, getattr(module, 'FLAGS', None))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"dnadiff {args.command}: interrupted" + (f" {stop}" if str(stop) else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
