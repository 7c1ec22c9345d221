"""`dnadiff pretrain`: masked-diffusion pretraining (:func:`dnadiff.pretrain`) with Lightning (CPU, GPU, DDP, FSDP).

    dnadiff pretrain --genome hg38.fa [--config 470k] [--bed FILE] [--out DIR] [--max-steps N]
                     [--devices N] [--strategy ddp|fsdp] [--resume [CKPT]] [key=value ...]
    dnadiff pretrain --text FILE --config text8_tiny      # or --images digits|CIFAR_DIR
"""
from __future__ import annotations

from pathlib import Path

from dnadiff.commands.devices import add_device_arguments, device_options
from dnadiff.keys import option


def add_arguments(p) -> None:
    src = p.add_argument_group("data source (exactly one)")
    src.add_argument("--genome", help="genome FASTA, plain or bgzip (a .fai is built if missing)")
    src.add_argument("--dhs", help="class-labelled DHS sequences (DNA-Diffusion format) for conditional pretraining")
    src.add_argument("--text", help="a UTF-8 text file (character or byte level, see data.text_level)")
    src.add_argument("--images", help="'digits' (scikit-learn's bundled 8x8 digits) or a CIFAR-10 python batches folder")
    p.add_argument("--config", help="YAML config path or a name in configs/pretrain/ "
                                    "(default: 470k for DNA, dhs_conditional for --dhs, text8_tiny for text, digits_tiny for images); "
                                    "every key, its default and allowed range: configs/README.md")
    p.add_argument("--bed", help="BED of usable intervals: chrom start end [split]")
    p.add_argument("--val-contigs", help="comma-separated held-out validation contigs")
    p.add_argument("--test-contigs", help="comma-separated held-out test contigs")
    p.add_argument("--decompress", action="store_true",
                   help="for a plain-gzip FASTA: decompress it once into a cache instead of failing")
    p.add_argument("--out", default="runs/pretrain", help="output directory (default runs/pretrain)")
    p.add_argument("--max-steps", type=option("int", lo=1), help="training steps (overrides train.max_steps)")
    p.add_argument("--seed", type=option("int", lo=0, hi=2**63 - 1), help="random seed (overrides train.seed)")
    add_device_arguments(p)  # --accelerator, --devices, --precision (overrides train.precision), --strategy
    p.add_argument("--num-nodes", type=option("int", lo=1, hi=100_000), default=1, help="nodes for multi-node training")
    p.add_argument("--resume", nargs="?", const="last", help="resume from a checkpoint (default OUT/checkpoints/last.ckpt)")
    p.add_argument("--force", action="store_true", help="start over in an --out folder that holds a previous run "
                                                             "(its checkpoints and metrics log are removed); run a CPU "
                                                             "job estimated to take more than 12 hours")
    p.add_argument("--init", help="start from a model: an original Caduceus folder or hub id (MDLM's generative "
                                  "fine-tuning of the MLM; architecture from its config) or a dnadiff model.pt")
    p.add_argument("--download", action="store_true", help="fetch an --init hub id missing from the Hugging Face cache")
    p.add_argument("--no-progress", action="store_true", help="no progress bar: a plain line every 30 s and after each "
                   "validation (the default when the output is no terminal)")
    p.add_argument("--logger", choices=("csv", "tensorboard", "wandb"), default="csv", help="metrics logger "
                   "(OUT/logs/metrics.csv is always written; tensorboard: OUT/tensorboard; wandb: Weights & Biases)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-3 data.window=512")


def run(args) -> int:
    from dnadiff.training.pretrain import launching_process, pretrain

    if args.resume and "=" in args.resume and not Path(args.resume).exists():  # `--resume key=value ...`
        args.overrides = [args.resume, *(args.overrides or [])]
        args.resume = "last"
    result = pretrain(args.genome, dhs=args.dhs, text=args.text, images=args.images, config=args.config,
                      out=args.out, overrides=args.overrides or [], bed=args.bed, val_contigs=args.val_contigs,
                      test_contigs=args.test_contigs, decompress=args.decompress, max_steps=args.max_steps,
                      seed=args.seed, num_nodes=args.num_nodes, resume=args.resume, force=args.force, init=args.init,
                      download=args.download, progress="lines" if args.no_progress else "bar", logger=args.logger,
                      **device_options(args))
    if launching_process() and result.model_path.exists():
        print(f"pretrain done: {result.summary()}")
    return 0
