"""The public Python API: ``dnadiff.pretrain``, ``evaluate``, ``finetune`` (with saved classifiers), ``load``,
``export``; typed results, errors that name the parameter (and the CLI's option for it), no global logging
changes, and a saved classifier that reproduces its fold's figures exactly."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

import dnadiff
from conftest import REPO
from dnadiff.errors import ConfigError, ParameterError, UserError

GENOME = REPO / "data" / "hg38" / "hg38_chr2_1-2333275.fa.gz"
TABLE = REPO / "data" / "genomic_benchmarks" / "human_enhancers_cohn.test.tsv"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    handlers = list(logging.getLogger().handlers)
    result = dnadiff.pretrain(GENOME, config="demo", out=out, max_steps=2, progress=None,
                              overrides={"train.val_every": 2, "data.max_eval_windows": 4, "data.window": 128})
    assert logging.getLogger().handlers == handlers, "a library call must not install logging handlers"
    return result


def test_top_level_names_and_version():
    from importlib.metadata import version

    assert dnadiff.__version__ == version("dnadiff")
    for name in ("pretrain", "finetune", "evaluate", "load", "export", "aggregate", "Classifier", "DNAModel"):
        assert callable(getattr(dnadiff, name)), name
    with pytest.raises(AttributeError):
        dnadiff.no_such_thing  # noqa: B018


def test_pretrain_returns_a_typed_result(pretrained):
    assert isinstance(pretrained, dnadiff.PretrainResult)
    assert pretrained.steps == 2 and pretrained.model_path.is_file() and pretrained.parameters > 0
    assert 1.0 < pretrained.val_bits_per_token < 3.0  # near 2 bits/nt after two steps
    assert pretrained.config["data"]["window"] == 128 and pretrained.config["model"]["d_model"] == 64
    summary = json.loads((pretrained.out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["val/bits_per_token"] == pytest.approx(pretrained.val_bits_per_token)


def test_load_generate_infill_and_evaluate(pretrained):
    model = dnadiff.load(pretrained.model_path)
    assert isinstance(model, dnadiff.DNAModel) and model.window == 128
    template = "ACGTACGT" + "N" * 16 + "TTGGCCAA"
    filled = model.infill(template, num=3, steps=8, seed=1)
    assert len(filled) == 3 and all(s[:8] == template[:8] and s[-8:] == template[-8:] and set(s) <= set("ACGT")
                                    for s in filled)
    assert filled == model.generate(3, template=template, steps=8, seed=1)  # infill is generate with a template
    report = dnadiff.evaluate(pretrained.model_path, genome=GENOME, max_windows=8, num_t=2, markov_max_order=2,
                              markov_train_windows=16, accelerator="cpu")
    assert isinstance(report, dnadiff.EvaluateResult) and report.num_sequences == 8
    record = report.to_dict()
    assert record["bits_per_nt"] == report.bits_per_token and record["num_positions"] == report.num_positions


def test_library_errors_name_the_parameter_and_the_cli_names_the_option(pretrained, tmp_path):
    from dnadiff.cli import as_option

    cases = [
        (lambda: dnadiff.pretrain(GENOME, config="demo", out=tmp_path / "x", max_steps=0), "max_steps", "--max-steps 0"),
        (lambda: dnadiff.finetune("human_enhancers", data=TABLE, from_scratch=True, out=tmp_path / "f", batch_size=0),
         "batch_size", "--batch-size 0"),
        (lambda: dnadiff.finetune("human_enhancers", data=TABLE, from_scratch=True, out=tmp_path / "f", folds=5, fold=7),
         "fold", "--fold 7"),
        (lambda: dnadiff.evaluate(pretrained.model_path, genome=GENOME, split="train"), "split", "--split 'train'"),
        (lambda: dnadiff.export(pretrained.model_path, tmp_path / "hf", format="onnx"), "format", "--format 'onnx'"),
        (lambda: dnadiff.pretrain(GENOME, config="demo", out=tmp_path / "x", accelerator="banana"), "accelerator",
         "--accelerator 'banana'"),
    ]
    for call, parameter, shown in cases:
        with pytest.raises(ParameterError) as err:
            call()
        assert err.value.parameter == parameter and str(err.value).startswith(f"{parameter}="), str(err.value)
        assert as_option(err.value).startswith(shown), as_option(err.value)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "x").exists() and not (tmp_path / "f").exists()  # refused before anything is written


def test_unknown_finetune_config_key_is_refused(tmp_path):
    from dnadiff.finetuning.trainer import load_finetune_config

    (tmp_path / "t.yaml").write_text("lr: 0.001\nbatch_sise: 32\n")
    with pytest.raises(ConfigError, match="unknown fine-tuning key 'batch_sise'"):
        load_finetune_config("t", tmp_path)
    (tmp_path / "u.yaml").write_text("lr: 0.001\nepochs: 0\n")
    with pytest.raises(UserError, match="epochs=0"):
        load_finetune_config("u", tmp_path)
    assert load_finetune_config("human_enhancers_cohn").lr == 0.001  # the bundled config


def test_saved_classifier_reproduces_its_fold(pretrained, tmp_path):
    """finetune(save_model=True) writes each fold's selected classifier; loaded back, it scores that fold's
    held-out examples to exactly the accuracy the fold file records."""
    from dnadiff.data.genomic_benchmarks import load_task
    from dnadiff.finetuning import protocol_splits, subsample

    result = dnadiff.finetune("human_enhancers", data=TABLE, checkpoint=pretrained.model_path, out=tmp_path / "ft",
                              folds=2, max_epochs=1, max_examples=48, baselines=False, save_model=True,
                              max_length=200, seed=3, progress=None, accelerator="cpu")
    assert isinstance(result, dnadiff.FinetuneResult) and len(result.classifier_paths) == 2
    assert result.json_path.is_file() and result.summary().startswith("human_enhancers_cohn: accuracy")
    data = load_task("human_enhancers_cohn", data=str(TABLE))
    train = subsample(data.train, 48, 3)
    splits = protocol_splits(type(data)(data.task, data.class_names, train, None, data.source), "cv", 2, 3)
    for index, (_, held_out) in enumerate(splits):
        clf = dnadiff.load(result.out / f"classifier_fold_{index}.pt")
        assert isinstance(clf, dnadiff.Classifier) and clf.info.fold == index and clf.max_length == 200
        seqs = [train.seqs[i] for i in held_out]
        probs = clf.predict_proba(seqs)
        assert probs.shape == (len(seqs), 2) and np.allclose(probs.sum(1), 1.0)
        accuracy = float((probs.argmax(1) == train.labels[held_out]).mean())
        recorded = json.loads((result.out / f"fold_{index}.json").read_text())["run"]["model"]["accuracy"]
        assert accuracy == pytest.approx(recorded, abs=1e-12)
        assert (clf.predict(seqs) == probs.argmax(1)).all()
    with pytest.raises(UserError, match="not a dnadiff classifier"):
        dnadiff.Classifier.load(pretrained.model_path)


def test_finetune_fold_job_and_aggregate(pretrained, tmp_path):
    out = tmp_path / "array"
    for k in range(2):
        job = dnadiff.finetune("human_enhancers", data=TABLE, checkpoint=pretrained.model_path, out=out, folds=2,
                               fold=k, max_epochs=1, max_examples=24, baselines=("kmer_logreg",), progress=None,
                               max_length=100)
        assert job.results is None and job.fold_paths == [out / f"fold_{k}.json"]
    merged = dnadiff.aggregate(out)
    assert set(merged.results["baselines"]) == {"kmer_logreg"} and len(merged.results["folds"]) == 2
    with open(TABLE) as handle:  # the table the folds were cut from is untouched
        assert next(csv.reader(handle, delimiter="\t"))[:2] == ["seq", "label"]


def test_export_from_python(pretrained, tmp_path):
    out, config = dnadiff.export(pretrained.model_path, tmp_path / "hf")
    assert (Path(out) / "model.safetensors").is_file() and config["d_model"] == 64
    reloaded = dnadiff.load(out)
    assert isinstance(reloaded, dnadiff.DNAModel)


def test_a_results_folder_in_use_is_refused(tmp_path):
    """finetune locks its results folder (.lock for a whole run, .lock_fold_K for a fold job): a second run, a
    second job of the same fold, or a whole run beside fold jobs is refused before any work."""
    import socket

    from dnadiff.training.run_folder import RunLock

    out = tmp_path / "busy"
    call = dict(data=TABLE, from_scratch=True, model_size="demo", out=out, folds=2, max_epochs=1, max_examples=8,
                baselines=False, progress=None)
    holder = RunLock(out, ".lock").acquire()  # a live run (flock)
    for fold in (None, 1):
        with pytest.raises(UserError, match=r"busy is in use by process \d+ on .*: wait for that run"):
            dnadiff.finetune("human_enhancers", fold=fold, **call)
    holder.release()
    holder = RunLock(out, ".lock_fold_1").acquire()
    with pytest.raises(UserError, match=r"lock .*\.lock_fold_1"):
        dnadiff.finetune("human_enhancers", **call)
    with pytest.raises(UserError, match=r"lock .*\.lock_fold_1"):
        dnadiff.finetune("human_enhancers", fold=1, **call)
    holder.release()
    (out / ".lock_fold_1").write_text("999999999 " + socket.gethostname() + "\n")  # a killed job's file is taken over
    result = dnadiff.finetune("human_enhancers", fold=1, **call)
    assert result.fold_paths == [out / "fold_1.json"] and not (out / ".lock_fold_1").exists()


def test_ctrl_c_during_pretraining_says_what_to_do_and_leaves_ctrl_c_working(tmp_path, monkeypatch):
    """Lightning turns Ctrl-C into sys.exit(1) and leaves SIGINT ignored; pretrain raises KeyboardInterrupt naming
    the way on (resume from the last checkpoint, or start again when there is none) and restores the handler."""
    import signal

    from dnadiff.training.diffusion_module import DiffusionModule

    original = DiffusionModule.training_step

    def interrupted_at_3(self, batch, batch_idx):
        if self.global_step == 3:
            raise KeyboardInterrupt
        return original(self, batch, batch_idx)

    monkeypatch.setattr(DiffusionModule, "training_step", interrupted_at_3)
    handler = signal.getsignal(signal.SIGINT)
    common = dict(config="demo", max_steps=6, progress=None)
    small = {"data.window": 64, "data.batch_size": 2, "data.max_eval_windows": 2, "train.val_every": 6}
    with pytest.raises(KeyboardInterrupt, match=r"at step 3; continue from the last checkpoint .*last.ckpt.*--resume"):
        dnadiff.pretrain(GENOME, out=tmp_path / "a", overrides={**small, "train.ckpt_every": 2}, **common)
    assert signal.getsignal(signal.SIGINT) == handler
    with pytest.raises(KeyboardInterrupt, match=r"at step 3, before the first checkpoint.*nothing to resume"):
        dnadiff.pretrain(GENOME, out=tmp_path / "b", overrides={**small, "train.ckpt_every": 100}, **common)
    monkeypatch.setattr(DiffusionModule, "training_step", original)
    resumed = dnadiff.pretrain(GENOME, out=tmp_path / "a", overrides={**small, "train.ckpt_every": 2}, resume=True,
                               **common)
    assert resumed.steps == 6
