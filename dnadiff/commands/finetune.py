"""``dnadiff finetune``: Genomic Benchmarks fine-tuning with 5-fold cross-validation and baselines
(:func:`dnadiff.finetune`; ``--aggregate``: :func:`dnadiff.aggregate`).

    dnadiff finetune --task NAME [--data FILE.tsv | --genome FASTA --coordinates DIR | --cache DIR]
                     [--download] (--checkpoint CKPT | --from-scratch) [--model-size demo|470k]
                     [--folds 5] [--max-epochs N] [--protocol cv|caduceus] [--max-examples N]
                     [--seed S] [--fold K] [--micro-batch N] [--save-model] [--accelerator auto|cpu|gpu]
                     [--devices N] [--precision P] [--strategy S] [--force] --out DIR
    dnadiff finetune --aggregate DIR
"""
from __future__ import annotations

import argparse

from dnadiff.commands.devices import add_device_arguments, device_options
from dnadiff.errors import UserError
from dnadiff.keys import option

MODEL_SIZES = ("demo", "470k")  # dnadiff.finetuning.run.MODEL_SIZES (not imported: --help stays fast)


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
    parser.add_argument("--selection", choices=("inner", "held-out"), default="inner", help="cv epoch selection: "
                        "inner (default: a validation split of the training folds) or held-out (the papers' choice, optimistic)")
    parser.add_argument("--max-examples", type=option("int", lo=1), help="subsample each split to at most N examples (quick runs)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the k-mer and CNN baselines")
    parser.add_argument("--seed", type=option("int", lo=0, hi=2**32 - 1), default=0)
    parser.add_argument("--micro-batch", type=option("int", lo=1, hi=65_536), help="sequences per forward/backward (gradient accumulation up to "
                        "the batch size); default bounded by memory")
    parser.add_argument("--fold", type=option("int", lo=0, hi=99), help="run only fold (or seed) K, 0-based, writing OUT/fold_K.json")
    parser.add_argument("--noisy", action="store_true", help="train on sequences masked at a random level: a guide "
                        "for `sample --guide` valid at every step")
    parser.add_argument("--save-model", action="store_true", help="write OUT/classifier_fold_K.pt (each fold's selected "
                        "classifier; dnadiff.load reads it, predict_proba scores new sequences)")
    parser.add_argument("--aggregate", metavar="DIR", help="merge DIR/fold_*.json into DIR/results.json and results.md")
    parser.add_argument("--force", action="store_true", help="overwrite results already in --out")
    parser.add_argument("--out", help="output folder for fold_K.json, results.json and results.md")
    add_device_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from dnadiff.finetuning.run import aggregate, finetune, rank

    if args.aggregate:
        print(aggregate(args.aggregate).summary())
        return 0
    if not args.task or not args.out:
        raise UserError("give --task NAME and --out DIR (or --aggregate DIR to merge fold files)")
    result = finetune(args.task, out=args.out, data=args.data, test_data=args.test_data, genome=args.genome,
                      coordinates=args.coordinates, cache=args.cache, download=args.download, checkpoint=args.checkpoint,
                      from_scratch=args.from_scratch, model_size=args.model_size, folds=args.folds,
                      max_epochs=args.max_epochs, batch_size=args.batch_size, max_length=args.max_length,
                      protocol=args.protocol, selection=args.selection, max_examples=args.max_examples, baselines=not args.no_baselines,
                      seed=args.seed, micro_batch=args.micro_batch, fold=args.fold, force=args.force,
                      save_model=args.save_model, noisy=args.noisy, **device_options(args))
    if rank() == 0:
        print(result.summary())
    return 0
