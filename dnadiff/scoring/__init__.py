"""Scoring DNA with a masked-diffusion model: likelihoods, embeddings and zero-shot variant effects.

Every entry point takes a *model* with ``.denoiser``, ``.diffusion`` and ``.window`` (a
:class:`dnadiff.generate.DNAModel`, i.e. any checkpoint source) and strings or files:

    from dnadiff.generate import load
    from dnadiff import scoring
    model = load("demo_out/model.pt")
    s = scoring.score(model, ["ACGT..."], num_t=8)                 # NELBO bits/base, stderr, draws
    pll = scoring.pseudo_log_likelihood(model, "ACGT...")          # log p(x_i | x_-i) per position
    E = scoring.embed(model, seqs)                                 # float32[S, D], RC-invariant
    for allele, s in scoring.variant_effects(model, "calls.vcf.gz", "hg38.fa", context=512): ...
    sat = scoring.saturation_mutagenesis(model, genome="hg38.fa", region="chr2:100000-100200")
"""
from dnadiff.scoring.embed import embed, hidden_states
from dnadiff.scoring.likelihood import SequenceScores, nelbo_scores, pseudo_log_likelihood
from dnadiff.scoring.variants import (Allele, AlleleScore, Record, Saturation, check_records, heatmap,
                                      paired_elbo_difference, read_records, saturation_mutagenesis, score_alleles,
                                      variant_effects)

score = nelbo_scores

__all__ = ["score", "nelbo_scores", "pseudo_log_likelihood", "SequenceScores", "embed", "hidden_states",
           "variant_effects", "score_alleles", "check_records", "read_records", "paired_elbo_difference",
           "saturation_mutagenesis", "heatmap", "Saturation", "Record", "Allele", "AlleleScore"]
