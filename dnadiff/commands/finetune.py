"""``dnadiff finetune``: Genomic Benchmarks fine-tuning with 5-fold cross-validation and baselines.

    dnadiff finetune --task NAME [--data FILE.tsv | --genome FASTA --coordinates DIR | --cache DIR]
                     [--download] (--checkpoint CKPT | --from-scratch) [--model-size demo|470k]
                     [--folds 5] [--max-epochs N] [--protocol cv|caduceus] [--max-examples N]
                     [--seed S] --out DIR

Defaults come from ``configs/finetune/<task>.yaml``. Writes ``DIR/results.json`` and
``DIR/results.md`` only when the whole run succeeded.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "finetune"

#: --model-size choices (Caduceus-Ph presets of dnadiff.models.sizes): "470k" is the Caduceus
#: paper's Genomic Benchmarks model (d_model 118, 4 layers); "demo" a CPU-sized one.
MODEL_SIZES = ("demo", "470k")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="Genomic Benchmarks task (e.g. human_enhancers_cohn)")
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
    parser.add_argument("--folds", type=int, default=5, help="folds (cv) or seeds (caduceus); default 5")
    parser.add_argument("--max-epochs", type=int, help="override the config's epochs")
    parser.add_argument("--batch-size", type=int, help="override the config's batch size")
    parser.add_argument("--max-length", type=int, help="override the config's max length (longer sequences are cut)")
    parser.add_argument("--protocol", choices=("cv", "caduceus"), default="cv")
    parser.add_argument("--max-examples", type=int, help="subsample each split to at most N examples (quick runs)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the k-mer and CNN baselines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder for results.json and results.md")


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
    from dnadiff.models.sizes import caduceus_spec

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


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dnadiff.data.genomic_benchmarks import load_task, resolve_task
    from dnadiff.errors import UserError
    from dnadiff.finetune import protocol_splits, run_finetune, subsample
    from dnadiff.finetune.report import write_results

    console = Console(stderr=True)
    task, note = resolve_task(args.task)
    if note:
        console.print(f"note: {note}")
    for name in ("folds", "max_epochs", "batch_size", "max_examples", "max_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    config = load_config(task)
    if args.max_epochs:
        config.epochs = args.max_epochs
    if args.batch_size:
        config.batch_size = args.batch_size
    if args.max_length:
        config.max_length = args.max_length
    data = load_task(task, data=args.data, test_data=args.test_data, genome=args.genome,
                     coordinates=args.coordinates, cache=args.cache, download=args.download)
    data.train = subsample(data.train, args.max_examples, args.seed)
    if data.test is not None:
        data.test = subsample(data.test, args.max_examples, args.seed)
    splits = protocol_splits(data, args.protocol, args.folds, args.seed)  # user errors before any display
    make_classifier, variant, model_info = _classifier_factory(args, data.num_classes, config.pooling)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        runs = bar.add_task(f"{task} {args.protocol}", total=args.folds, status="")
        epochs = bar.add_task("epochs", total=config.epochs, status="")

        def progress(event: str, fold: int, epoch: int, value: float) -> None:
            if event == "fold":
                bar.update(runs, completed=fold, status=f"run {fold + 1}/{args.folds}")
                bar.reset(epochs, total=config.epochs)
                bar.update(epochs, status="")
            elif event == "epoch":
                bar.update(epochs, completed=epoch + 1, status=f"val acc {value:.3f}")
            elif event == "baselines":
                bar.update(epochs, status="baselines")

        results = run_finetune(data, make_classifier, config, variant, protocol=args.protocol,
                               folds=args.folds, seed=args.seed, baselines=() if args.no_baselines else ("kmer_logreg", "cnn"),
                               cnn_epochs=config.epochs, progress=progress, splits=splits)
        bar.update(runs, completed=args.folds, status="done")
    results["model"] = model_info
    results["max_examples"] = args.max_examples
    json_path, _ = write_results(args.out, results)
    acc = results["summary"]["accuracy"]
    base = "; ".join(f"{name} {b['summary']['accuracy']['mean']:.3f}" for name, b in results["baselines"].items())
    print(f"{task}: accuracy {acc['mean']:.3f} ± {_std(acc['std'])} over {len(results['folds'])} "
          f"{'folds' if args.protocol == 'cv' else 'seeds'} ({results['summary_scope']})"
          + (f"; baselines: {base}" if base else "") + f"; results in {json_path}", file=sys.stdout)
    return 0


def _std(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"
