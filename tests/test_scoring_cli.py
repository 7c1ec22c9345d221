"""`dnadiff score`, `embed` and `variants` end to end on a small genome and checkpoint: what they write equals
the Python API's values (and, for a substitution, the masked marginal read directly off the genome window), and
bad variant inputs (REF mismatch, chr1-vs-1 naming, unknown contig, position outside a contig, malformed rows,
no records, symbolic alleles) are refused in one line with exit code 2, nothing written, or counted and skipped."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from dnadiff.cli import main

BASES = "ACGT"


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    from dnadiff.data.fasta import open_genome
    from dnadiff.checkpoints.format import save_checkpoint
    from dnadiff.training.diffusion_module import DiffusionModule

    a = tmp_path_factory.mktemp("scoring")
    rng = np.random.default_rng(0)
    contigs = {"chr1": "".join(rng.choice(list(BASES), size=3000)), "chr2": "".join(rng.choice(list(BASES), size=800))}
    (a / "genome.fa").write_text("".join(f">{k}\n{v}\n" for k, v in contigs.items()))
    open_genome(a / "genome.fa").close()
    torch.manual_seed(0)
    module = DiffusionModule({"name": "caduceus", "variant": "ph", "d_model": 16, "n_layer": 2},
                             {"vocab_size": 4, "schedule": "loglinear"}, ema_decay=0.9,
                             data_info={"modality": "dna", "window": 64, "class_names": [], "genome": str(a / "genome.fa"),
                                        "batch_size": 2, "num_workers": 0, "max_n_frac": 0.1, "rc_aug": False,
                                        "holdout_frac": 0.05, "max_eval_windows": 2, "val_contigs": [],
                                        "test_contigs": [], "bed": None})
    save_checkpoint(a / "model.pt", module.export_payload({}))
    c1 = contigs["chr1"]
    ref = lambda p, n=1: c1[p - 1 : p - 1 + n]  # noqa: E731  (1-based)
    other = lambda b: next(x for x in BASES if x != b)  # noqa: E731
    body = [
        ("chr1", 100, "rs1", ref(100), other(ref(100))),                              # SNV
        ("chr1", 200, "rs2", ref(200), ",".join(x for x in BASES if x != ref(200))),  # multi-allelic SNV
        ("chr1", 300, "del", ref(300, 3), ref(300)),                                  # 2-bp deletion
        ("chr1", 400, "ins", ref(400), ref(400) + "GA"),                              # insertion
        ("chr1", 500, "sym", ref(500), "<DEL>"),                                      # symbolic
        ("chr1", 600, "mnv", ref(600, 2), other(ref(600)) + other(ref(601))),        # 2-base substitution
        ("chr2", 5, "edge", contigs["chr2"][4], other(contigs["chr2"][4])),           # window clipped at the start
    ]
    head = "##fileformat=VCFv4.2\n##contig=<ID=chr1,length=3000>\n##contig=<ID=chr2,length=800>\n" \
           "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    lines = [f"{c}\t{p}\t{i}\t{r}\t{al}\t.\t.\t." for c, p, i, r, al in body]
    (a / "calls.vcf").write_text(head + "\n".join(lines) + "\n")
    import pysam

    pysam.tabix_compress(str(a / "calls.vcf"), str(a / "calls.vcf.gz"))
    (a / "calls.tsv").write_text("chrom\tpos\tref\talt\tid\n" + "".join(f"{c}\t{p}\t{r}\t{al}\t{i}\n" for c, p, i, r, al in body))
    bad = {
        "mismatch": [("chr1", 100, "x", other(ref(100)), ref(100))],
        "naming": [("1", 100, "x", ref(100), other(ref(100)))],
        "unknown": [("chrZ", 100, "x", "A", "C")],
        "outside": [("chr2", 900, "x", "A", "C")],
        "badalt": [("chr1", 100, "x", ref(100), "XZ")],
    }
    for name, rows in bad.items():
        (a / f"{name}.tsv").write_text("".join(f"{c}\t{p}\t{r}\t{al}\t{i}\n" for c, p, i, r, al in rows))
    (a / "mismatch.vcf").write_text(head.replace("chr1,length=3000", "chr1,length=3000") +
                                    f"chr1\t100\tx\t{other(ref(100))}\t{ref(100)}\t.\t.\t.\n"
                                    f"chr1\t110\ty\t{ref(110)}\t{other(ref(110))}\t.\t.\t.\n")
    (a / "naming.vcf").write_text(head.replace("ID=chr1", "ID=1") + f"1\t100\tx\t{ref(100)}\t{other(ref(100))}\t.\t.\t.\n")
    (a / "three.tsv").write_text("chr1\t100\tA\n")
    (a / "norecords.vcf").write_text(head)
    (a / "garbage.vcf").write_bytes(b"\x00\x01not a vcf at all\n" * 4)
    (a / "seqs.fa").write_text(">s1\n" + c1[:50] + "\n>s2 desc\n" + c1[100:130] + "\n>s3\n" + c1[500:600] + "\n")
    (a / "seqs.tsv").write_text("id\tsequence\nt1\t" + c1[:40] + "\nt2\t" + c1[40:70] + "\n")
    return a, contigs


def run(argv, capsys):
    code = main([str(x) for x in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def load(a):
    from dnadiff.generate import load as load_model

    return load_model(a / "model.pt")


def test_variants_vcf_out_equals_the_api_and_the_exact_window_marginal(w, capsys):
    import pysam

    from dnadiff.data.tokenizer import encode
    from dnadiff.scoring import variant_effects
    from dnadiff.scoring.common import masked_logprobs

    a, contigs = w
    out = a / "scored.vcf"
    code, stdout, err = run(["variants", "--checkpoint", a / "model.pt", "--genome", a / "genome.fa", "--variants",
                             a / "calls.vcf.gz", "--out", out, "--context", 20, "--num-t", 4], capsys)
    assert code == 0, err
    assert "1 multi-allelic records split" in stdout and "1 symbolic alleles skipped" in stdout
    with pysam.VariantFile(str(out)) as vcf:
        assert "DNADIFF_LLR" in vcf.header.info and vcf.header.info["DNADIFF_LLR"].number == "A"
        got = {rec.id: (rec.info["DNADIFF_LLR"], rec.info["DNADIFF_METHOD"]) for rec in vcf}
    assert len(got) == 7
    model = load(a)
    api = {}
    for allele, s in variant_effects(model, a / "calls.vcf.gz", a / "genome.fa", context=20, num_t=4):
        api.setdefault(allele.record.id, []).append(s)
    for rid, scores in api.items():
        llrs, methods = got[rid]
        assert list(methods) == [s.method if s.method != "none" else "symbolic" for s in scores]
        for v, s in zip(llrs, scores):
            assert (v is None) if np.isnan(s.llr) else abs(v - s.llr) < 1e-4 * max(1, abs(s.llr))
    assert got["del"][1] == ("paired_elbo",) and got["mnv"][1] == ("paired_elbo",) and got["sym"][0] == (None,)
    # the SNV: log p(alt) - log p(ref) with the position masked in chr1[99-20 : 100+20], both strands averaged
    c1 = contigs["chr1"]
    window = encode(c1[79:120])[None]
    lp = masked_logprobs(model.denoiser, model.diffusion, window, torch.tensor([20]), "both")[0]
    r, alt = c1[99], next(x for x in BASES if x != c1[99])
    assert abs(got["rs1"][0][0] - float(lp[BASES.index(alt)] - lp[BASES.index(r)])) < 1e-4
    assert len(got["rs2"][0]) == 3 and all(v is not None for v in got["rs2"][0])


def test_variants_tsv_matches_the_vcf(w, capsys):
    a, _ = w
    code, _, err = run(["variants", "--checkpoint", a / "model.pt", "--genome", a / "genome.fa", "--variants",
                        a / "calls.tsv", "--out", a / "scored.tsv", "--context", 20, "--num-t", 4], capsys)
    assert code == 0, err
    rows = [line.split("\t") for line in (a / "scored.tsv").read_text().splitlines()]
    assert rows[0] == ["chrom", "pos", "id", "ref", "alt", "llr", "stderr", "method", "status"]
    assert len(rows) == 1 + 9 and {r[8] for r in rows[1:]} == {"ok", "symbolic"}


def test_ref_mismatch_skip_and_flag(w, capsys):
    a, _ = w
    for mode, n in (("skip", 1), ("flag", 2)):
        out = a / f"mm_{mode}.tsv"
        code, _, err = run(["variants", "--checkpoint", a / "model.pt", "--genome", a / "genome.fa", "--variants",
                            a / "mismatch.vcf", "--out", out, "--context", 8, "--ref-mismatch", mode], capsys)
        assert code == 0, err
        rows = out.read_text().splitlines()[1:]
        assert len(rows) == n
        if mode == "flag":
            assert rows[0].split("\t")[8] == "ref_mismatch" and rows[0].split("\t")[5] == "nan"


def test_match_contig_names_maps_1_to_chr1(w, capsys):
    a, _ = w
    code, stdout, err = run(["variants", "--checkpoint", a / "model.pt", "--genome", a / "genome.fa", "--variants",
                             a / "naming.vcf", "--out", a / "named.vcf", "--context", 8, "--match-contig-names"], capsys)
    assert code == 0, err
    assert "1->chr1" in stdout
    assert "DNADIFF_LLR=" in (a / "named.vcf").read_text().splitlines()[-1]


BAD = [
    (["--variants", "{A}/mismatch.tsv"], "REF .* genome has .*--ref-mismatch"),
    (["--variants", "{A}/mismatch.vcf"], "REF .* genome has"),
    (["--variants", "{A}/naming.tsv"], "'1' is named 'chr1'.*--match-contig-names"),
    (["--variants", "{A}/naming.vcf"], "--match-contig-names"),
    (["--variants", "{A}/unknown.tsv"], "chrZ.*same assembly"),
    (["--variants", "{A}/outside.tsv"], "outside contig chr2"),
    (["--variants", "{A}/badalt.tsv"], "ALT 'XZ'"),
    (["--variants", "{A}/three.tsv"], "3 columns"),
    (["--variants", "{A}/norecords.vcf"], "no records"),
    (["--variants", "{A}/garbage.vcf"], "garbage.vcf"),
    (["--variants", "{A}/missing.vcf"], "missing.vcf"),
    (["--variants", "{A}/calls.tsv", "--out", "{A}/new.vcf"], "TSV"),
    (["--variants", "{A}/calls.vcf", "--out", "{A}/new.vcf.gz"], "bgzip it"),
    (["--variants", "{A}/calls.vcf"] + ["--genome", "{A}/missing.fa"], "missing.fa"),
    (["--variants", "{A}/calls.vcf", "--context", "-1"], "context"),
    (["--variants", "{A}/calls.vcf", "--num-t", "1"], "num-t"),
    (["--variants", "{A}/calls.vcf", "--heatmap", "{A}/new.png"], "heatmap"),
    (["--saturate", "chr1:100"], "chr:start-end"),
    (["--saturate", "chr1:200-100"], "empty"),
    (["--saturate", "chr2:700-900"], "ends past contig chr2"),
    (["--saturate", "chr1:1-10", "--out", "{A}/genome.fa"], "exists.*--force"),
]


@pytest.mark.parametrize("extra, pattern", BAD, ids=[" ".join(x[0]).replace("{A}/", "") for x in BAD])
def test_bad_variant_inputs_are_refused_in_one_line(w, capsys, extra, pattern):
    a, _ = w
    extra = [x.replace("{A}", str(a)) for x in extra]
    argv = ["variants", "--checkpoint", a / "model.pt", "--genome", a / "genome.fa"] + extra
    if "--out" not in extra:
        argv += ["--out", a / "new.tsv"]
    before = sorted(p.name for p in a.iterdir())
    try:
        code, _, err = run(argv, capsys)
    except SystemExit as exc:
        code, err = exc.code, capsys.readouterr().err
    err = err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err
    assert sorted(p.name for p in a.iterdir()) == before


def test_saturation_tsv_and_heatmap(w, capsys):
    a, contigs = w
    code, stdout, err = run(["variants", "--checkpoint", a / "model.pt", "--genome", a / "genome.fa", "--saturate",
                             "chr1:101-130", "--out", a / "sat.tsv", "--context", 16, "--heatmap", a / "sat.png"], capsys)
    assert code == 0, err
    rows = [line.split("\t") for line in (a / "sat.tsv").read_text().splitlines()[1:]]
    assert len(rows) == 30 and "".join(r[2] for r in rows) == contigs["chr1"][100:130]
    assert all(float(r[3 + BASES.index(r[2])]) == 0 for r in rows)
    pytest.importorskip("matplotlib")
    assert (a / "sat.png").read_bytes()[:4] == b"\x89PNG"


def test_score_and_embed_cli_equal_the_api(w, capsys):
    from dnadiff.scoring import embed, nelbo_scores

    a, contigs = w
    code, stdout, err = run(["score", "--checkpoint", a / "model.pt", "--input", a / "seqs.fa", "--out", a / "s.tsv",
                             "--num-t", 4, "--per-position", a / "pll.json"], capsys)
    assert code == 0, err
    rows = [line.split("\t") for line in (a / "s.tsv").read_text().splitlines()]
    assert [r[0] for r in rows[1:]] == ["s1", "s2", "s3"]
    seqs = [contigs["chr1"][:50], contigs["chr1"][100:130], contigs["chr1"][500:600]]
    model = load(a)
    want = nelbo_scores(model, seqs, num_t=4, seed=0)
    np.testing.assert_allclose([float(r[3]) for r in rows[1:]], want.bits_per_base, rtol=1e-5)
    assert all(float(r[4]) > 0 and r[5] == "4" for r in rows[1:])
    pll = [json.loads(line) for line in (a / "pll.json").read_text().splitlines()]
    assert len(pll) == 180 and pll[0]["id"] == "s1" and pll[-1]["pos"] == 100
    code, stdout, err = run(["embed", "--checkpoint", a / "model.pt", "--input", a / "seqs.fa", "--out", a / "e.npy",
                             "--layer", 1], capsys)
    assert code == 0, err
    e = np.load(a / "e.npy")
    assert (a / "e.ids.txt").read_text().split() == ["s1", "s2", "s3"]
    np.testing.assert_allclose(e, embed(model, seqs, layer=1), atol=1e-6)
    code, _, err = run(["embed", "--checkpoint", a / "model.pt", "--input", a / "seqs.tsv", "--out", a / "e2.npy",
                        "--layer", 9], capsys)
    assert code == 2 and "layer 9" in err and not (a / "e2.npy").exists()


@pytest.mark.parametrize("variant", ["ph", "ps"])
def test_an_original_caduceus_folder_scores_variants(w, shared_fixtures, tmp_path, capsys, variant):
    """A released-format Caduceus MLM folder (config.json + model.safetensors; hub ids resolve to the same folder,
    see test_loading) is a zero-shot variant scorer on the CPU; PS scores are exactly strand-symmetric unaveraged."""
    from hf_cache import add_repo, original_files, reference

    from dnadiff.generate import load as load_model
    from dnadiff.rc import reverse_complement_str
    from dnadiff.scoring import saturation_mutagenesis, variant_effects

    a, contigs = w
    config, state, _ = reference(shared_fixtures, variant)
    snapshot = add_repo(tmp_path / "hub", f"me/{variant}", original_files(config, state, "safetensors", tmp_path))
    out = tmp_path / "o.tsv"
    code, _, err = run(["variants", "--checkpoint", snapshot, "--genome", a / "genome.fa", "--variants", a / "calls.tsv",
                        "--out", out, "--context", 12, "--num-t", 2], capsys)
    assert code == 0, err
    model = load_model(snapshot)
    api = [s.llr for _, s in variant_effects(model, a / "calls.tsv", a / "genome.fa", context=12, num_t=2)]
    got = [float(line.split("\t")[5]) for line in out.read_text().splitlines()[1:]]
    np.testing.assert_allclose(got, api, rtol=1e-4, atol=1e-5)
    assert np.isfinite(got).sum() == 8  # every allele but the symbolic one
    strands = "forward" if variant == "ps" else "both"
    seq = contigs["chr1"][:30]
    fwd = saturation_mutagenesis(model, sequence=seq, context=8, strands=strands).llr
    rc = saturation_mutagenesis(model, sequence=reverse_complement_str(seq), context=8, strands=strands).llr
    np.testing.assert_allclose(fwd, rc[::-1][:, [3, 2, 1, 0]], atol=2e-4)
