"""`dnadiff variants`: zero-shot variant effects (log p(alt) - log p(ref), nats) of a VCF or TSV against a
genome, or in-silico saturation mutagenesis of a region or sequence.

    dnadiff variants --checkpoint OUT/model.pt --genome hg38.fa --variants calls.vcf.gz --out scored.vcf [--context 512]
    dnadiff variants --checkpoint OUT/model.pt --genome hg38.fa --variants table.tsv --out scored.tsv
    dnadiff variants --checkpoint OUT/model.pt --genome hg38.fa --saturate chr2:100000-100200 --out sat.tsv [--heatmap sat.png]
    dnadiff variants --checkpoint OUT/model.pt --sequence ACGT... --out sat.tsv
"""
from __future__ import annotations

from dnadiff.commands.devices import add_device_arguments, torch_device
from dnadiff.keys import option


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="model.pt, a pretraining .ckpt, an original Caduceus folder or a Hugging Face hub id")
    p.add_argument("--download", action="store_true", help="fetch a hub id missing from the Hugging Face cache")
    p.add_argument("--genome", help="genome FASTA (plain or bgzip) the variants were called on")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--variants", help="a VCF (.vcf, .vcf.gz, .bcf) or a TSV of chrom, 1-based pos, ref, alt [, id]")
    what.add_argument("--saturate", metavar="REGION", help="all 3L substitutions of chr:start-end (1-based, inclusive)")
    what.add_argument("--sequence", help="all 3L substitutions of this sequence (no genome needed)")
    p.add_argument("--out", required=True, help="VCF (.vcf, only for a VCF input) or TSV (.tsv) / JSON lines (.json)")
    p.add_argument("--heatmap", metavar="PNG", help="saturation: also draw the positions x bases heatmap (needs matplotlib)")
    p.add_argument("--context", type=option("int", lo=0, hi=1_048_576),
                   help="bp of genome on each side of a variant (default (window - 1) / 2 of the model)")
    p.add_argument("--num-t", type=option("int", lo=2, hi=100_000), default=16,
                   help="paired-ELBO draws for indels and multi-base substitutions (default 16)")
    p.add_argument("--ref-mismatch", default="refuse", choices=["refuse", "skip", "flag"],
                   help="a REF that differs from the genome: refuse (default), skip the record, or flag it unscored")
    p.add_argument("--match-contig-names", action="store_true", help="map 1 <-> chr1 (and MT <-> chrM) names")
    p.add_argument("--strands", default="auto", choices=["auto", "both", "forward"],
                   help="average both strands (auto: yes for Caduceus-Ph, no for the exactly symmetric PS)")
    p.add_argument("--batch-size", type=option("int", lo=1, hi=65_536), default=64, help="windows per denoiser call")
    p.add_argument("--seed", type=option("int", lo=0, hi=2**63 - 1), default=0)
    p.add_argument("--force", action="store_true", help="replace existing output files")
    add_device_arguments(p, training=False)


def run(args) -> int:
    from dnadiff.data.fasta import open_genome
    from dnadiff.errors import UserError
    from dnadiff.generate import load
    from dnadiff.scoring import io
    from dnadiff.scoring import variants as V

    device = torch_device(args)
    out_vcf = str(args.out).lower().endswith(".vcf")
    fmt = "json" if str(args.out).lower().endswith((".json", ".jsonl")) else "tsv"
    if str(args.out).lower().endswith((".gz", ".bgz", ".bcf")):
        raise UserError(f"--out {args.out} asks for a compressed file: write a plain .vcf (or .tsv) and bgzip it afterwards")
    io.check_output(args.out, args.force)
    if args.heatmap:
        if args.variants:
            raise UserError("--heatmap draws a saturation matrix: use it with --saturate or --sequence")
        io.check_output(args.heatmap, args.force)
    if (args.variants or args.saturate) and not args.genome:
        raise UserError("--variants and --saturate need --genome FASTA (the genome the positions refer to)")
    genome = open_genome(args.genome) if args.genome else None
    if args.variants:
        if out_vcf and not V.vcf_kind(args.variants):
            raise UserError(f"--out {args.out} is a VCF but the input is a TSV: write --out as .tsv")
        summary = V.check_records(V.read_records(args.variants), genome, args.match_contig_names, args.ref_mismatch)
        print(f"checked {summary.line()}", flush=True)
        model = load(args.checkpoint, device=device, download=args.download)
        tick = io.Ticker("variants", summary.alleles)
        counts = {"scored": 0, "done": 0}

        def results():
            for allele, score in V.variant_effects(model, V.read_records(args.variants), genome, args.context,
                                                   args.num_t, args.strands, args.ref_mismatch, args.match_contig_names,
                                                   args.batch_size, seed=args.seed):
                counts["done"] += 1
                counts["scored"] += score.method in ("masked_marginal", "paired_elbo", "identical")
                tick(counts["done"])
                yield allele, score

        if out_vcf:
            io.write_text(args.out, io.annotated_vcf(V.vcf_header(args.variants), results()))
        else:
            io.write_rows(args.out, io.VARIANT_COLUMNS, io.variant_rows(results()), fmt)
        print(f"scored {counts['scored']:,} of {counts['done']:,} alleles -> {args.out}")
        return 0
    model = load(args.checkpoint, device=device, download=args.download)
    sat = V.saturation_mutagenesis(model, sequence=args.sequence, genome=genome, region=args.saturate,
                                   context=args.context, strands=args.strands, batch_size=args.batch_size,
                                   match_names=args.match_contig_names)
    io.write_text(args.out, [sat.to_tsv()])
    drawn = ""
    if args.heatmap:
        drawn = f", heatmap -> {args.heatmap}" if V.heatmap(sat, args.heatmap) else \
            " (no heatmap: matplotlib is not installed; pip install matplotlib)"
    print(f"saturation mutagenesis of {len(sat.sequence):,} positions ({3 * len(sat.sequence):,} substitutions) "
          f"-> {args.out}{drawn}")
    return 0
