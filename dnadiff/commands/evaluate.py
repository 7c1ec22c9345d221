"""`dnadiff evaluate`: held-out NELBO (bits per token, perplexity, standard errors) of a checkpoint,
beside an order-k Markov baseline scored on exactly the same positions (DNA).

    dnadiff evaluate --checkpoint OUT/model.pt --genome hg38.fa [--split test | --region chr1:1-1000000] [--json]
    dnadiff evaluate --checkpoint OUT/model.pt --text FILE      # bpc;  --images digits -> bpd
"""
from __future__ import annotations

import json
import math

import torch

from dnadiff.commands.devices import add_device_arguments, torch_device
from dnadiff.errors import UserError
from dnadiff.training.config import option


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


def materialise(loader, limit: int | None = None) -> list[dict]:
    """The batches of a loader as a list (so the network and the baseline see the same windows)."""
    out, n = [], 0
    for batch in loader:
        out.append(batch)
        n += batch["tokens"].shape[0]
        if limit is not None and n >= limit:
            break
    if not out:
        raise UserError("no windows to evaluate: the region or split is shorter than the window or all N")
    return out


def dna_batches(args, info: dict):
    from dnadiff.training.data import build_dna, genome_path

    genome = args.genome or info.get("genome")
    if not genome:
        raise UserError("a DNA checkpoint needs --genome FASTA to evaluate on")
    data = {**info, "batch_size": args.batch_size, "num_workers": 0, "max_eval_windows": args.max_windows}
    dm, _ = build_dna(data, genome_path(genome, args.decompress), seed=args.seed)
    target = dm.region(args.region) if args.region else args.split
    batches = materialise(dm.eval_dataloader(target, args.max_windows))
    train = dm.eval_dataloader("train", args.markov_train_windows)
    val = materialise(dm.eval_dataloader("val", min(args.max_windows, 256)))
    return batches, train, val


def run(args) -> int:
    from dnadiff.diffusion import evaluate
    from dnadiff.loading import load_model

    device = torch_device(args)
    torch.manual_seed(args.seed)
    model, process, payload = load_model(args.checkpoint, download=args.download)
    model.to(device)
    if isinstance(process, torch.nn.Module):
        process.to(device)
    info = payload.get("data", {})
    modality = info.get("modality", "dna")
    g = torch.Generator(device=device).manual_seed(args.seed)
    result: dict = {"checkpoint": str(args.checkpoint), "modality": modality}
    wrong = [f"--{name}" for name, fits in (("genome", modality == "dna"), ("text", modality == "text"),
                                            ("images", modality == "pixels")) if getattr(args, name, None) and not fits]
    if wrong or (args.region and modality != "dna"):
        raise UserError(f"{(wrong or ['--region'])[0]} does not fit this {modality} checkpoint: "
                        f"give the data it was trained on ({'--genome' if modality == 'dna' else '--text or --images'})")
    if modality == "dna":
        from dnadiff.eval.markov import fit_markov

        batches, train, val = dna_batches(args, info)
        rep = evaluate(process, model, batches, num_t=args.num_t, exact_steps=args.exact_steps, generator=g)
        markov, _ = fit_markov(train, val, max_order=args.markov_max_order)
        mk = markov.score(batches)
        assert mk.num_positions == rep.num_tokens, "Markov baseline and network must score the same positions"
        result.update(where=args.region or args.split, bits_per_nt=rep.bits_per_token, bits_stderr=rep.bits_stderr,
                      nats_per_nt=rep.nats_per_token, perplexity=rep.perplexity,
                      perplexity_stderr=rep.perplexity_stderr, num_positions=rep.num_tokens,
                      num_windows=rep.num_sequences, markov_order=mk.order, markov_bits_per_nt=mk.bits_per_nt,
                      markov_perplexity=mk.perplexity, num_t=args.num_t)
        lines = [f"network   {rep.bits_per_token:.4f} ± {rep.bits_stderr:.4f} bits/nt   perplexity "
                 f"{rep.perplexity:.4f} ± {rep.perplexity_stderr:.4f}",
                 f"markov-{mk.order}  {mk.bits_per_nt:.4f} bits/nt            perplexity {mk.perplexity:.4f}",
                 f"on {rep.num_tokens:,} positions in {rep.num_sequences} windows ({result['where']})"]
    else:
        from dnadiff.training.modalities import build_datamodule

        data = {**info, "batch_size": args.batch_size}
        if args.text:
            data["text"] = args.text
        if args.images:
            data["images"] = args.images
        dm, info = build_datamodule(data)
        dm.setup("test")
        loader = dm.test_dataloader() if args.split == "test" else dm.val_dataloader()
        batches = materialise(loader, args.max_windows)
        rep = evaluate(process, model, batches, num_t=args.num_t, exact_steps=args.exact_steps, generator=g)
        unit = info["unit"]
        result.update(unit=unit, bits=rep.bits_per_token, bits_stderr=rep.bits_stderr, perplexity=rep.perplexity,
                      perplexity_stderr=rep.perplexity_stderr, uniform_bits=info["uniform_bits"],
                      num_positions=rep.num_tokens, num_sequences=rep.num_sequences)
        lines = [f"network  {rep.bits_per_token:.4f} ± {rep.bits_stderr:.4f} {unit}   (uniform {info['uniform_bits']:.4f})",
                 f"on {rep.num_tokens:,} tokens in {rep.num_sequences} sequences ({args.split})"]
    if args.json:
        print(json.dumps(result))
    else:
        print("\n".join(lines))
    return 0
