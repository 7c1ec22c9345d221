"""benchmarks/gpu_check.sh parses, and the CUDA benchmark grid of benchmarks/backbone.py runs (on the CPU,
as gpu_check.sh's DRY_RUN does) and prints one JSON line with a row per size/length/kernel."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_gpu_check_script_parses():
    proc = subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_backbone_grid_prints_one_json_line_per_run():
    env = dict(os.environ, OMP_NUM_THREADS="1", DNADIFF_CPU_KERNEL="0",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "backbone.py"), "--grid", "--sizes", "demo",
                           "--variants", "ph,ps", "--lengths", "32,64", "--tokens", "64", "--repeats", "1",
                           "--kernels", "pure"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    rows = {k for k in result if k.startswith("cpu_demo_")}
    assert rows == {"cpu_demo_ph_L32_b2_pure", "cpu_demo_ps_L32_b2_pure", "cpu_demo_ph_L64_b1_pure",
                    "cpu_demo_ps_L64_b1_pure"}
    for key in rows:
        assert set(result[key]) == {"fwd_bwd_s", "train_tokens_per_s", "infer_tokens_per_s"}
