"""The fused C++ CPU selective scan equals the sequential reference in values and all gradients."""
from pathlib import Path

import pytest
import torch

import torch.nn.functional as F

from dnadiff.ops import cpu_scan
from dnadiff.models.bimamba import BiMamba
from dnadiff.models.mamba import Mamba
from dnadiff.ops.scan import selective_scan_ref

if not cpu_scan.available():
    pytest.skip("fused CPU scan extension cannot be built here (compiler/ninja missing or disabled)",
                allow_module_level=True)


def _inputs(b, d, n, L, dtype, scale=3.0):
    g = torch.Generator().manual_seed(b * 1000 + L)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return [r(b, d, L), r(b, d, L), -torch.rand(d, n, generator=g, dtype=dtype) * scale, r(b, n, L), r(b, n, L),
            r(d), r(b, d, L), r(d)]


# d past one block of 16 channels and past 8 groups of blocks (tails, several blocks per task); L past
# one backward chunk of 64 positions (chunk starts saved by the forward), partial last chunk; n = 16 (the
# kernel's compile-time state count) with and without the gate and softplus
@pytest.mark.parametrize("b,d,n,L,gate", [(1, 3, 4, 1, True), (2, 5, 4, 37, True), (3, 4, 16, 129, False),
                                          (2, 7, 3, 253, True), (2, 37, 5, 64, True), (1, 150, 2, 65, True),
                                          (2, 20, 4, 200, True), (2, 40, 16, 150, True)])
def test_matches_reference_float64(b, d, n, L, gate):
    xs = [x.requires_grad_() for x in _inputs(b, d, n, L, torch.float64)]
    kw = dict(D=xs[5], z=xs[6] if gate else None, delta_bias=xs[7], delta_softplus=gate)
    y_ref = selective_scan_ref(*xs[:5], **kw)
    y = cpu_scan.selective_scan_cpu(*xs[:5], **kw)
    gy = torch.randn_like(y_ref)
    used = [x for i, x in enumerate(xs) if i != 6 or gate]
    for a, e in zip(torch.autograd.grad(y, used, gy), torch.autograd.grad(y_ref, used, gy)):
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("softplus,with_d,with_bias", [(False, True, True), (True, False, False), (False, False, True)])
def test_optional_parts_match_reference_float64(softplus, with_d, with_bias):
    """No softplus (delta used as given), no skip D, no delta bias: values and every gradient."""
    xs = [x.requires_grad_() for x in _inputs(2, 19, 4, 70, torch.float64)]
    if not softplus:
        with torch.no_grad():
            xs[1].abs_()  # a positive step without softplus
    kw = dict(D=xs[5] if with_d else None, z=xs[6], delta_bias=xs[7] if with_bias else None, delta_softplus=softplus)
    used = [x for i, x in enumerate(xs) if (i != 5 or with_d) and (i != 7 or with_bias)]
    y, y_ref = cpu_scan.selective_scan_cpu(*xs[:5], **kw), selective_scan_ref(*xs[:5], **kw)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)
    gy = torch.randn_like(y_ref)
    for a, e in zip(torch.autograd.grad(y, used, gy), torch.autograd.grad(y_ref, used, gy)):
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-10)


def test_channel_last_entry_takes_strided_views():
    """The channel-last entry reads views of the projections' outputs (row strides past the width)."""
    g = torch.Generator().manual_seed(3)
    b, L, d, n = 2, 90, 21, 4
    xz = torch.randn(b, L, 2 * d, generator=g, dtype=torch.float64)
    dbc = torch.randn(b, L, 3 + 2 * n, generator=g, dtype=torch.float64)
    u, z = xz.chunk(2, dim=-1)
    delta, B, C = dbc[..., :3] @ torch.randn(3, d, generator=g, dtype=torch.float64), dbc[..., 3:3 + n], dbc[..., 3 + n:]
    A = -torch.rand(d, n, generator=g, dtype=torch.float64) * 3
    D, bias = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    y = cpu_scan.selective_scan_cpu_cl(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True)
    t = lambda x: x.transpose(1, 2)  # noqa: E731
    y_ref = selective_scan_ref(t(u), t(delta), A, t(B), t(C), D, z=t(z), delta_bias=bias, delta_softplus=True)
    assert not u.is_contiguous() and not B.is_contiguous()
    torch.testing.assert_close(y, t(y_ref), atol=1e-10, rtol=1e-10)


def test_float32_softplus_is_accurate_over_its_range():
    """The kernel's own float32 exp/log: with A = 0, B = C = u = 1 and L = 1, y = softplus(delta)."""
    x = torch.linspace(-60, 40, 100001).view(-1, 1, 1)
    ones = torch.ones_like(x)
    y = cpu_scan.selective_scan_cpu_cl(ones, x, torch.zeros(1, 1), ones, ones, delta_softplus=True)
    ref = F.softplus(x.double())
    assert ((y.double() - ref).abs() / ref).max() < 1e-6


@pytest.mark.parametrize("b,L,d,k", [(2, 7, 5, 4), (3, 70, 37, 4), (1, 2, 20, 4), (2, 9, 16, 2)])
def test_causal_conv_silu_matches_conv1d_float64(b, L, d, k):
    g = torch.Generator().manual_seed(L)
    xz = torch.randn(b, L, 2 * d, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(d, k, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(d, generator=g, dtype=torch.float64, requires_grad=True)
    x = xz[..., :d]  # a strided view, as Mamba passes it
    u = cpu_scan.causal_conv_silu_cl(x, w, bias)
    ref = F.silu(F.conv1d(x.transpose(1, 2), w[:, None], bias, padding=k - 1, groups=d)[..., :L]).transpose(1, 2)
    torch.testing.assert_close(u, ref, atol=1e-12, rtol=1e-12)
    gu = torch.randn_like(ref)
    for a, e in zip(torch.autograd.grad(u, [xz, w, bias], gu), torch.autograd.grad(ref, [xz, w, bias], gu)):
        torch.testing.assert_close(a, e, atol=1e-12, rtol=1e-12)


def _randomized(module, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_mamba_fused_path_equals_pure_path(dtype, tol):
    """Mamba on CPU with kernels='auto' (fused C++ conv and scan, channel-last) against kernels='pure'
    (conv1d and the chunked PyTorch scan): outputs and every parameter's gradient."""
    fused = _randomized(Mamba(24, d_state=8), 0).to(dtype)
    pure = Mamba(24, d_state=8, kernels="pure").to(dtype)
    pure.load_state_dict(fused.state_dict())
    x = torch.randn(3, 100, 24, dtype=dtype, generator=torch.Generator().manual_seed(1))
    y_f, y_p = fused(x), pure(x)
    torch.testing.assert_close(y_f, y_p, atol=tol, rtol=tol)
    gy = torch.randn_like(y_p)
    grads_f = torch.autograd.grad(y_f, list(fused.parameters()), gy)
    grads_p = torch.autograd.grad(y_p, list(pure.parameters()), gy)
    for (name, _), a, e in zip(fused.named_parameters(), grads_f, grads_p):
        torch.testing.assert_close(a, e, atol=tol * max(1.0, e.abs().max().item()), rtol=tol, msg=name)


def test_bimamba_fused_path_with_lengths_equals_pure_path():
    fused = _randomized(BiMamba(16, d_state=4), 2).double()
    pure = BiMamba(16, d_state=4, kernels="pure").double()
    pure.load_state_dict(fused.state_dict())
    x = torch.randn(3, 80, 16, dtype=torch.float64)
    lengths = torch.tensor([80, 41, 67])
    torch.testing.assert_close(fused(x, lengths), pure(x, lengths), atol=1e-10, rtol=1e-10)


def test_float32_and_large_decays():
    xs = _inputs(2, 5, 8, 300, torch.float32, scale=1e4)
    xs = [x.requires_grad_() for x in xs]
    y = cpu_scan.selective_scan_cpu(*xs[:5], D=xs[5], z=xs[6], delta_bias=xs[7], delta_softplus=True)
    y_ref = selective_scan_ref(*xs[:5], D=xs[5], z=xs[6], delta_bias=xs[7], delta_softplus=True)
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
    y.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in xs)


def test_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path, monkeypatch):
    """A compile killed mid-build leaves torch's lock file; torch would wait on it forever."""
    import os
    import time as _time

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    from torch.utils.cpp_extension import _get_build_directory

    name = "dnadiff_lock_probe"
    lock = Path(_get_build_directory(name, verbose=False)) / "lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.touch()
    cpu_scan._remove_stale_lock(name)
    assert lock.exists()  # a build may be running: keep it
    old = _time.time() - cpu_scan.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    cpu_scan._remove_stale_lock(name)
    assert not lock.exists()
