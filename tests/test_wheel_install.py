"""dnadiff as users install it: a wheel built from the checkout, installed with --no-deps into an environment
outside the checkout (no editable finder, cwd elsewhere), runs pretrain --config demo, finetune --task
human_enhancers, sample and the Python API, with the bundled configs and the fused CPU kernel it ships.

The environment reuses this test run's dependencies through a path entry to their site-packages folder (a
path listed in a .pth file is added to sys.path, but .pth files inside it, such as the editable install's
finder, are not run), so the installed wheel is the only dnadiff it can import.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

from conftest import REPO


def _run(cmd, cwd, env, timeout=900) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_wheel_installed_outside_the_checkout_runs_every_job(tmp_path):
    figures = {}
    start = time.perf_counter()
    wheels = tmp_path / "wheels"
    source = tmp_path / "source"  # a copy: the build writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "demo_out", "runs", "__pycache__", ".pytest_cache", ".whl"))
    # --no-build-isolation: the build backend (setuptools, wheel) of this environment, no network needed
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
          str(source)], tmp_path, dict(os.environ))
    wheel = next(wheels.glob("dnadiff-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("dnadiff/configs/pretrain/demo.yaml", "dnadiff/configs/finetune/human_enhancers_cohn.yaml",
                    "dnadiff/configs/README.md", "dnadiff/ops/cpu_scan.cpp"):
        assert shipped in names, f"{shipped} is not in {wheel.name}"
    figures["build_s"] = round(time.perf_counter() - start, 1)

    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", PATH=f"{env_dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               DNADIFF_CPU_KERNEL="1")
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], tmp_path, env)
    work = tmp_path / "elsewhere"
    work.mkdir()
    genome = work / "piece.fa.gz"
    for suffix in ("", ".fai", ".gzi"):
        shutil.copy(REPO / "data" / "hg38" / f"hg38_chr2_1-2333275.fa.gz{suffix}", f"{genome}{suffix}")
    table = REPO / "data" / "genomic_benchmarks" / "human_enhancers_cohn.test.tsv"
    dnadiff = str(env_dir / "bin" / "dnadiff")

    where = _run([str(py), "-c", "import dnadiff, dnadiff.ops.cpu_scan as k; "
                                 "print(dnadiff.__file__); print(dnadiff.__version__)"], work, env).stdout.split()
    assert Path(where[0]).resolve().is_relative_to(env_dir.resolve()), f"imported {where[0]}, not the installed wheel"
    assert _run([dnadiff, "--version"], work, env).stdout.strip() == f"dnadiff {where[1]}"

    t = time.perf_counter()
    _run([dnadiff, "pretrain", "--genome", str(genome), "--config", "demo", "--out", "run", "--max-steps", "2",
          "--no-progress", "train.val_every=2", "data.max_eval_windows=4"], work, env)
    figures["pretrain_s"] = round(time.perf_counter() - t, 1)
    assert (work / "run" / "model.pt").is_file() and (work / "run" / "config.yaml").is_file()

    t = time.perf_counter()
    _run([dnadiff, "finetune", "--task", "human_enhancers", "--data", str(table), "--checkpoint", "run/model.pt",
          "--folds", "2", "--max-epochs", "1", "--max-examples", "40", "--no-baselines", "--save-model", "--out", "ft"],
         work, env)
    figures["finetune_s"] = round(time.perf_counter() - t, 1)
    results = json.loads((work / "ft" / "results.json").read_text())
    assert results["task"] == "human_enhancers_cohn" and len(results["folds"]) == 2
    assert results["config"]["lr"] == 0.001  # the bundled configs/finetune/human_enhancers_cohn.yaml

    t = time.perf_counter()
    _run([dnadiff, "sample", "--checkpoint", "run/model.pt", "--num", "2", "--length", "32", "--steps", "4",
          "--out", "s.fa", "--seed", "0"], work, env)
    figures["sample_s"] = round(time.perf_counter() - t, 1)
    assert (work / "s.fa").read_text().count(">") == 2
    # classifier guidance with a saved classifier, and the Hugging Face export (the checkpoint package)
    _run([dnadiff, "sample", "--checkpoint", "run/model.pt", "--num", "2", "--length", "32", "--steps", "4",
          "--guide", "ft/classifier_fold_0.pt", "--target", "1", "--gamma", "2", "--out", "g.fa", "--seed", "0"],
         work, env)
    assert (work / "g.fa").read_text().count(">") == 2
    _run([dnadiff, "export", "--checkpoint", "run/model.pt", "--out", "hf"], work, env)
    assert (work / "hf" / "config.json").is_file() and (work / "hf" / "model.safetensors").is_file()
    figures["guided_sample_and_export_s"] = round(time.perf_counter() - t, 1)

    # the Python API in the installed package, and the backend the CPU Mamba path used
    probe = _run([str(py), "-c", """
import json, dnadiff
from dnadiff.ops import cpu_scan
clf = dnadiff.load("ft/classifier_fold_0.pt")
model = dnadiff.load("run/model.pt")
seqs = model.generate(2, length=40, steps=4, seed=0)
probs = clf.predict_proba(seqs)
print(json.dumps({"fused_cpu": cpu_scan.available(), "source": str(cpu_scan.SOURCE),
                  "rows": float(probs.sum(1).mean()), "classes": clf.class_names}))
"""], work, env)
    probe = json.loads(probe.stdout.strip().splitlines()[-1])
    assert probe["fused_cpu"], "the installed package fell back to the pure scan (cpu_scan.cpp not shipped or not built)"
    assert Path(probe["source"]).resolve().is_relative_to(env_dir.resolve())
    assert abs(probe["rows"] - 1.0) < 1e-6 and probe["classes"] == ["0", "1"]
    figures["total_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps({"wheel_install": figures, "backend": "fused CPU (C++)"}))
