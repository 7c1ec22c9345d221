"""The fused C++ CPU selective scan equals the sequential reference in values and all gradients."""
from pathlib import Path

import pytest
import torch

from dnadiff.models import cpu_scan
from dnadiff.models.scan import selective_scan_ref

if not cpu_scan.available():
    pytest.skip("fused CPU scan extension cannot be built here (compiler/ninja missing or disabled)",
                allow_module_level=True)


def _inputs(b, d, n, L, dtype, scale=3.0):
    g = torch.Generator().manual_seed(b * 1000 + L)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return [r(b, d, L), r(b, d, L), -torch.rand(d, n, generator=g, dtype=dtype) * scale, r(b, n, L), r(b, n, L),
            r(d), r(b, d, L), r(d)]


@pytest.mark.parametrize("b,d,n,L,gate", [(1, 3, 4, 1, True), (2, 5, 4, 37, True), (3, 4, 16, 129, False),
                                          (2, 7, 3, 253, True)])
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
