"""`dnadiff embed`: one reverse-complement-invariant vector per sequence (mean-pooled hidden state), written as
``OUT.npy`` (float32 [S, D], rows in input order) and ``OUT.ids.txt`` (one id per line, same order).

    dnadiff embed --checkpoint OUT/model.pt --input seqs.fa --out emb.npy [--layer K]
"""
from __future__ import annotations

from pathlib import Path

from dnadiff.commands.devices import add_device_arguments, torch_device
from dnadiff.keys import option


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="model.pt, a pretraining .ckpt, an original Caduceus folder or a Hugging Face hub id")
    p.add_argument("--download", action="store_true", help="fetch a hub id missing from the Hugging Face cache")
    p.add_argument("--input", required=True, help="sequences: FASTA (plain or gzip) or TSV id<TAB>sequence")
    p.add_argument("--out", required=True, help="embeddings .npy (the ids go to the same name with .ids.txt)")
    p.add_argument("--layer", type=option("int", lo=0, hi=10_000), help="0 = embedding, k = after block k (default: last)")
    p.add_argument("--batch-size", type=option("int", lo=1, hi=65_536), default=64, help="sequences per length-sorted batch")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    add_device_arguments(p, training=False)


def ids_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name[: -len(".npy")] + ".ids.txt" if out.name.endswith(".npy") else out.name + ".ids.txt")


def run(args) -> int:
    from dnadiff.errors import UserError
    from dnadiff.generate import load
    from dnadiff.scoring import embed
    from dnadiff.scoring.io import Ticker, check_output, read_sequences, write_npy_stream, write_text

    if not str(args.out).endswith(".npy"):
        raise UserError(f"--out {args.out} does not end in .npy: name the embeddings file like emb.npy")
    device = torch_device(args)
    check_output(args.out, args.force)
    check_output(ids_path(args.out), args.force)
    ids = []
    for name, seq in read_sequences(args.input):  # the whole input checked before any work
        if not seq:
            raise UserError(f"sequence {name!r} in {args.input} is empty: remove it")
        ids.append(name)
    model = load(args.checkpoint, device=device, download=args.download)
    from dnadiff.scoring.embed import check_layer

    check_layer(model.denoiser, args.layer)
    tick = Ticker("embed", len(ids))

    def blocks():
        chunk, done = [], 0
        for _, seq in read_sequences(args.input):
            chunk.append(seq)
            if len(chunk) == 4096:
                yield embed(model, chunk, layer=args.layer, batch_size=args.batch_size)
                done += len(chunk)
                tick(done)
                chunk = []
        if chunk:
            yield embed(model, chunk, layer=args.layer, batch_size=args.batch_size)

    width = write_npy_stream(args.out, blocks(), len(ids))
    write_text(ids_path(args.out), (f"{name}\n" for name in ids))
    print(f"embedded {len(ids):,} sequences into {width} dimensions -> {args.out} (ids: {ids_path(args.out)})")
    return 0
