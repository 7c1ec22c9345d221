"""`dnadiff evaluate`: held-out NELBO (bits per token, perplexity, standard errors) of a checkpoint,
beside an order-k Markov baseline scored on exactly the same positions (DNA); :func:`dnadiff.evaluate`.

    dnadiff evaluate --checkpoint OUT/model.pt --genome hg38.fa [--split test | --region chr1:1-1000000] [--json]
    dnadiff evaluate --checkpoint OUT/model.pt --text FILE      # bpc;  --images digits -> bpd
"""
from __future__ import annotations

import json

from dnadiff.commands.devices import add_device_arguments, device_options
from dnadiff.keys import option


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="model.pt, a pretraining .ckpt, an original Caduceus folder or a Hugging Face hub id")
    p.add_argument("--download", action="store_true", help="fetch a hub id missing from the Hugging Face cache")
    p.add_argument("--genome", help="genome FASTA (DNA checkpoints)")
    p.add_argument("--text", help="text file (text checkpoints; default: the training file)")
    p.add_argument("--images", help="'digits' or a CIFAR-10 folder (pixel checkpoints; default: the training data)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--split", default="test", choices=["val", "test"], help="held-out split (default test)")
    where.add_argument("--region", help="a region chr:start-end (1-based, inclusive) instead of a split")
    p.add_argument("--max-windows", type=option("int", lo=1), default=256, help="windows/sequences to score (default 256)")
    p.add_argument("--batch-size", type=option("int", lo=1, hi=65_536), default=16)
    p.add_argument("--num-t", type=option("int", lo=1, hi=100_000), default=8, help="Monte-Carlo draws of t per sequence (default 8)")
    p.add_argument("--exact-steps", type=option("int", lo=1, hi=1_000_000), help="exact discrete-time NELBO with this many steps instead")
    p.add_argument("--markov-max-order", type=option("int", lo=0, hi=12), default=8, help="largest Markov order tried (default 8)")
    p.add_argument("--markov-train-windows", type=option("int", lo=1), default=2000, help="training windows for the Markov counts")
    p.add_argument("--decompress", action="store_true", help="decompress a plain-gzip FASTA once into a cache")
    p.add_argument("--seed", type=option("int", lo=0, hi=2**63 - 1), default=0)
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    add_device_arguments(p, training=False)


def run(args) -> int:
    from dnadiff.evaluation import evaluate

    report = evaluate(args.checkpoint, genome=args.genome, text=args.text, images=args.images, split=args.split,
                      region=args.region, max_windows=args.max_windows, batch_size=args.batch_size, num_t=args.num_t,
                      exact_steps=args.exact_steps, markov_max_order=args.markov_max_order,
                      markov_train_windows=args.markov_train_windows, decompress=args.decompress, seed=args.seed,
                      download=args.download, **device_options(args))
    print(json.dumps(report.to_dict()) if args.json else "\n".join(report.lines()))
    return 0
