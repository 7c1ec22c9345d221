"""Checks of the Triton selective scan through Triton's interpreter, run as a child process by
tests/test_triton_scan.py (TRITON_INTERPRET must be set before triton is imported, and must not leak
into the parent test process, where a GPU run would then interpret its kernels too).

Prints one JSON object: case -> {quantity: [error, tolerance]}. References: the sequential recurrence
``selective_scan_ref`` and its autograd gradients, in float64.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("DNADIFF_CPU_KERNEL", "0")

import json  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402

from dnadiff.models.mamba import Mamba  # noqa: E402
from dnadiff.ops.scan import selective_scan_ref  # noqa: E402
from dnadiff.ops.triton_scan import interpreting, selective_scan_triton  # noqa: E402

NAMES = "u delta A B C D z delta_bias".split()


def make_inputs(b=2, d=5, L=37, n=4, dtype=torch.float64, decay_scale=2.0, seed=0):
    """u, delta, A, B, C, D, z, delta_bias (A < 0), float64 values rounded to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    A = -torch.rand(d, n, generator=g, dtype=torch.float64) * decay_scale - 0.05
    args = [r(b, d, L), r(b, d, L), A, r(b, n, L), r(b, n, L), r(d), r(b, d, L), r(d)]
    keep32 = {2, 5, 7}  # A, D, delta_bias stay float32 (or wider) as Mamba passes them
    return [a.to(torch.float32 if (i in keep32 and dtype in (torch.float16, torch.bfloat16)) else dtype)
            for i, a in enumerate(args)]


def compare(args, use, block_l, softplus=True, tol_out=1e-12, tol_grad=1e-10, relative=False):
    """Triton vs reference (float64 copies of the same values): errors of y and of each gradient."""
    args = [a.clone().requires_grad_() for a in args]
    ref_args = [a.detach().double().requires_grad_() for a in args]
    pick = lambda a: [x if keep else None for x, keep in zip(a, use)]  # noqa: E731

    def call(fn, a, **kw):
        u, delta, A, B, C, D, z, bias = pick(a)
        return fn(u, delta, A, B, C, D, z, bias, softplus, **kw)

    out, ref = call(selective_scan_triton, args, block_l=block_l), call(selective_scan_ref, ref_args)
    gy = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(out.dtype)
    inputs = [a for a, keep in zip(args, use) if keep]
    ref_inputs = [a for a, keep in zip(ref_args, use) if keep]
    grads = torch.autograd.grad(out, inputs, gy)
    ref_grads = torch.autograd.grad(ref, ref_inputs, gy.double())
    scale = lambda t: (1.0 + t.abs().max().item()) if relative else 1.0  # noqa: E731
    result = {"dtype_mismatch": [float(out.dtype != args[0].dtype), 0.0],
              "y": [(out.double() - ref).abs().max().item() / scale(ref), tol_out]}
    names = [n for n, keep in zip(NAMES, use) if keep]
    for name, g, r in zip(names, grads, ref_grads):
        result[f"d{name}"] = [(g.double() - r).abs().max().item() / scale(r), tol_grad]
    return result


def model_case():
    """Mamba(kernels="triton") on CPU tensors (interpreted) vs Mamba(kernels="pure"): output and every
    parameter's gradient, float64."""
    torch.manual_seed(0)
    pure = Mamba(8, d_state=4, kernels="pure").double()
    tri = Mamba(8, d_state=4, kernels="triton").double()
    tri.load_state_dict(pure.state_dict())
    x = torch.randn(2, 13, 8, dtype=torch.float64)
    outs = []
    for m in (pure, tri):
        y = m(x)
        y.square().sum().backward()
        outs.append((y, {n: p.grad for n, p in m.named_parameters()}))
    result = {"y": [(outs[0][0] - outs[1][0]).abs().max().item(), 1e-12]}
    for name, g in outs[0][1].items():
        result[f"d{name}"] = [(g - outs[1][1][name]).abs().max().item() / (1 + g.abs().max().item()), 1e-10]
    return result


def no_grad_case():
    """Under no_grad (no block states stored) the output is the same as with autograd recording."""
    args = make_inputs(L=21)
    with torch.no_grad():
        plain = selective_scan_triton(*args, True, block_l=8)
    recorded = selective_scan_triton(*[a.clone().requires_grad_() for a in args], True, block_l=8)
    return {"y": [(plain - recorded.detach()).abs().max().item(), 0.0],
            "dtype_mismatch": [float(plain.dtype != args[0].dtype), 0.0]}


def strided_case():
    """Inputs laid out as Mamba passes them: delta, B, C transposed views, z half of a chunked tensor."""
    b, d, n, L = 2, 6, 4, 21
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    xz = r(b, 2 * d, L)
    u, z = xz.chunk(2, dim=1)
    delta = r(b, L, d).transpose(1, 2)
    BC = r(b, L, 2 * n)
    B, C = BC[..., :n].transpose(1, 2), BC[..., n:].transpose(1, 2)
    A = -torch.rand(d, n, generator=g, dtype=torch.float64) - 0.1
    args = [u, delta, A, B, C, r(d), z, r(d)]
    assert not delta.is_contiguous() and B.stride(-1) != 1
    return compare(args, [True] * 8, block_l=8)


def main():
    assert interpreting(), "TRITON_INTERPRET was not honoured"
    every = [True] * 8
    cases = {}
    for L, block_l in [(37, 8), (32, 8), (5, 16), (1, 8)]:  # lengths that are and are not block multiples
        cases[f"float64_L{L}_block{block_l}"] = compare(make_inputs(L=L), every, block_l)
    cases["no_z_no_D"] = compare(make_inputs(L=19), [True] * 5 + [False, False, True], 8)
    cases["no_bias_no_softplus"] = compare(make_inputs(L=19), [True] * 7 + [False], 8, softplus=False,
                                           relative=True)  # negative steps: growing states
    cases["odd_states_and_channels"] = compare(make_inputs(b=1, d=9, n=3, L=21), every, 8)
    cases["strided_inputs"] = strided_case()
    cases["float32"] = compare(make_inputs(L=40, dtype=torch.float32), every, 16,
                               tol_out=1e-5, tol_grad=1e-5, relative=True)
    cases["large_decays_float32"] = compare(make_inputs(L=30, dtype=torch.float32, decay_scale=1000.0),
                                            every, 8, tol_out=1e-5, tol_grad=1e-4, relative=True)
    # half inputs: states in float32, so the only errors are the roundings of y and of the gradients
    for name, dtype, eps in [("bfloat16", torch.bfloat16, 2 ** -8), ("float16", torch.float16, 2 ** -11)]:
        cases[name] = compare(make_inputs(L=24, dtype=dtype), every, 8, tol_out=2 * eps, tol_grad=4 * eps,
                              relative=True)
    cases["mamba_module"] = model_case()
    cases["no_grad_matches"] = no_grad_case()
    json.dump(cases, sys.stdout)


if __name__ == "__main__":
    main()
