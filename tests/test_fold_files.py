"""`finetune --aggregate` checks each fold file against its schema (issue 27): truncated, headerless,
hand-edited and wrong-typed files are refused in one line naming the file and the field; null metrics (NaN
written as null, e.g. an undefined AUROC) are read back as NaN instead of breaking the summary."""
from __future__ import annotations

import copy
import json
import math

import pytest

from dnadiff.cli import main
from dnadiff.errors import UserError
from dnadiff.finetuning.report import aggregate, write_fold


def metrics(acc: float, n: int = 10) -> dict:
    return {"accuracy": acc, "f1": acc - 0.1, "mcc": 2 * acc - 1, "auroc": acc + 0.05, "n": n}


HEADER = {"task": "human_enhancers_cohn", "num_classes": 2, "class_names": ["negative", "positive"],
          "protocol": "cv", "num_folds": 2, "num_train": 20, "num_test": 6, "source": "d.tsv", "seed": 0,
          "config": {"batch_size": 8, "lr": 0.001, "epochs": 1, "max_length": 32},
          "summary_scope": "held-out folds", "max_examples": None}
MODEL = {"description": "Caduceus-Ph demo from scratch", "init": "scratch", "variant": "ph", "parameters": 1000}


def run(fold: int, acc: float) -> dict:
    model = {"fold": fold, **{k: v for k, v in metrics(acc).items()}, "best_epoch": 0, "seconds": 1.5,
             "val": metrics(acc), "test": metrics(acc - 0.02, 6), "val_accuracy_per_epoch": [acc],
             "micro_batch": None, "optimizer_steps": 3}
    base = {"fold": fold, **metrics(acc - 0.05), "seconds": 0.1, "test": metrics(acc - 0.07, 6)}
    return {"fold": fold, "model": model, "baselines": {"kmer_logreg": base}}


@pytest.fixture
def folds(tmp_path):
    for k, acc in ((0, 0.7), (1, 0.8)):
        write_fold(tmp_path, HEADER, MODEL, run(k, acc), [])
    return tmp_path


def test_good_fold_files_aggregate_to_the_exact_means(folds):
    results = aggregate(folds)
    assert results["summary"]["accuracy"]["mean"] == pytest.approx(0.75)
    assert results["summary"]["accuracy"]["std"] == pytest.approx(math.sqrt(0.005))  # ddof 1 of 0.7, 0.8
    assert results["baselines"]["kmer_logreg"]["summary"]["mcc"]["mean"] == pytest.approx(2 * 0.7 - 1)


def test_a_null_metric_is_read_back_as_nan(folds):
    payload = json.loads((folds / "fold_0.json").read_text())
    payload["run"]["model"]["auroc"] = None  # how a NaN AUROC is written
    (folds / "fold_0.json").write_text(json.dumps(payload))
    results = aggregate(folds)
    assert results["summary"]["auroc"]["mean"] == pytest.approx(0.85)  # NaN left out: fold 1's 0.85 only
    assert results["summary"]["accuracy"]["mean"] == pytest.approx(0.75)


def _edit(path, change):
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload))


def _set(keys, value):
    def change(payload):
        obj = payload
        for key in keys[:-1]:
            obj = obj[key]
        obj[keys[-1]] = value
    return change


def _delete(keys):
    def change(payload):
        obj = payload
        for key in keys[:-1]:
            obj = obj[key]
        del obj[keys[-1]]
    return change


EDITS = [
    ("headerless", _delete(["header"]), r"fold_1.json: header is missing"),
    ("no run", _delete(["run"]), r"fold_1.json: run is missing"),
    ("no model", _delete(["model"]), r"fold_1.json: model is missing"),
    ("string metric", _set(["run", "model", "accuracy"], "0.8"), r"run.model.accuracy is a string, not a number"),
    ("metric out of range", _set(["run", "model", "mcc"], 1.7), r"run.model.mcc is 1.7"),
    ("list metric", _set(["run", "baselines", "kmer_logreg", "f1"], [0.5]), r"run.baselines.kmer_logreg.f1 is a list"),
    ("missing metric", _delete(["run", "model", "val", "auroc"]), r"run.model.val.auroc is missing"),
    ("string num_folds", _set(["header", "num_folds"], "2"), r"header.num_folds is a string, not an integer"),
    ("fold out of range", _set(["run", "fold"], 5), r"run.fold is 5"),
    ("record of another fold", _set(["run", "model", "fold"], 0), r"run.model.fold is 0, not the file's fold 1"),
    ("float epoch", _set(["run", "model", "best_epoch"], 1.5), r"run.model.best_epoch is a number, not an integer"),
    ("bool n", _set(["run", "model", "n"], True), r"run.model.n is a boolean"),
    ("baselines a list", _set(["run", "baselines"], []), r"run.baselines is a list, not an object"),
    ("class names", _set(["header", "class_names"], ["a"]), r"header.class_names"),
    ("protocol", _set(["header", "protocol"], "loo"), r"header.protocol is 'loo'"),
    ("header a list", _set(["header"], [1, 2]), r"header is a list, not an object"),
    ("model description", _set(["model", "description"], 3), r"model.description is an integer"),
    ("no test metrics", _delete(["run", "model", "test"]), r"run.model.test is missing"),
    ("curve", _set(["run", "model", "val_accuracy_per_epoch"], ["x"]), r"val_accuracy_per_epoch\[0\] is a string"),
    ("notes", _set(["notes"], "note"), r"notes is a string, not a list"),
    ("format", _set(["format"], "dnadiff-finetune-fold/9"), r"format is 'dnadiff-finetune-fold/9'"),
]


@pytest.mark.parametrize("change, pattern", [(c, p) for _, c, p in EDITS], ids=[n for n, _, _ in EDITS])
def test_a_damaged_fold_file_is_named_with_its_field(folds, capsys, change, pattern):
    _edit(folds / "fold_1.json", change)
    with pytest.raises(UserError, match=pattern) as err:
        aggregate(folds)
    assert "\n" not in str(err.value) and "fold_1.json" in str(err.value)
    before = {p.name: p.read_bytes() for p in folds.iterdir()}
    assert main(["finetune", "--aggregate", str(folds)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0] and "fold_1.json" in lines[0], lines
    assert {p.name: p.read_bytes() for p in folds.iterdir()} == before  # no results.json written


@pytest.mark.parametrize("content, pattern", [
    (lambda text: text[: len(text) // 2], "truncated or not JSON"),
    (lambda text: "", "truncated or not JSON"),
    (lambda text: json.dumps([1, 2]), "is a list, not a JSON object"),
    (lambda text: json.dumps({"fold": 1, "accuracy": 0.8}), "not a dnadiff fold file"),
    (lambda text: "\udcff", "not readable|truncated"),
], ids=["truncated", "empty", "a list", "headerless record", "not utf-8"])
def test_truncated_and_foreign_files(folds, content, pattern):
    path = folds / "fold_1.json"
    text = content(path.read_text())
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(UserError, match=pattern) as err:
        aggregate(folds)
    assert "\n" not in str(err.value) and "fold_1.json" in str(err.value)
