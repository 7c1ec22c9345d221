"""Fine-tuning at scale: micro-batches give the full-batch gradient, padding never changes a prediction
(Ph and PS, the backbone is length-aware), length-sorted inference, device options, folds as jobs,
small-data batch, and the checks that fail before any training."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from dnadiff.cli import main
from dnadiff.data.tokenizer import encode_batch
from dnadiff.finetuning.batches import (default_micro_batch, inference_batches, make_micro_batches,
                                      small_data_batch)
from dnadiff.finetuning.finetune_module import accumulate_gradients
from dnadiff.finetuning.trainer import build_classifier, predict_proba
from dnadiff.models import build_model
from dnadiff.rc import flip_valid

BASES = np.array(list("ACGT"))


def _seqs(n, lo, hi, seed=0):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(BASES, size=int(rng.integers(lo, hi + 1)))) for _ in range(n)]


def _classifier(variant, seed=0, pooling="mean"):
    torch.manual_seed(seed)
    backbone = build_model({"name": "caduceus", "d_model": 8, "n_layer": 2, "variant": variant})
    return build_classifier(backbone, 3, pooling).double()


def test_flip_valid_is_a_per_row_involution():
    x = torch.arange(2 * 5).view(2, 5)
    flipped = flip_valid(x, torch.tensor([3, 5]), dim=1)
    assert flipped.tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]
    assert torch.equal(flip_valid(flipped, torch.tensor([3, 5]), dim=1), x)
    assert torch.equal(flip_valid(x, None, dim=1), x.flip(1))


@pytest.mark.parametrize("variant", ["ph", "ps"])
def test_accumulated_gradient_equals_full_batch_gradient(variant):
    seqs, labels = _seqs(11, 5, 23, seed=1), np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1])
    classifier = _classifier(variant)
    classifier.train()
    # the full batch in one forward/backward, every row padded to the longest, mean cross-entropy
    tokens, valid = encode_batch(seqs)
    loss = torch.nn.functional.cross_entropy(classifier(tokens, valid), torch.as_tensor(labels))
    loss.backward()
    full = {n: p.grad.clone() for n, p in classifier.named_parameters()}
    classifier.zero_grad()
    micro = make_micro_batches(np.arange(11), seqs, labels, 64, micro=3)
    assert [len(m.tokens) for m in micro] == [3, 3, 3, 2]
    for m in micro:  # each micro-batch padded only to its own longest row
        assert m.tokens.shape[1] == max(len(seqs[i]) for i in m.index.tolist())
    mean = accumulate_gradients(classifier, micro, 11, lambda l: l.backward())
    assert mean == pytest.approx(loss.item(), rel=1e-10)
    for name, p in classifier.named_parameters():
        assert torch.allclose(p.grad, full[name], rtol=1e-8, atol=1e-12), name


@pytest.mark.parametrize("variant", ["ph", "ps"])
@pytest.mark.parametrize("pooling", ["mean", "first", "last"])
def test_padding_never_changes_a_prediction(variant, pooling):
    classifier = _classifier(variant, pooling=pooling).eval()
    short, longer = "ACGTTGCAAGGTC", "GATTACA" * 6
    alone, alone_valid = encode_batch([short])
    padded, padded_valid = encode_batch([short, longer])
    for conjoin in (False, True):
        classifier.conjoin = conjoin
        a, b = classifier(alone, alone_valid)[0], classifier(padded, padded_valid)[0]
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    # control: a backbone reading the padded rows as they are (the old behaviour) does change it
    classifier.length_aware = False
    classifier.conjoin = False
    assert not torch.allclose(classifier(alone, alone_valid)[0], classifier(padded, padded_valid)[0], atol=1e-6)


def test_ps_prediction_is_rc_invariant_in_a_padded_batch():
    classifier = _classifier("ps").eval()
    seqs = ["ACGTTGCAAGT", "GGGCCCATATTACGGA", "TTAG"]
    rc = [s[::-1].translate(str.maketrans("ACGT", "TGCA")) for s in seqs]
    assert np.allclose(predict_proba(classifier, seqs, 64, False), predict_proba(classifier, rc, 64, False), atol=1e-12)


def test_inference_batches_are_length_sorted_within_budget_and_order_is_restored():
    seqs = _seqs(40, 3, 50, seed=2)
    chunks = inference_batches(np.arange(40), seqs, np.zeros(40, dtype=int), 32, budget_tokens=100)
    lengths = [min(len(seqs[i]), 32) for c in chunks for i in c]
    assert lengths == sorted(lengths, reverse=True) and sorted(np.concatenate(chunks).tolist()) == list(range(40))
    assert all(len(c) * min(len(seqs[c[0]]), 32) <= 100 or len(c) == 1 for c in chunks)
    classifier = _classifier("ph").eval()
    one_by_one = np.concatenate([predict_proba(classifier, [s], 32, True) for s in seqs[:6]])
    assert np.allclose(predict_proba(classifier, seqs[:6], 32, True, budget_tokens=64), one_by_one, atol=1e-12)


def test_default_micro_batch_and_small_data_batch():
    assert default_micro_batch(256, 251, 118, 4) == 4_000_000 // (251 * 118 * 4) == 33
    assert default_micro_batch(256, 10, 8, 1) == 256 and default_micro_batch(256, 10**6, 118, 4) == 1
    assert small_data_batch(139_804 * 4 // 5, 256) == 256  # full size: untouched
    assert small_data_batch(800, 256) == 40 and small_data_batch(48, 256) == 8


# ------------------------------------------------------------------ device options (one helper for all commands)
def test_devices_helper_parsing():
    from dnadiff.devices import parse_devices, resolve_precision
    from dnadiff.errors import UserError

    assert parse_devices("2") == 2 and parse_devices("auto") == "auto" and parse_devices("0,1") == [0, 1]
    for bad in ("0", "x", "-1,2"):
        with pytest.raises(UserError):
            parse_devices(bad)
    assert resolve_precision("auto", "cpu") == "32-true" and resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("command", [
    ["finetune", "--task", "human_enhancers_cohn", "--from-scratch", "--data", "x.tsv", "--out", "OUT"],
    ["evaluate", "--checkpoint", "x.pt"],
    ["sample", "--checkpoint", "x.pt", "--num", "1", "--out", "OUT/x.fa"],
    ["pretrain", "--genome", "x.fa", "--out", "OUT"],
])
def test_gpu_without_cuda_is_one_line(command, capsys, tmp_path):
    argv = [a.replace("OUT", str(tmp_path / "o")) for a in command] + ["--accelerator", "gpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU" in err[0] and "--accelerator cpu" in err[0], err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ fail before any training
def _table(path, rows):
    path.write_text("seq\tlabel\n" + "".join(f"{s}\t{l}\n" for s, l in rows))
    return str(path)


def _learnable(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return [("".join(rng.choice(np.array(list("GCGCAT" if i % 2 else "ATATGC")), size=20 + i % 7)), i % 2)
            for i in range(n)]


def _fails(capsys, argv, fragment, out):
    before = sorted(os.listdir(out)) if os.path.isdir(out) else None
    rc = main(["finetune", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and fragment in err[0], err
    assert (sorted(os.listdir(out)) if os.path.isdir(out) else None) == before  # nothing written


def test_refused_before_training(capsys, tmp_path):
    data = _table(tmp_path / "d.tsv", _learnable())
    base = ["--task", "human_enhancers_cohn", "--data", data, "--from-scratch", "--model-size", "demo"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    _fails(capsys, [*base, "--out", str(afile)], "is an existing file", afile)
    held = tmp_path / "held"
    held.mkdir()
    (held / "results.json").write_text("{}")
    _fails(capsys, [*base, "--out", str(held)], "already holds results (results.json)", held)
    (held / "results.json").unlink()
    (held / "fold_1.json").write_text("{}")
    _fails(capsys, [*base, "--out", str(held), "--fold", "1"], "already holds results (fold_1.json)", held)
    _fails(capsys, [*base, "--out", str(tmp_path / "o"), "--fold", "5"], "outside 0..4", tmp_path / "o")
    one = _table(tmp_path / "one.tsv", [(s, 1) for s, _ in _learnable()])
    _fails(capsys, [*base[:3], one, *base[4:], "--out", str(tmp_path / "o")], "single class", tmp_path / "o")
    few = _table(tmp_path / "few.tsv", _learnable()[:17])  # 8 examples of class 1 < 2 x 5
    _fails(capsys, [*base[:3], few, *base[4:], "--out", str(tmp_path / "o")], "fewer than 2 x 5 folds", tmp_path / "o")
    floats = _table(tmp_path / "float.tsv", [(s, l + 0.5) for s, l in _learnable()])
    _fails(capsys, [*base[:3], floats, *base[4:], "--out", str(tmp_path / "o")], "neither an integer", tmp_path / "o")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        _fails(capsys, [*base, "--out", str(locked / "run")], "cannot be written", locked)


@pytest.mark.slow
def test_folds_as_jobs_then_aggregate_equals_the_whole_run(capsys, tmp_path):
    data = _table(tmp_path / "d.tsv", _learnable(40))
    common = ["finetune", "--task", "human_enhancers_cohn", "--data", data, "--from-scratch", "--model-size", "demo",
              "--folds", "2", "--max-epochs", "1", "--max-length", "32", "--no-baselines", "--accelerator", "cpu"]
    jobs = tmp_path / "jobs"
    for k in (1, 0):  # any order, as array jobs finish
        assert main([*common, "--fold", str(k), "--out", str(jobs)]) == 0
    assert sorted(p.name for p in jobs.iterdir() if not p.name.startswith("provenance_")) == ["fold_0.json", "fold_1.json"]
    assert sorted(p.name for p in jobs.glob("provenance_*")) == ["provenance_fold_0.json", "provenance_fold_1.json"]
    out = capsys.readouterr()
    assert "batch lowered to 8" in out.err  # 20 training examples per fold: small-data batch, said once per job
    assert main(["finetune", "--aggregate", str(jobs)]) == 0
    merged = json.loads((jobs / "results.json").read_text())
    whole = tmp_path / "whole"
    assert main([*common, "--out", str(whole)]) == 0
    full = json.loads((whole / "results.json").read_text())
    assert merged["config"]["batch_size"] == full["config"]["batch_size"] == 8
    assert "batch lowered to 8" in merged["notes"][0]
    for a, b in zip(merged["folds"], full["folds"]):  # same folds, same seeds: the same numbers
        assert a["fold"] == b["fold"] and a["n"] == b["n"]
        assert a["val_accuracy_per_epoch"] == pytest.approx(b["val_accuracy_per_epoch"])
    assert merged["summary"]["accuracy"]["mean"] == pytest.approx(full["summary"]["accuracy"]["mean"])
    assert "Batch 8" in (jobs / "results.md").read_text()
    # an explicit --batch-size is respected
    assert main([*common, "--fold", "0", "--batch-size", "16", "--out", str(tmp_path / "b16")]) == 0
    fold = json.loads((tmp_path / "b16" / "fold_0.json").read_text())
    assert fold["header"]["config"]["batch_size"] == 16 and not fold["notes"]
    # mixing experiments in one folder is refused
    (jobs / "fold_1.json").write_text((tmp_path / "b16" / "fold_0.json").read_text().replace('"fold": 0', '"fold": 1'))
    capsys.readouterr()
    assert main(["finetune", "--aggregate", str(jobs)]) == 2
    assert "different experiments (config" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_cpu_processes_score_every_validation_example(tmp_path):
    """--strategy ddp over 2 CPU processes: each trains on its share of every batch, the validation
    predictions of both ranks are gathered (every held-out example scored once), one process writes."""
    import subprocess
    import sys

    data = _table(tmp_path / "d.tsv", _learnable(40))
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "dnadiff.cli", "finetune", "--task", "human_enhancers_cohn", "--data", data,
           "--from-scratch", "--model-size", "demo", "--folds", "2", "--fold", "0", "--max-epochs", "2",
           "--max-length", "32", "--batch-size", "8", "--no-baselines", "--accelerator", "cpu", "--devices", "2",
           "--strategy", "ddp", "--selection", "held-out",  # the epoch picked on the gathered held-out fold
           "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("provenance_")) == ["fold_0.json"]
    run = json.loads((out / "fold_0.json").read_text())["run"]["model"]
    assert run["n"] == 20 and run["val"]["n"] == 20  # all 20 held-out examples, gathered from both ranks
    assert len(run["val_accuracy_per_epoch"]) == 2 and run["accuracy"] == max(run["val_accuracy_per_epoch"])
    assert run["optimizer_steps"] == 2 * 3  # 20 training examples, batch 8 across both ranks: 3 steps/epoch
