"""`dnadiff pretrain` / `dnadiff evaluate` end to end on real DNA, resume, DDP, and bad input."""
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dnadiff.cli import main
from dnadiff.checkpoints.sources import load_model
from dnadiff.checkpoints.format import load_checkpoint

TINY = ["model.d_model=16", "model.n_layer=1", "data.window=128", "data.batch_size=4", "data.max_eval_windows=8",
        "train.val_every=3", "train.ckpt_every=2", "optim.warmup_steps=2", "train.ema_decay=0.9"]


def hg38(shared_data: Path) -> str:
    return str(shared_data / "hg38" / "hg38_chr2_1-2333275.fa.gz")


def pretrain(args, capsys=None):
    code = main(["pretrain", "--no-progress", "--config", "demo", *args])
    return code


@pytest.mark.slow
def test_pretrain_then_evaluate_on_hg38(shared_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert pretrain(["--genome", hg38(shared_data), "--out", str(out), "--max-steps", "6", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "pretrain done: 6 steps" in printed
    payload = load_checkpoint(out / "model.pt")
    assert payload["format"] == "dnadiff-model/1" and payload["data"]["modality"] == "dna"
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "logs" / "metrics.csv").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and 0 < summary["val/bits_per_token"] < 3
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["global_step"] == 6  # saved at the end too
    model, process, _ = load_model(out / "model.pt")
    assert process.vocab_size == 4 and not model.training
    code = main(["evaluate", "--checkpoint", str(out / "model.pt"), "--genome", hg38(shared_data), "--json",
                 "--max-windows", "8", "--num-t", "2", "--markov-train-windows", "64", "--markov-max-order", "3"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("bits_per_nt", "perplexity", "perplexity_stderr", "markov_order", "markov_perplexity", "num_positions"):
        assert key in result
    assert result["num_positions"] > 8 * 128 * 0.8
    assert 1.5 < result["markov_perplexity"] < 4.0 and result["perplexity"] > 1.0


@pytest.mark.slow
def test_pretrain_on_multichromosome_yeast_with_held_out_contigs(shared_data, tmp_path, capsys):
    out = tmp_path / "yeast"
    yeast = str(shared_data / "yeast" / "S288C_sacCer_16chr.fa.gz")  # plain gzip: needs the opt-in
    code = pretrain(["--genome", yeast, "--out", str(out), "--max-steps", "3", "--decompress",
                     "--val-contigs", "chr15", "--test-contigs", "chr16", *TINY])
    assert code == 0
    info = load_checkpoint(out / "model.pt")["data"]
    assert info["val_contigs"] == ["chr15"] and info["test_contigs"] == ["chr16"]


@pytest.mark.slow
def test_resume_continues_exactly(shared_data, tmp_path, capsys):
    """4 steps + resume to 6 gives the same weights as 6 uninterrupted steps (step count, optimizer,
    EMA, data stream and masking noise all continue)."""
    genome = hg38(shared_data)
    full, part = tmp_path / "full", tmp_path / "part"
    assert pretrain(["--genome", genome, "--out", str(full), "--max-steps", "6", *TINY]) == 0
    # stop after 4 of 6 steps (same learning-rate horizon as the full run), then resume
    assert pretrain(["--genome", genome, "--out", str(part), "--max-steps", "4", *TINY, "optim.total_steps=6"]) == 0
    ckpt = part / "checkpoints" / "last.ckpt"
    assert load_checkpoint(ckpt)["global_step"] == 4
    assert pretrain(["--genome", genome, "--out", str(part), "--max-steps", "6", "--resume", *TINY, "optim.total_steps=6"]) == 0
    a = load_checkpoint(full / "checkpoints" / "last.ckpt")
    b = load_checkpoint(part / "checkpoints" / "last.ckpt")
    assert b["global_step"] == 6
    for key in ("state_dict",):
        for name, value in a[key].items():
            if "model." in name:
                torch.testing.assert_close(b[key][name], value, rtol=0, atol=0, msg=name)
    for name, value in a["ema"]["shadow"].items():
        torch.testing.assert_close(b["ema"]["shadow"][name], value, rtol=0, atol=0)


@pytest.mark.slow
def test_ddp_two_cpu_processes(shared_data, tmp_path):
    """Lightning DDP (gloo) over 2 CPU processes: disjoint windows per rank, identical final weights."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "dnadiff.cli", "pretrain", "--no-progress", "--config", "demo", "--genome",
           hg38(shared_data), "--out", str(out), "--max-steps", "3", "--devices", "2", "--accelerator", "cpu",
           "--strategy", "ddp", *TINY, "train.audit=true"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads((out / f"audit_rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in records)
    seen0, seen1 = set(records[0]["indices"]), set(records[1]["indices"])
    assert len(seen0) == len(seen1) == 3 * 4 and not seen0 & seen1
    assert seen0 | seen1 == set(range(24))  # together they read the stream's first 24 windows
    assert records[0]["param_sum"] == records[1]["param_sum"]
    assert records[0]["param_sq_sum"] == records[1]["param_sq_sum"]
    assert (out / "model.pt").is_file()


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing half-written
def run_bad(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture
def small_fasta(tmp_path):
    return write(tmp_path / "g.fa", ">c1\n" + "ACGT" * 100 + "\n>c2\n" + "GATTACA" * 50 + "\n")


def test_bad_inputs_give_one_clear_line(tmp_path, small_fasta, capsys):
    out = str(tmp_path / "out")
    base = ["pretrain", "--no-progress", "--config", "demo", "--out", out, "--max-steps", "1", *TINY]
    err = run_bad(["pretrain", "--genome", str(tmp_path / "missing.fa"), "--out", out], capsys)
    assert "does not exist" in err
    err = run_bad([*base, "--genome", write(tmp_path / "x.fa", "hello world\nthis is not dna\n")], capsys)
    assert "FASTA" in err
    err = run_bad([*base, "--genome", write(tmp_path / "e.fa", ">c1\nACGT\n>empty\n>c3\nACGT\n")], capsys)
    assert "empty" in err
    err = run_bad([*base, "--genome", small_fasta, "data.window=5000"], capsys)
    assert "longer" in err or "window" in err
    bed = write(tmp_path / "a.bed", "chrZ\t0\t100\ttrain\n")
    err = run_bad([*base, "--genome", small_fasta, "--bed", bed], capsys)
    assert "chrZ" in err
    bed = write(tmp_path / "b.bed", "c1\t0\t100000\ttrain\n")
    err = run_bad([*base, "--genome", small_fasta, "--bed", bed], capsys)
    assert "c1" in err and ("end" in err or "past" in err or "length" in err)
    gz = tmp_path / "plain.fa.gz"
    with gzip.open(gz, "wt") as f:
        f.write(">c1\n" + "ACGT" * 100 + "\n")
    err = run_bad([*base, "--genome", str(gz)], capsys)
    assert "bgzip" in err
    err = run_bad([*base, "--genome", small_fasta, "optim.learning_rate=1"], capsys)
    assert "learning_rate" in err
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    err = run_bad(["pretrain", "--genome", small_fasta, "--out", str(blocker / "sub")], capsys)
    assert "not writable" in err
    assert not (tmp_path / "out" / "model.pt").exists()


def test_bad_resume_keeps_existing_files(tmp_path, small_fasta, capsys):
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    err = run_bad(["pretrain", "--genome", small_fasta, "--out", str(out), "--resume"], capsys)
    assert "does not exist" in err
    corrupt = out / "checkpoints" / "last.ckpt"
    corrupt.write_bytes(b"\x00garbage" * 10)
    err = run_bad(["pretrain", "--genome", small_fasta, "--out", str(out), "--resume"], capsys)
    assert "corrupt" in err
    assert corrupt.read_bytes() == b"\x00garbage" * 10  # nothing overwritten
    err = run_bad(["evaluate", "--checkpoint", str(corrupt), "--genome", small_fasta], capsys)
    assert "corrupt" in err


def test_cli_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dnadiff.cli", "pretrain", "--genome", str(tmp_path / "nope.fa"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nope.fa" in proc.stderr


@pytest.mark.slow
def test_conditional_pretraining_on_dhs_then_guided_sampling(shared_data, tmp_path, capsys):
    dhs = shared_data / "dna_diffusion" / "K562_hESCT0_HepG2_GM12878_12k_sequences_per_group.txt.gz"
    out = tmp_path / "dhs"
    code = main(["pretrain", "--no-progress", "--dhs", str(dhs), "--out", str(out), "--max-steps", "4",
                 "model.d_model=16", "model.n_layer=1", "data.batch_size=8", "data.max_sequences=64",
                 "train.val_every=4"])
    assert code == 0
    payload = load_checkpoint(out / "model.pt")
    assert payload["data"]["class_names"] == ["GM12878", "hESCT0", "K562", "HepG2"]
    assert payload["model"]["num_classes"] == 4 and "label_embed.weight" in payload["state_dict"]
    fasta = tmp_path / "k562.fa"
    code = main(["sample", "--checkpoint", str(out / "model.pt"), "--num", "3", "--length", "200", "--steps", "20",
                 "--class", "K562", "--guidance", "2", "--out", str(fasta)])
    assert code == 0
    records = fasta.read_text().split(">")[1:]
    seqs = ["".join(r.splitlines()[1:]) for r in records]
    assert len(seqs) == 3 and all(len(s) == 200 and set(s) <= set("ACGT") for s in seqs)
