"""``dnadiff finetune``: Genomic Benchmarks fine-tuning with 5-fold cross-validation and baselines.

    dnadiff finetune --task NAME [--data FILE.tsv | --genome FASTA --coordinates DIR | --cache DIR]
                     [--download] (--checkpoint CKPT | --from-scratch) [--model-size demo|470k]
                     [--folds 5] [--max-epochs N] [--protocol cv|caduceus] [--max-examples N]
                     [--seed S] [--fold K] [--micro-batch N] [--accelerator auto|cpu|gpu] [--devices N]
                     [--precision P] [--strategy S] [--force] --out DIR
    dnadiff finetune --aggregate DIR

Defaults come from ``configs/finetune/<task>.yaml``. Each fold writes ``DIR/fold_K.json`` (atomically) when
it completes; the whole run then writes ``DIR/results.json`` and ``DIR/results.md``. With ``--fold K``
only fold K runs (one job of a SLURM array); ``--aggregate DIR`` merges the fold files into the results.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

from dnadiff.commands.devices import add_device_arguments
from dnadiff.training.config import option

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "finetune"

#: --model-size choices (Caduceus-Ph presets of dnadiff.models.config.CaduceusConfig): "470k" is the Caduceus
#: paper's Genomic Benchmarks model (d_model 118, 4 layers); "demo" a CPU-sized one.
MODEL_SIZES = ("demo", "470k")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", help="Genomic Benchmarks task (e.g. human_enhancers_cohn)")
    src = parser.add_argument_group("data source (one of)")
    src.add_argument("--data", help="TSV/CSV with sequence and label columns (the train split)")
    src.add_argument("--test-data", help="optional TSV/CSV test split to go with --data")
    src.add_argument("--genome", help="reference FASTA for --coordinates (plain or bgzip)")
    src.add_argument("--coordinates", help="folder with <task>/{train,test}/<class>.csv.gz")
    src.add_argument("--cache", help="genomic-benchmarks cache folder (default: the package's ~/.genomic_benchmarks)")
    src.add_argument("--download", action="store_true", help="download the task (and a hub --checkpoint) if missing (network)")
    init = parser.add_mutually_exclusive_group()
    init.add_argument("--checkpoint", help="dnadiff model.pt / .ckpt, an original Caduceus folder "
                      "(config.json + model.safetensors or pytorch_model.bin) or a Hugging Face hub id")
    init.add_argument("--from-scratch", action="store_true", help="randomly initialised backbone")
    parser.add_argument("--model-size", choices=MODEL_SIZES, help="backbone size (default 470k from scratch)")
    parser.add_argument("--folds", type=option("int", lo=1, hi=100), default=5, help="folds (cv) or seeds (caduceus); default 5")
    parser.add_argument("--max-epochs", type=option("int", lo=1), help="override the config's epochs")
    parser.add_argument("--batch-size", type=option("int", lo=1, hi=65_536), help="override the config's batch size")
    parser.add_argument("--max-length", type=option("int", lo=1), help="override the config's max length (longer sequences are cut)")
    parser.add_argument("--protocol", choices=("cv", "caduceus"), default="cv")
    parser.add_argument("--max-examples", type=option("int", lo=1), help="subsample each split to at most N examples (quick runs)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the k-mer and CNN baselines")
    parser.add_argument("--seed", type=option("int", lo=0, hi=2**32 - 1), default=0)
    parser.add_argument("--micro-batch", type=option("int", lo=1, hi=65_536), help="sequences per forward/backward (gradient accumulation up to "
                        "the batch size); default bounded by memory")
    parser.add_argument("--fold", type=option("int", lo=0, hi=99), help="run only fold (or seed) K, 0-based, writing OUT/fold_K.json")
    parser.add_argument("--aggregate", metavar="DIR", help="merge DIR/fold_*.json into DIR/results.json and results.md")
    parser.add_argument("--force", action="store_true", help="overwrite results already in --out")
    parser.add_argument("--out", help="output folder for fold_K.json, results.json and results.md")
    add_device_arguments(parser)


def load_config(task: str, config_dir: Path = CONFIG_DIR):
    """:class:`FinetuneConfig` from ``configs/finetune/<task>.yaml``."""
    import yaml

    from dnadiff.errors import UserError
    from dnadiff.finetune.trainer import FinetuneConfig

    path = config_dir / f"{task}.yaml"
    if not path.is_file():
        raise UserError(f"no fine-tuning config {path}: restore configs/finetune/ from the repository")
    values = yaml.safe_load(path.read_text()) or {}
    known = {k: v for k, v in values.items() if k in FinetuneConfig.__dataclass_fields__ and k != "extra"}
    return FinetuneConfig(**known, extra={k: v for k, v in values.items() if k not in known})


def _classifier_factory(args, num_classes: int, pooling: str):
    """(make_classifier, variant, model description) from --checkpoint / --from-scratch / --model-size."""
    from dnadiff.errors import UserError
    from dnadiff.finetune import trainer

    if not args.checkpoint and not args.from_scratch:
        raise UserError("say where the backbone comes from: --checkpoint CKPT or --from-scratch")
    from dnadiff.models.config import caduceus_spec

    size = caduceus_spec(args.model_size, variant="ph") if args.model_size else None
    if args.checkpoint:
        backbone, spec = trainer.backbone_from_checkpoint(args.checkpoint, size, download=args.download)
        init = f"checkpoint {args.checkpoint}"

        def fresh_backbone():
            return copy.deepcopy(backbone)
    else:
        spec = size or caduceus_spec("470k", variant="ph")
        backbone = trainer.backbone_from_scratch(spec)
        init = "from scratch"

        def fresh_backbone():
            return trainer.backbone_from_scratch(spec)
    variant = trainer.rc_variant(backbone)
    params = sum(p.numel() for p in backbone.parameters())
    description = f"{spec.get('name', 'caduceus')}-{variant} d_model {spec.get('d_model')} x {spec.get('n_layer')} layers ({params:,} parameters), {init}"

    def make_classifier():
        return trainer.build_classifier(fresh_backbone(), num_classes, pooling)

    return make_classifier, variant, {"spec": spec, "variant": variant, "init": init,
                                      "parameters": params, "description": description}


def check_out(out: str, fold: int | None, force: bool) -> Path:
    """UserError, before any work, when ``out`` cannot take this run's results: an existing file, a folder
    that cannot be created or written, or (without ``force``) one holding results of a run (the fold's own
    file for ``--fold K``; any results or fold file otherwise). Creates nothing."""
    import os

    from dnadiff.errors import UserError

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is an existing file: give a folder for the results")
    existing = path if path.is_dir() else next((p for p in path.parents if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {path} cannot be written ({existing} is not a writable folder): choose another --out")
    if path.is_dir() and not force:
        from dnadiff.finetune.report import fold_path

        held = [fold_path(path, fold)] if fold is not None else \
            [path / "results.json", path / "results.md", *sorted(path.glob("fold_*.json"))]
        held = [p for p in held if p.exists()]
        if held:
            raise UserError(f"--out {path} already holds results ({held[0].name}): choose another --out, "
                            "or add --force to overwrite them")
    return path


def run(args: argparse.Namespace) -> int:
    from dnadiff.errors import UserError

    if args.aggregate:
        return aggregate_command(args.aggregate)
    if not args.task or not args.out:
        raise UserError("give --task NAME and --out DIR (or --aggregate DIR to merge fold files)")
    return finetune_command(args)


def aggregate_command(folder: str) -> int:
    """``--aggregate DIR``: fold files -> results.json / results.md (atomically), one summary line."""
    from dnadiff.finetune.report import aggregate, write_results

    results = aggregate(folder)
    json_path, _ = write_results(folder, results)
    _print_summary(results, json_path)
    return 0


def finetune_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dnadiff.commands.devices import lightning_device_kwargs
    from dnadiff.data.genomic_benchmarks import load_task, resolve_task
    from dnadiff.errors import UserError
    from dnadiff.finetune import protocol_splits, run_finetune, run_header, subsample
    from dnadiff.finetune.batches import small_data_batch
    from dnadiff.finetune.report import write_fold, write_results

    console = Console(stderr=True)
    for name in ("folds", "max_epochs", "batch_size", "max_examples", "max_length", "micro_batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.fold is not None and not 0 <= args.fold < args.folds:
        raise UserError(f"--fold {args.fold} is outside 0..{args.folds - 1} (--folds {args.folds}): give a fold in that range")
    device = lightning_device_kwargs(args)
    out = check_out(args.out, args.fold, args.force)
    task, note = resolve_task(args.task)
    if note:
        console.print(f"note: {note}")
    config = load_config(task)
    if args.max_epochs:
        config.epochs = args.max_epochs
    if args.batch_size:
        config.batch_size = args.batch_size
    if args.max_length:
        config.max_length = args.max_length
    if args.micro_batch:
        config.micro_batch = args.micro_batch
    data = load_task(task, data=args.data, test_data=args.test_data, genome=args.genome,
                     coordinates=args.coordinates, cache=args.cache, download=args.download)
    data.train = subsample(data.train, args.max_examples, args.seed)
    if data.test is not None:
        data.test = subsample(data.test, args.max_examples, args.seed)
    splits = protocol_splits(data, args.protocol, args.folds, args.seed)  # user errors before any display
    make_classifier, variant, model_info = _classifier_factory(args, data.num_classes, config.pooling)
    notes = []
    fold_train = min(len(tr) for tr, _ in splits)
    if not args.batch_size:
        batch = small_data_batch(fold_train, config.batch_size)
        if batch != config.batch_size:
            notes.append(f"{fold_train} training examples per fold give {math.ceil(fold_train / config.batch_size)} "
                         f"optimizer step(s) per epoch at batch {config.batch_size}: batch lowered to {batch} "
                         f"({math.ceil(fold_train / batch)} steps per epoch); --batch-size overrides")
            console.print(f"note: {notes[-1]}")
            config.batch_size = batch
    header = run_header(data, config, args.protocol, args.folds, args.seed)
    header["max_examples"] = args.max_examples
    if args.force and args.fold is None:  # a full rerun replaces the folder's earlier results
        for stale in [*out.glob("fold_*.json"), out / "results.json", out / "results.md"]:
            stale.unlink(missing_ok=True)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        total_runs = 1 if args.fold is not None else args.folds
        runs = bar.add_task(f"{task} {args.protocol}", total=total_runs, status="")
        epochs = bar.add_task("epochs", total=config.epochs, status="")
        done = []

        def progress(event: str, fold: int, epoch: int, value: float) -> None:
            if event == "fold":
                bar.update(runs, completed=len(done), status=f"run {fold + 1}/{args.folds}")
                bar.reset(epochs, total=config.epochs)
                bar.update(epochs, status="")
            elif event == "epoch":
                bar.update(epochs, completed=epoch + 1, status=f"val acc {value:.3f}")
            elif event == "baselines":
                bar.update(epochs, status="baselines")

        def on_fold(run: dict) -> None:
            if _rank() == 0:  # with --strategy ddp every process runs the fold; one writes it
                done.append(write_fold(out, header, model_info, run, notes))

        run_finetune(data, make_classifier, config, variant, protocol=args.protocol, folds=args.folds,
                     seed=args.seed, baselines=() if args.no_baselines else ("kmer_logreg", "cnn"),
                     cnn_epochs=config.epochs, progress=progress, splits=splits, only=args.fold, device=device,
                     on_fold=on_fold)
        bar.update(runs, completed=total_runs, status="done")
    if _rank() != 0:
        return 0
    if args.fold is not None:
        import json

        run = json.loads(done[0].read_text())["run"]
        acc = (run["model"] or {}).get("accuracy")
        print(f"{task}: fold {args.fold} accuracy {'n/a' if acc is None else f'{acc:.3f}'}; wrote {done[0]} "
              f"(merge the folds with `dnadiff finetune --aggregate {out}`)", file=sys.stdout)
        return 0
    from dnadiff.finetune.report import aggregate

    results = aggregate(out)  # the fold files just written: the same merge a SLURM array uses
    json_path, _ = write_results(out, results)
    _print_summary(results, json_path)
    return 0


def _rank() -> int:
    """Global rank of this process in a multi-process (DDP) run, 0 otherwise."""
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def _print_summary(results: dict, json_path) -> None:
    acc = results["summary"]["accuracy"]
    base = "; ".join(f"{name} {b['summary']['accuracy']['mean']:.3f}" for name, b in results["baselines"].items())
    runs = "folds" if results["protocol"] == "cv" else "seeds"
    head = (f"accuracy {acc['mean']:.3f} ± {_std(acc['std'])} over {len(results['folds'])} {runs}"
            if results["folds"] else "baselines only")
    print(f"{results['task']}: {head} ({results['summary_scope']})"
          + (f"; baselines: {base}" if base else "") + f"; results in {json_path}", file=sys.stdout)


def _std(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"
