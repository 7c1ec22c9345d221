"""The Triton selective scan: exactness through Triton's interpreter (forward and every gradient against
the sequential recurrence, in a child process), its compilation for GPU targets (no GPU needed), and
the kernel dispatch order."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from dnadiff.errors import UserError
from dnadiff.ops import scan, triton_scan

REPO = Path(__file__).resolve().parents[1]
needs_triton = pytest.mark.skipif(not triton_scan.available(), reason="triton>=3.0 is not installed")


@pytest.fixture(scope="module")
def interpreter_results():
    """Run tests/triton_interpreter_cases.py once under TRITON_INTERPRET=1 in a child process."""
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "triton_interpreter_cases.py")], env=env,
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


CASES = ["float64_L37_block8", "float64_L32_block8", "float64_L5_block16", "float64_L1_block8", "no_z_no_D",
         "no_bias_no_softplus", "odd_states_and_channels", "strided_inputs", "float32", "large_decays_float32",
         "bfloat16", "float16", "mamba_module", "no_grad_matches"]


@needs_triton
@pytest.mark.parametrize("case", CASES)
def test_interpreted_triton_scan_matches_sequential_recurrence(interpreter_results, case):
    """y and the gradients in u, delta, A, B, C, D, z, delta_bias against selective_scan_ref (float64):
    lengths that are and are not multiples of the block, with and without z / D / delta_bias / softplus,
    half-precision inputs within their rounding, and a Mamba block with kernels="triton"."""
    result = interpreter_results[case]
    assert "y" in result and len(result) >= (2 if case == "no_grad_matches" else 4)  # y, dtype, gradients
    bad = {name: err for name, (err, tol) in result.items() if not err <= tol}
    assert not bad, f"{case}: errors above tolerance {bad}"


@needs_triton
def test_interpreter_setting_does_not_leak_into_this_process(interpreter_results):
    """The child ran interpreted; this process (where GPU tests run compiled kernels) did not switch."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("the whole session was started under TRITON_INTERPRET=1")
    assert not triton_scan.interpreting()


@needs_triton
@pytest.mark.slow
@pytest.mark.parametrize("arch", [80, 90])
def test_kernels_compile_for_gpu_targets(arch):
    """Both kernels compile to a cubin for sm_80 / sm_90 with bf16 inputs (Triton's bundled ptxas; no GPU)."""
    if triton_scan.interpreting():
        pytest.skip("triton imported under TRITON_INTERPRET")
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from dnadiff.ops import triton_scan_kernels as kernels

    wide = {"A_ptr", "D_ptr", "bias_ptr", "state_ptr", "gA_ptr", "gB_ptr", "gC_ptr", "gD_ptr", "gbias_ptr"}
    flags = {"HAS_D", "HAS_Z", "HAS_BIAS", "SOFTPLUS", "STORE_STATES"}
    meta = {"CD": tl.float32, "BLOCK_D": 4, "BLOCK_N": 16, "BLOCK_L": triton_scan.default_block_l(1024, 16)}
    for fn in (kernels.scan_fwd, kernels.scan_bwd):
        signature = {name: ("*fp32" if name in wide else "*bf16") if name.endswith("_ptr")
                     else "constexpr" if name in flags or name in meta else "i32" for name in fn.arg_names}
        constants = {**{f: True for f in flags if f in fn.arg_names}, **meta}
        try:
            compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constants),
                                      target=GPUTarget("cuda", arch, 32), options={"num_warps": 4})
        except (RuntimeError, FileNotFoundError) as error:  # no bundled ptxas on this platform
            if "ptxas" in str(error).lower():
                pytest.skip(f"no ptxas: {error}")
            raise
        assert len(compiled.asm["cubin"]) > 1000


def _fake_tensor(cuda: bool):
    """Stands in for a tensor in scan_backend: only is_cuda and dtype are read on the CUDA branch."""
    return types.SimpleNamespace(is_cuda=cuda, dtype=torch.float32, device=torch.device("cuda" if cuda else "cpu"))


@pytest.mark.parametrize("mamba,triton_ok,kernels,expected", [
    (True, True, "auto", "mamba-ssm"), (False, True, "auto", "triton"), (False, False, "auto", "pure"),
    (True, True, "triton", "triton"), (True, True, "cuda", "mamba-ssm"), (True, True, "pure", "pure"),
    (True, False, "triton", "pure"),
])
def test_cuda_dispatch_order(monkeypatch, mamba, triton_ok, kernels, expected):
    """kernels=auto on CUDA tensors: mamba-ssm, then Triton, then the pure scan."""
    monkeypatch.setattr(scan, "_mamba_scan", (lambda *a: None) if mamba else None)
    monkeypatch.setattr(triton_scan, "available", lambda: triton_ok)
    u = _fake_tensor(cuda=True)
    assert scan.scan_backend(u, kernels, u, u) == expected


def test_cpu_dispatch_never_picks_compiled_kernels():
    u = torch.randn(1, 2, 5)
    A = -torch.ones(2, 3)
    assert scan.scan_backend(u, "pure", u, A) == "pure"
    assert scan.scan_backend(u, "auto", u, A) in ("cpp", "pure")
    if not (triton_scan.available() and triton_scan.interpreting()):
        assert scan.scan_backend(u, "triton", u, A) == "pure"  # a CPU tensor: no compiled Triton
        if not torch.cuda.is_available():
            with pytest.raises(UserError, match="kernels='triton' needs triton"):
                scan.check_kernels("triton")


def test_everything_else_works_without_triton():
    """With triton unimportable: the package imports, the Triton scan reports unavailable, kernels='triton'
    is refused in one line, and a Mamba block runs forward and backward on the other paths."""
    code = """
import sys
sys.modules["triton"] = None  # import triton -> ImportError
import torch
from dnadiff.errors import UserError
from dnadiff.models import build_model
from dnadiff.ops import scan, triton_scan
from dnadiff.models.mamba import Mamba
assert not triton_scan.available()
try:
    scan.check_kernels("triton")
    raise SystemExit("kernels='triton' accepted without triton")
except UserError as error:
    assert "pip install triton" in str(error)
m = Mamba(8, d_state=4)
x = torch.randn(2, 9, 8, requires_grad=True)
m(x).sum().backward()
assert torch.isfinite(x.grad).all()
assert scan.scan_backend(x, "auto", x, x) in ("cpp", "pure")
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
