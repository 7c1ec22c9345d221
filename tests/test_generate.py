"""The generation API: fixed positions kept, only A/C/G/T out, classes routed, bad input refused."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from dnadiff.data.info import DataInfo
from dnadiff.diffusion import MaskedDiffusion, SampleStats
from dnadiff.errors import UserError
from dnadiff.generate import DNAModel, check_writable, write_fasta
from dnadiff.models.transformer import DiffusionTransformer


class PatternDenoiser(nn.Module):
    """Predicts, with certainty, base ``position % 4`` (A C G T A C ...), or with labels the base
    ``label`` at every position (the null label ``num_classes`` -> T)."""

    time_conditioned = False

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, z, t, labels=None):
        B, L = z.shape
        target = torch.arange(L).remainder(4).expand(B, L) if labels is None else labels[:, None].expand(B, L).clamp_max(3)
        return 50.0 * nn.functional.one_hot(target, 4).float() + self.dummy


def pattern_generator(class_names=()) -> DNAModel:
    payload = DataInfo(window=16, class_names=tuple(class_names))
    return DNAModel(PatternDenoiser(), MaskedDiffusion(4), payload)


def random_generator(class_names=()) -> DNAModel:
    torch.manual_seed(0)
    model = DiffusionTransformer(vocab_size=7, num_outputs=4, d_model=32, n_layer=1, n_head=2, max_len=32,
                                 num_classes=len(class_names))
    for p in model.parameters():  # a random (not uniform) untrained model: every base gets drawn
        nn.init.normal_(p, std=0.5)
    payload = DataInfo(window=32, class_names=tuple(class_names))
    return DNAModel(model, MaskedDiffusion(4), payload)


def test_pattern_model_fills_template_and_keeps_fixed_bases_across_windows():
    gen = pattern_generator()
    template = "TTTT" + "N" * 20 + "GG" + "N" * 14  # 40 bp > window 16: semi-autoregressive windows
    out = gen.generate(3, template=template, seed=0)
    pattern = "ACGT" * 10
    expected = "".join(t if t != "N" else p for t, p in zip(template, pattern))
    # windows start at 0, 8, 16, 24 (block = 8, all multiples of 4): the local pattern is the global one
    assert out == [expected] * 3


def test_prefix_kept_and_rest_generated():
    gen = pattern_generator()
    out = gen.generate(2, length=12, prefix="GGGGG", seed=1)
    assert out == ["GGGGG" + "CGTACGT"] * 2


def test_random_model_outputs_only_acgt_and_keeps_template():
    gen = random_generator()
    template = "ACGTACGTAC" + "N" * 50 + "GATTACA"  # 67 bp > window 32
    for sampler in ("cached", "ancestral", "first-hitting", "remdm", "confidence"):
        out = gen.generate(6, template=template, sampler=sampler, steps=16, seed=3)
        assert set("".join(out)) == set("ACGT")  # every base drawn, N never generated
        for s in out:
            assert s[:10] == template[:10] and s[-7:] == "GATTACA"
    tokens = gen.generate(6, length=40, as_strings=False, seed=4, top_p=0.9, temperature=0.7)
    assert tokens.shape == (6, 40) and tokens.dtype == torch.long and int(tokens.max()) <= 3
    stats = SampleStats()
    assert gen.generate(4, length=40, seed=5, stats=stats) == gen.generate(4, length=40, seed=5)
    assert gen.generate(4, length=40, seed=5) != gen.generate(4, length=40, seed=6)
    assert stats.denoiser_calls >= 1 and stats.steps == 32 and stats.sampler == "cached"
    once = stats.denoiser_calls  # a second run adds its calls to the same object
    gen.generate(4, length=40, seed=5, stats=stats, batch_size=2)
    assert stats.denoiser_calls > once and stats.rows_evaluated >= 4


def test_classes_reach_the_denoiser_with_guidance():
    gen = pattern_generator(["GM12878", "hESCT0", "K562", "HepG2"])
    assert gen.generate(2, length=8, class_name="K562", guidance=2.0, seed=0) == ["GGGGGGGG"] * 2
    assert gen.generate(2, length=8, class_name="hESCT0", seed=0) == ["CCCCCCCC"] * 2
    assert gen.generate(1, length=8, seed=0) == ["TTTTTTTT"]  # null label: unconditional


def test_bits_per_base_of_an_untrained_uniform_model_is_two_bits():
    model = DiffusionTransformer(vocab_size=7, num_outputs=4, d_model=32, n_layer=1, n_head=2, max_len=32)
    gen = DNAModel(model, MaskedDiffusion(4), DataInfo(window=32))
    bits = gen.bits_per_base(["ACGT" * 8, "ACGTNNNN" * 5], num_t=64)  # the second is cut into 32 + 8
    assert bits.shape == (2,)
    assert bits == pytest.approx([2.0, 2.0], abs=0.25)  # zero output layer: uniform over 4 bases


BAD_REQUESTS = [
    (dict(template="ACGTACGT"), "template has no N"),
    (dict(length=4, prefix="ACGTACGT"), "prefix (8 bp) is longer than --length 4"),
    (dict(class_name="liver"), "unknown class 'liver'"),
    (dict(template="ACGTNNXN"), "template has letters 'X'"),
    (dict(prefix="ACNN", length=8), "prefix has letters other than A, C, G, T"),
    (dict(length=8, top_p=0.0), "top-p 0.0 must be in (0, 1]"),
]


@pytest.mark.parametrize("kwargs, message", BAD_REQUESTS)
def test_bad_requests_are_one_line_user_errors(kwargs, message):
    gen = pattern_generator(["K562", "HepG2"])
    with pytest.raises(UserError) as err:
        gen.generate(2, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value) and ":" in str(err.value)


def test_class_and_guidance_on_an_unconditional_checkpoint():
    gen = pattern_generator()
    with pytest.raises(UserError, match="trained without classes: drop --guidance"):
        gen.generate(2, length=8, guidance=1.5)
    with pytest.raises(UserError, match="trained without classes: drop --class"):
        gen.generate(2, length=8, class_name="K562")


def test_write_fasta_atomic_and_refuses_bad_paths(tmp_path, monkeypatch):
    out = write_fasta(["ACGT" * 25, "GG"], tmp_path / "s.fa", width=60)
    assert out.read_text() == ">sample_0\n" + "ACGT" * 15 + "\n" + "ACGT" * 10 + "\n>sample_1\nGG\n"
    with pytest.raises(UserError, match="does not exist"):
        write_fasta(["ACGT"], tmp_path / "missing" / "s.fa")
    with pytest.raises(UserError, match="is a folder"):
        check_writable(tmp_path)
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(UserError, match="not writable"):
        write_fasta(["ACGT"], tmp_path / "t.fa")
    monkeypatch.undo()

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(UserError, match="could not write"):
        write_fasta(["ACGT"], tmp_path / "u.fa")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.fa"]  # nothing partly written


# ---------------------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved dnadiff-model/1 checkpoint of a small random class-conditional transformer."""
    from dnadiff.checkpoints.format import MODEL_FORMAT, save_checkpoint

    spec = {"name": "transformer", "vocab_size": 7, "num_outputs": 4, "d_model": 32, "n_layer": 1, "n_head": 2,
            "max_len": 32, "num_classes": 2}
    torch.manual_seed(0)
    model = DiffusionTransformer(**{k: v for k, v in spec.items() if k != "name"})
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, {"format": MODEL_FORMAT, "model": spec, "diffusion": {"vocab_size": 4, "schedule": "linear"},
                           "state_dict": model.state_dict(), "metrics": {},
                           "data": {"modality": "dna", "window": 32, "class_names": ["K562", "HepG2"]}})
    return path


def read_fasta(path):
    records = {}
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0]  # the header's description (model, sampler, seed) follows a space
            records[name] = ""
        else:
            records[name] += line
    return records


def test_cli_writes_fasta_with_prefix_and_class(checkpoint, tmp_path, capsys):
    from dnadiff.cli import main

    out = tmp_path / "s.fa"
    code = main(["sample", "--checkpoint", str(checkpoint), "--num", "5", "--length", "50", "--prefix", "GATTACA",
                 "--class", "HepG2", "--guidance", "1.5", "--seed", "0", "--steps", "20", "--out", str(out)])
    assert code == 0
    records = read_fasta(out)
    assert list(records) == [f"sample_{i}_HepG2" for i in range(5)]
    assert all(len(s) == 50 and s.startswith("GATTACA") and set(s) <= set("ACGT") for s in records.values())
    assert "wrote 5 sequences of 50 bp" in capsys.readouterr().out

    real = tmp_path / "real.fa"
    write_fasta(["ACGTTGCAAC" * 5, "GGGCCCATTA" * 5, "TTTTAAAACG" * 5], real)
    code = main(["sample", "--checkpoint", str(checkpoint), "--num", "4", "--length", "50", "--seed", "1",
                 "--report", "--json", "--real", str(real), "--train", str(real), "--out", str(tmp_path / "r.fa")])
    printed = capsys.readouterr().out
    assert code == 0
    for key in ("kmer_js_mean", "gc_wasserstein", "nn_identity_mean", "nn_identity_real_mean", "bits_per_base_generated"):
        assert key in printed
    assert '"nn_identity_real_mean": 1.0' in printed  # the real set is its own training set
    assert len([line for line in printed.splitlines() if line.startswith("{")]) == 1  # JSON once, no table
    assert "report (generated vs real)" not in printed


def test_cli_fasta_headers_and_provenance_reproduce_the_run(checkpoint, tmp_path, capsys):
    """A FASTA names its checkpoint, sampler, steps, class/guidance and seed; a drawn seed is printed and,
    given back, repeats the sequences exactly; provenance.json beside it holds the versions and command."""
    import json
    import sys

    from dnadiff.cli import main

    out = tmp_path / "s.fa"
    assert main(["sample", "--checkpoint", str(checkpoint), "--num", "3", "--length", "40", "--class", "K562",
                 "--guidance", "2", "--steps", "16", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "drawn" in err
    seed = int(err.split("seed ", 1)[1].split()[0])
    headers = [line for line in out.read_text().splitlines() if line.startswith(">")]
    assert headers == [f">sample_{i}_K562 model={checkpoint} sampler=cached steps=16 seed={seed} class=K562 guidance=2.0"
                       for i in range(3)]
    prov = json.loads((tmp_path / "s.fa.provenance.json").read_text())
    import dnadiff
    import torch
    assert prov["dnadiff"] == dnadiff.__version__ and prov["torch"] == torch.__version__
    assert prov["config"]["seed"] == seed and prov["config"]["steps"] == 16 and prov["device"].startswith("cpu")
    assert prov["argv"][:3] == ["dnadiff", "sample", "--checkpoint"] and prov["command"].startswith("dnadiff sample")
    again = tmp_path / "again.fa"
    assert main(["sample", "--checkpoint", str(checkpoint), "--num", "3", "--length", "40", "--class", "K562",
                 "--guidance", "2", "--steps", "16", "--seed", str(seed), "--out", str(again)]) == 0
    assert "drawn" not in capsys.readouterr().err
    assert read_fasta(again) == read_fasta(out)  # the recorded seed reproduces the sequences


@pytest.mark.parametrize("sampler", ["first-hitting", "remdm", "confidence"])
def test_cli_every_sampler_keeps_prefix_with_guidance(checkpoint, tmp_path, capsys, sampler):
    from dnadiff.cli import main

    out = tmp_path / "s.fa"
    extra = {"first-hitting": ["--steps", "0"], "remdm": ["--steps", "80", "--remdm-strategy", "cap"],
             "confidence": ["--steps", "10", "--block-length", "25"]}[sampler]
    assert main(["sample", "--checkpoint", str(checkpoint), "--num", "3", "--length", "50", "--prefix", "GATTACA",
                 "--class", "K562", "--guidance", "1.5", "--seed", "0", "--sampler", sampler, *extra,
                 "--out", str(out)]) == 0
    seqs = list(read_fasta(out).values())
    assert len(seqs) == 3 and all(len(s) == 50 and s.startswith("GATTACA") and set(s) <= set("ACGT") for s in seqs)
    assert main(["sample", "--checkpoint", str(checkpoint), "--num", "2", "--sampler", "remdm", "--eta", "-1",
                 "--out", str(tmp_path / "bad.fa")]) == 2
    assert "eta must be >= 0" in capsys.readouterr().err and not (tmp_path / "bad.fa").exists()


@pytest.mark.parametrize("args, message", [
    (["--template", "ACGTACGT"], "template has no N"),
    (["--length", "5", "--prefix", "ACGTACGT"], "prefix (8 bp) is longer than --length 5"),
    (["--length", "8", "--class", "liver"], "unknown class 'liver': this checkpoint knows K562, HepG2"),
    (["--length", "8", "--guidance", "2"], "guidance needs a class"),
])
def test_cli_bad_input_one_line_and_no_output(checkpoint, tmp_path, capsys, args, message):
    from dnadiff.cli import main

    out = tmp_path / "s.fa"
    assert main(["sample", "--checkpoint", str(checkpoint), "--num", "2", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_cli_unconditional_checkpoint_and_unwritable_output(tmp_path, capsys):
    from dnadiff.cli import main
    from dnadiff.checkpoints.format import MODEL_FORMAT, save_checkpoint

    spec = {"name": "transformer", "vocab_size": 7, "num_outputs": 4, "d_model": 32, "n_layer": 1, "n_head": 2,
            "max_len": 32}
    model = DiffusionTransformer(**{k: v for k, v in spec.items() if k != "name"})
    path = save_checkpoint(tmp_path / "u.pt", {
        "format": MODEL_FORMAT, "model": spec, "diffusion": {"vocab_size": 4, "schedule": "linear"},
        "state_dict": model.state_dict(), "metrics": {}, "data": {"modality": "dna", "window": 32, "class_names": []}})
    out = tmp_path / "s.fa"
    assert main(["sample", "--checkpoint", str(path), "--num", "2", "--length", "8", "--class", "K562",
                 "--guidance", "2", "--out", str(out)]) == 2
    assert "trained without classes" in capsys.readouterr().err and not out.exists()
    assert main(["sample", "--checkpoint", str(path), "--num", "2", "--out", str(tmp_path / "no" / "s.fa")]) == 2
    err = capsys.readouterr().err
    assert "does not exist: create it or choose another --out" in err and err.count("\n") == 1


def test_samplers_needing_a_shared_schedule_refuse_genmd4():
    from dnadiff.diffusion import GenMD4

    gen = DNAModel(PatternDenoiser(), GenMD4(4), DataInfo(window=16))
    for sampler in ("first-hitting", "remdm"):
        with pytest.raises(UserError, match="state-independent schedule"):
            gen.generate(2, length=8, sampler=sampler)
    assert gen.generate(2, length=8, sampler="confidence", seed=0) == ["ACGTACGT"] * 2


def test_bits_per_base_of_empty_or_all_n_sequences_is_nan_with_a_warning():
    gen = random_generator()
    with pytest.warns(UserWarning, match="2 of 3 sequences have no A/C/G/T"):
        bits = gen.bits_per_base(["", "NNNNNNNN", "ACGTACGTAC"], num_t=2)
    assert np.isnan(bits[0]) and np.isnan(bits[1])
    assert np.isfinite(bits[2]) and bits[2] > 0


def test_report_pieces_leave_out_assembly_gaps():
    """The real pieces a report compares with are cut to the generated length, and pieces that are
    mostly N (assembly gaps, e.g. a chromosome's first 10 kb) are left out, as training windows are."""
    from dnadiff.eval.sample_report import comparable_pieces

    real = ["N" * 8 + "ACGTACGT" + "ACGNACGT" + "NNNNACGT", "acgtacgt"]
    assert comparable_pieces(real, 8, max_n_frac=0.2) == ["ACGTACGT", "ACGNACGT", "acgtacgt"]  # 1/8 N
    assert comparable_pieces(real, 8) == ["ACGTACGT", "acgtacgt"]  # default: at most 10% N
    assert comparable_pieces(["N" * 40], 8) == []
