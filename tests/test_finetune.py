"""`dnadiff finetune` end to end on real data, the trainer's RC handling, and every bad input."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from dnadiff.cli import main
from dnadiff.data.genomic_benchmarks import Split
from dnadiff.eval.classification import METRICS
from dnadiff.finetuning.trainer import FinetuneConfig, build_classifier, predict_proba, train_fold
from dnadiff.models import build_model
from dnadiff.models.config import caduceus_spec
from dnadiff.checkpoints.format import save_checkpoint


def _tsv(shared_data, task="human_enhancers_cohn"):
    return str(shared_data / "genomic_benchmarks" / f"{task}.test.tsv")


@pytest.mark.slow
def test_five_fold_cv_end_to_end_on_real_enhancers(shared_data, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["finetune", "--task", "human_enhancers", "--data", _tsv(shared_data), "--from-scratch",
               "--model-size", "demo", "--folds", "5", "--max-epochs", "2", "--max-examples", "60",
               "--max-length", "64", "--batch-size", "64", "--seed", "3", "--out", str(out)])
    assert rc == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("human_enhancers_cohn: accuracy")
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "human_enhancers_cohn" and results["num_classes"] == 2
    assert results["num_train"] == 60 and results["protocol"] == "cv"
    assert [f["fold"] for f in results["folds"]] == [0, 1, 2, 3, 4]
    assert sum(f["n"] for f in results["folds"]) == 60  # the held-out folds partition the examples
    for fold in results["folds"]:
        assert 0 <= fold["accuracy"] <= 1 and fold["best_epoch"] in (0, 1)
        # the epoch is picked on the inner validation split; the held-out fold is scored once with it
        assert fold["selection_metrics"]["accuracy"] == max(fold["val_accuracy_per_epoch"])
    assert results["selection"] == "inner"
    for metric in METRICS:
        values = [f[metric] for f in results["folds"]]
        s = results["summary"][metric]
        assert s["mean"] == pytest.approx(np.mean(values)) and s["min"] == min(values) and s["max"] == max(values)
        assert s["std"] == pytest.approx(np.std(values, ddof=1))
    for name in ("kmer_logreg", "cnn"):
        base = results["baselines"][name]
        assert len(base["folds"]) == 5 and set(base["summary"]) == set(METRICS)
        assert [f["n"] for f in base["folds"]] == [f["n"] for f in results["folds"]]  # same folds
    table = (out / "results.md").read_text()
    assert "| dnadiff (from scratch) |" in table and "| kmer_logreg |" in table and "| cnn |" in table


def _tiny_task(n=48, length=40, seed=0):
    """A learnable toy split: class 1 sequences carry a GC-rich half (shape tests only)."""
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for i in range(n):
        label = i % 2
        alphabet = np.array(list("GCGCAT" if label else "ATATGC"))
        seqs.append("".join(rng.choice(alphabet, size=length - (i % 5))))
        labels.append(label)
    return Split(seqs, np.array(labels))


def test_ph_conjoined_prediction_is_rc_invariant():
    torch.manual_seed(0)
    classifier = build_classifier(build_model(caduceus_spec("demo", variant="ph")), 2, "mean")
    seqs = ["ACGTTGCAAG", "GGGCCCATA"]
    rc = [s[::-1].translate(str.maketrans("ACGT", "TGCA")) for s in seqs]
    conj, conj_rc = predict_proba(classifier, seqs, 16, True), predict_proba(classifier, rc, 16, True)
    assert np.allclose(conj, conj_rc, atol=1e-5)
    plain, plain_rc = predict_proba(classifier, seqs, 16, False), predict_proba(classifier, rc, 16, False)
    assert not np.allclose(plain, plain_rc, atol=1e-5)  # a plain Ph model is not invariant by itself


def test_ps_head_is_rc_invariant_without_conjoining():
    # exact for unpadded batches (the backbone reads PAD tokens, so padding breaks exactness)
    torch.manual_seed(0)
    classifier = build_classifier(build_model(caduceus_spec("demo", variant="ps")), 3, "mean")
    seqs = ["ACGTTGCAAGT", "GGGCCCATATT"]
    rc = [s[::-1].translate(str.maketrans("ACGT", "TGCA")) for s in seqs]
    assert np.allclose(predict_proba(classifier, seqs, 11, False), predict_proba(classifier, rc, 11, False), atol=1e-6)


def test_train_fold_keeps_the_best_epoch_and_scores_test():
    train, val, test = _tiny_task(48, seed=0), _tiny_task(16, seed=1), _tiny_task(16, seed=2)
    config = FinetuneConfig(lr=5e-3, batch_size=48, epochs=2, max_length=40)
    make = lambda: build_classifier(build_model(caduceus_spec("demo", variant="ph")), 2, "mean")
    out = train_fold(make, train, val, test, config, "ph", seed=0)
    assert out["best_epoch"] == int(np.argmax(out["val_accuracy_per_epoch"]))
    assert out["val"]["accuracy"] == max(out["val_accuracy_per_epoch"])
    assert out["test"]["n"] == 16 and set(METRICS) <= set(out["test"])


# ------------------------------------------------------------------ bad inputs: one line, exit 2, no results
def _fails(capsys, tmp_path, argv, fragment):
    out = tmp_path / "out"
    rc = main(["finetune", *argv, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("dnadiff finetune: error:") and fragment in err[0], err
    assert not (out / "results.json").exists() and not (out / "results.md").exists()


def test_bad_unknown_task(capsys, tmp_path):
    _fails(capsys, tmp_path, ["--task", "human_promoters", "--data", "x.tsv", "--from-scratch"],
           "use one of dummy_mouse_enhancers_ensembl")


def test_bad_class_smaller_than_folds(capsys, tmp_path):
    path = tmp_path / "few.tsv"
    path.write_text("seq\tlabel\n" + "ACGTAC\tneg\n" * 10 + "GGCCTT\tpos\n" * 3)
    _fails(capsys, tmp_path, ["--task", "human_enhancers_cohn", "--data", str(path), "--from-scratch",
                              "--model-size", "demo"], "class 'pos' has 3 example(s), fewer than 2 x 5 folds")


@pytest.mark.parametrize("content,fragment", [
    (b"", "is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\xfd", "cannot read sequence file"),
    (b"seq\tlabel\nACGT\t0.5\nACGA\t1\n", "is neither an integer class id nor a class name"),
])
def test_bad_sequence_files(capsys, tmp_path, content, fragment):
    path = tmp_path / "data.tsv"
    path.write_bytes(content)
    _fails(capsys, tmp_path, ["--task", "human_enhancers_cohn", "--data", str(path), "--from-scratch"], fragment)


def test_bad_missing_sequence_file(capsys, tmp_path):
    _fails(capsys, tmp_path, ["--task", "human_enhancers_cohn", "--data", str(tmp_path / "nope.tsv"),
                              "--from-scratch"], "cannot read sequence file")


def test_bad_checkpoint_vocabulary(capsys, tmp_path, shared_data):
    spec = {"name": "transformer", "vocab_size": 260, "num_outputs": 256, "d_model": 32, "n_layer": 1, "n_head": 2}
    ckpt = tmp_path / "text.pt"
    save_checkpoint(ckpt, {"format": "dnadiff-model/1", "model": spec, "diffusion": {"vocab_size": 256},
                           "state_dict": {}, "data": {"modality": "text", "window": 64, "class_names": []}})
    _fails(capsys, tmp_path, ["--task", "human_enhancers_cohn", "--data", _tsv(shared_data), "--checkpoint", str(ckpt)],
           "not DNA")


def test_bad_checkpoint_width(capsys, tmp_path, shared_data):
    spec = caduceus_spec("demo", variant="ph")
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, {"format": "dnadiff-model/1", "model": spec, "diffusion": {"vocab_size": 4},
                           "state_dict": build_model(spec).state_dict(),
                           "data": {"modality": "dna", "window": 512, "class_names": []}})
    _fails(capsys, tmp_path, ["--task", "human_enhancers_cohn", "--data", _tsv(shared_data), "--checkpoint", str(ckpt),
                              "--model-size", "470k"], "has d_model=32, but the requested model size has d_model=118")


def test_bad_checkpoint_weights_of_another_width(capsys, tmp_path, shared_data):
    spec = caduceus_spec("demo", variant="ph")
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, {"format": "dnadiff-model/1", "model": spec, "diffusion": {"vocab_size": 4},
                           "state_dict": build_model(caduceus_spec("470k", variant="ph")).state_dict(),
                           "data": {"modality": "dna", "window": 512, "class_names": []}})
    _fails(capsys, tmp_path, ["--task", "human_enhancers_cohn", "--data", _tsv(shared_data), "--checkpoint", str(ckpt)],
           "weights do not fit")


def test_bad_coordinates_outside_reference(capsys, tmp_path, shared_data):
    folder = tmp_path / "coords" / "human_enhancers_cohn" / "train"
    folder.mkdir(parents=True)
    with gzip.open(folder / "positive.csv.gz", "wt") as out:
        out.write("id,region,start,end,strand\nx,chr2,2333100,2333600,+\n")
    _fails(capsys, tmp_path, ["--task", "human_enhancers_cohn", "--genome",
                              str(shared_data / "hg38" / "hg38_chr2_1-2333275.fa.gz"),
                              "--coordinates", str(tmp_path / "coords"), "--from-scratch"], "outside the reference")


def test_bad_no_backbone_choice(capsys, tmp_path, shared_data):
    _fails(capsys, tmp_path, ["--task", "human_enhancers_cohn", "--data", _tsv(shared_data)], "--from-scratch")


def test_results_written_atomically_and_nothing_on_error(tmp_path):
    from dnadiff.finetuning.report import write_results

    summary = {m: {"mean": 0.5, "std": float("nan"), "min": 0.5, "max": 0.5} for m in METRICS}
    fold = {"fold": 0, "best_epoch": 0, **{m: 0.5 for m in METRICS}, "n": 4,
            "val": {m: 0.5 for m in METRICS}, "test": None}
    results = {"task": "t", "num_classes": 2, "class_names": ["a", "b"], "protocol": "cv", "num_train": 4,
               "num_test": 0, "summary_scope": "held-out folds", "folds": [fold], "summary": summary,
               "baselines": {"kmer_logreg": {"summary": summary}}, "model": {"init": "from scratch", "description": "m"}}
    json_path, md_path = write_results(tmp_path / "a", results)
    loaded = json.loads(json_path.read_text())
    assert loaded["summary"]["accuracy"]["std"] is None  # NaN -> null, valid JSON
    assert "| 0 | 0 | 0.500 |" in md_path.read_text() and "n/a" in md_path.read_text()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["results.json", "results.md"]
    results["summary"]["accuracy"]["mean"] = object()  # not serialisable: fails before anything is written
    with pytest.raises(TypeError):
        write_results(tmp_path / "b", results)
    assert not (tmp_path / "b").exists()
