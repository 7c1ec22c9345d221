"""Selective scan: the chunked pure-PyTorch scan equals the sequential recurrence (values and gradients)."""
from __future__ import annotations

import pytest
import torch

from dnadiff.errors import UserError
from dnadiff.ops import scan
from dnadiff.ops.scan import check_kernels, selective_scan, selective_scan_chunked, selective_scan_ref


def make_inputs(b=2, d=5, L=37, n=4, dtype=torch.float64, decay_scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    A = -torch.rand(d, n, generator=g, dtype=dtype) * decay_scale - 0.05
    args = [r(b, d, L), r(b, d, L), A, r(b, n, L), r(b, n, L), r(d), r(b, d, L), r(d)]
    return [a.requires_grad_() for a in args]


def run(fn, args, **kw):
    u, delta, A, B, C, D, z, bias = args
    return fn(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True, **kw)


@pytest.mark.parametrize("L,chunk", [(1, 1), (37, 4), (37, 8), (64, 8), (64, 64), (100, 16), (5, 32)])
def test_chunked_equals_sequential_values_and_gradients(L, chunk):
    args = make_inputs(L=L)
    ref, out = run(selective_scan_ref, args), run(selective_scan_chunked, args, chunk=chunk)
    assert torch.allclose(out, ref, atol=1e-12, rtol=1e-10)
    gy = torch.randn_like(ref)
    g_ref = torch.autograd.grad(ref, args, gy)
    g_out = torch.autograd.grad(out, args, gy)
    for name, a, b in zip("u delta A B C D z delta_bias".split(), g_ref, g_out):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-8), name


def test_gradcheck_float64_tiny():
    args = make_inputs(b=1, d=3, L=11, n=2)
    assert torch.autograd.gradcheck(lambda *a: run(selective_scan_chunked, a, chunk=4), args)


def test_channel_tiles_give_the_same_result(monkeypatch):
    args = make_inputs(b=2, d=7, L=30, n=3)
    whole = run(selective_scan_chunked, args)
    g_whole = torch.autograd.grad(whole.sum(), args)
    monkeypatch.setattr(scan, "TILE_ELEMENTS", 1)  # one channel per tile
    tiled = run(selective_scan_chunked, args)
    assert torch.allclose(tiled, whole, atol=1e-13)
    for a, b in zip(torch.autograd.grad(tiled.sum(), args), g_whole):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_decays_do_not_overflow(dtype):
    # delta * |A| up to ~ 5e3 per step: a cumulative-sum-of-logs scan without care would overflow
    args = make_inputs(b=2, d=4, L=50, n=4, dtype=dtype, decay_scale=1000.0)
    with torch.no_grad():
        args[1].mul_(5).add_(3)  # large positive steps
    ref, out = run(selective_scan_ref, args), run(selective_scan_chunked, args, chunk=16)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, ref, atol=1e-5 if dtype == torch.float32 else 1e-12)
    grads = torch.autograd.grad(out.sum(), args)
    assert all(torch.isfinite(g).all() for g in grads)


def test_float32_matches_float64_reference():
    args64 = make_inputs(b=2, d=6, L=200, n=16)
    args32 = [a.detach().float().requires_grad_() for a in args64]
    ref = run(selective_scan_ref, args64)
    out = run(selective_scan_chunked, args32)
    assert (out.double() - ref).abs().max() < 1e-4


def test_dispatch_on_cpu():
    """"pure" is exactly the chunked scan; "auto" (the fused C++ scan when it builds) computes the same function."""
    args = make_inputs(L=20)
    assert torch.equal(run(selective_scan, args, kernels="pure"), run(selective_scan_chunked, args))
    torch.testing.assert_close(run(selective_scan, args, kernels="auto"), run(selective_scan_chunked, args),
                               rtol=1e-9, atol=1e-10)


def test_kernel_settings_are_checked():
    assert check_kernels("pure") == "pure"
    with pytest.raises(UserError, match="unknown kernels setting"):
        check_kernels("fast")
    if scan._mamba_scan is None or not torch.cuda.is_available():
        with pytest.raises(UserError, match="mamba-ssm and a CUDA GPU"):
            check_kernels("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(scan._mamba_scan is None or not torch.cuda.is_available(),
                    reason="mamba-ssm parity needs mamba_ssm and a CUDA GPU (absent here)")
def test_pure_scan_matches_mamba_ssm_cuda_kernel():
    args = [a.detach().float().cuda().requires_grad_() for a in make_inputs(b=2, d=64, L=300, n=16)]
    ref = run(selective_scan, args, kernels="cuda")
    out = run(selective_scan, args, kernels="pure")
    assert (out - ref).abs().max() < 1e-3
    gy = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(ref, args, gy), torch.autograd.grad(out, args, gy)):
        assert (a - b).abs().max() <= 1e-2 * (1 + a.abs().max())


@pytest.mark.parametrize("dtype,eps", [(torch.bfloat16, 2 ** -8), (torch.float16, 2 ** -11)])
def test_pure_scan_accumulates_half_inputs_in_float32(dtype, eps):
    """Half inputs (no delta_bias, so nothing promotes them): the only error left is y's final rounding."""
    args = [a.detach() for a in make_inputs(b=2, d=4, L=300, n=8)]
    half = [a.to(dtype) for a in args]
    u, delta, A, B, C, D, z, _ = half
    out = selective_scan_chunked(u, delta, A.float(), B, C, D.float(), z=z, delta_softplus=True)
    ref = selective_scan_ref(*[a.double() for a in (u, delta, A, B, C, D)], z=z.double(), delta_softplus=True)
    assert out.dtype == dtype
    assert ((out.double() - ref).abs() <= eps * ref.abs() + 1e-6).all()


def test_pure_scan_does_not_loop_over_positions():
    """Torch calls made by a forward + backward grow like sqrt(L) (loops over chunk offsets and chunks),
    not like L: 16x the length costs at most 6x the calls."""
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    def calls(L):
        args = make_inputs(b=1, d=2, L=L, n=2, dtype=torch.float32)
        Count.calls = 0
        with Count():
            run(selective_scan_chunked, args).sum().backward()
        return Count.calls

    short, long = calls(256), calls(4096)
    assert long < 6 * short, (short, long)
