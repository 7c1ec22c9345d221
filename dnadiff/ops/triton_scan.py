"""Selective scan in Triton (forward and backward) for CUDA tensors when mamba-ssm is absent.

Same arguments and result as :func:`dnadiff.ops.scan.selective_scan_ref`: delta bias and softplus,
the D skip and the z gate are fused into the kernels of :mod:`triton_scan_kernels`; states accumulate
in float32 (float64 for float64 inputs) whatever the input dtype (bfloat16, float16, float32).
The forward pass stores the state at the end of every block of ``block_l`` positions when a gradient
is needed ([B, D, N, ceil(L / block_l)] floats); the backward pass rebuilds the states inside each
block from it. Gradients reach u, delta, A, B, C, D, z and delta_bias.

CUDA tensors run the compiled kernels (channels per program and warps autotuned once per shape).
When triton is imported under ``TRITON_INTERPRET=1`` (set before the import: the tests do it in a
child process), the same kernels run through Triton's interpreter, on CPU tensors too (slowly). Triton is
optional (``pip install -e ".[gpu]"``): without it :func:`available` is False and nothing here runs.
"""
from __future__ import annotations

import contextlib
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the machine
    triton = tl = None

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MIN_TRITON = (3, 0)  # associative_scan(reverse=True)
_tuned: dict = {}  # (BLOCK_N, BLOCK_L) -> the autotuned (forward, backward) launchers


def available() -> bool:
    """True when a recent enough triton is importable."""
    if triton is None:
        return False
    try:
        version = tuple(int(p) for p in triton.__version__.split(".")[:2])
    except ValueError:  # pragma: no cover - unusual version string
        return True
    return version >= MIN_TRITON


def supports(u: torch.Tensor) -> bool:
    """True when the compiled kernels can take ``u`` (a CUDA tensor of a supported dtype)."""
    return u.is_cuda and u.dtype in DTYPES and available()


def default_block_l(length: int, d_state: int) -> int:
    """Positions per block: 32 for up to 16 states, fewer for more (the block's [D, N, L] tile stays
    at most 512 x BLOCK_D elements, in registers); never much past the length."""
    block = max(8, 512 // triton.next_power_of_2(d_state))
    return max(8, min(block, triton.next_power_of_2(max(1, length))))


def interpreting() -> bool:
    """True when triton was imported under ``TRITON_INTERPRET=1``: kernels then run on CPU tensors."""
    from dnadiff.ops import triton_scan_kernels as module

    return type(module.scan_fwd).__name__ == "InterpretedFunction"


def _configs(block_n: int, block_l: int):
    """(channels per program, warps) for the autotuner: those whose [BLOCK_D, BLOCK_N, BLOCK_L] tile
    holds at most 16 elements per thread (more spills registers in the backward kernel).
    ``DNADIFF_TRITON_AUTOTUNE=0`` keeps one of them (no benchmarking on first use)."""
    tile = lambda bd, w: bd * block_n * block_l / (32 * w)  # noqa: E731
    # (1, 2): one channel per program, for long sequences at batch 1 (programs = batch x channels / BLOCK_D)
    options = [(bd, w) for bd, w in ((1, 2), (2, 4), (4, 4), (4, 8), (8, 8)) if tile(bd, w) <= 16] or [(1, 8)]
    if os.environ.get("DNADIFF_TRITON_AUTOTUNE", "1").strip().lower() in ("0", "false", "no", "off"):
        options = [(4, 4)] if (4, 4) in options else options[:1]  # no benchmarking
    return [triton.Config({"BLOCK_D": bd}, num_warps=w) for bd, w in options]


def _launchers(device: torch.device, block_n: int, block_l: int):
    """(forward, backward, fixed meta-parameters): autotuned on CUDA, BLOCK_D = 4 under the interpreter."""
    from dnadiff.ops import triton_scan_kernels as module

    if interpreting():
        return module.scan_fwd, module.scan_bwd, {"BLOCK_D": 4}
    if device.type != "cuda":
        raise RuntimeError("the Triton scan runs on CUDA tensors (CPU tensors only under TRITON_INTERPRET=1, "
                           "set before triton is imported)")
    if (block_n, block_l) not in _tuned:
        # tuned once per width, state size and batch (rounded up to a power of two): the batch sets how
        # many programs run side by side, hence how many channels each should take
        key, configs = ["Dm", "N", "rows_bucket"], _configs(block_n, block_l)
        fwd = triton.autotune(configs, key=key)(module.scan_fwd)
        bwd = triton.autotune(configs, key=key, reset_to_zero=["gB_ptr", "gC_ptr"])(module.scan_bwd)
        _tuned[(block_n, block_l)] = (fwd, bwd)
    return (*_tuned[(block_n, block_l)], {})


def tuned_configs() -> dict:
    """What the autotuner picked so far: {"fwd|bwd BLOCK_Nxblock_l key": "BLOCK_D=.. warps=.."} (for reports)."""
    picks = {}
    for (block_n, block_l), launchers in _tuned.items():
        for name, tuner in zip(("fwd", "bwd"), launchers):
            for key, config in getattr(tuner, "cache", {}).items():
                picks[f"{name} N{block_n} L{block_l} {key[:3]}"] = \
                    f"BLOCK_D={config.kwargs.get('BLOCK_D')} warps={config.num_warps}"
    return picks


def _unit_stride(x: torch.Tensor) -> torch.Tensor:
    """x with stride 1 along its last dimension (copied only when needed)."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _compute_types(u: torch.Tensor):
    return (torch.float64, tl.float64) if u.dtype == torch.float64 else (torch.float32, tl.float32)


def _forward(u, delta, A, B, C, D, z, bias, softplus, block_l, store_states):
    b, d, L = u.shape
    n = A.shape[1]
    acc, cd = _compute_types(u)
    out = torch.empty((b, d, L), dtype=u.dtype, device=u.device)
    states = (torch.empty((b, d, n, triton.cdiv(L, block_l)), dtype=acc, device=u.device) if store_states
              else out)
    block_n = triton.next_power_of_2(n)
    fwd, _, meta = _launchers(u.device, block_n, block_l)
    zz = u if z is None else z
    grid = lambda m: (b, triton.cdiv(d, m["BLOCK_D"]))  # noqa: E731
    fwd[grid](u, delta, A, B, C, u if D is None else D, zz, u if bias is None else bias, out, states,
              d, n, L, u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), zz.stride(0), zz.stride(1),
              B.stride(0), B.stride(1), C.stride(0), C.stride(1), triton.next_power_of_2(b),
              HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None, SOFTPLUS=softplus,
              STORE_STATES=store_states, CD=cd, BLOCK_N=block_n, BLOCK_L=block_l, **meta)
    return out, (states if store_states else None)


def _backward(u, delta, A, B, C, D, z, bias, states, gout, softplus, block_l):
    b, d, L = u.shape
    n = A.shape[1]
    acc, cd = _compute_types(u)
    dev = u.device
    gu = torch.empty((b, d, L), dtype=u.dtype, device=dev)
    gdelta = torch.empty((b, d, L), dtype=delta.dtype, device=dev)
    gz = torch.empty((b, d, L), dtype=z.dtype, device=dev) if z is not None else gu
    gA = torch.empty((b, d, n), dtype=acc, device=dev)
    gB = torch.zeros((b, n, L), dtype=acc, device=dev)
    gC = torch.zeros((b, n, L), dtype=acc, device=dev)
    gD = torch.empty((b, d), dtype=acc, device=dev)
    gbias = torch.empty((b, d), dtype=acc, device=dev)
    block_n = triton.next_power_of_2(n)
    _, bwd, meta = _launchers(dev, block_n, block_l)
    zz = u if z is None else z
    grid = lambda m: (b, triton.cdiv(d, m["BLOCK_D"]))  # noqa: E731
    bwd[grid](u, delta, A, B, C, u if D is None else D, zz, u if bias is None else bias, states, gout,
              gu, gdelta, gz, gA, gB, gC, gD, gbias,
              d, n, L, u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), zz.stride(0), zz.stride(1),
              B.stride(0), B.stride(1), C.stride(0), C.stride(1), gout.stride(0), gout.stride(1),
              triton.next_power_of_2(b),
              HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None, SOFTPLUS=softplus,
              CD=cd, BLOCK_N=block_n, BLOCK_L=block_l, **meta)
    return (gu, gdelta, gA.sum(0).to(A.dtype), gB.to(B.dtype), gC.to(C.dtype),
            None if D is None else gD.sum(0).to(D.dtype), gz if z is not None else None,
            None if bias is None else gbias.sum(0).to(bias.dtype))


class _TritonScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, block_l, needs_grad):
        u, delta, B, C = _unit_stride(u), _unit_stride(delta), _unit_stride(B), _unit_stride(C)
        z = None if z is None else _unit_stride(z)
        A = A.contiguous()
        D = None if D is None else D.contiguous()
        delta_bias = None if delta_bias is None else delta_bias.contiguous()
        out, states = _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, block_l, needs_grad)
        if needs_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
            ctx.softplus, ctx.block_l = delta_softplus, block_l
        return out

    @staticmethod
    def backward(ctx, gout):
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        with torch.cuda.device(u.device) if u.is_cuda else contextlib.nullcontext():
            grads = _backward(u, delta, A, B, C, D, z, delta_bias, states, _unit_stride(gout), ctx.softplus,
                              ctx.block_l)
        return (*grads, None, None, None)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          block_l: int | None = None):
    """Triton selective scan, same arguments and result as ``scan.selective_scan_ref``.

    u, delta, z: [B, D, L]; A: [D, N]; B, C: [B, N, L]; D, delta_bias: [D]. Differentiable in all of
    them. CUDA tensors use compiled kernels (launched on u's device), CPU tensors the interpreter
    (under ``TRITON_INTERPRET=1``). ``block_l``: positions per
    block (a power of two; default :func:`default_block_l`). Returns y: [B, D, L] in u's dtype.
    """
    if not available():
        raise RuntimeError("the Triton selective scan needs triton>=3.0: pip install triton")
    if B.dim() != 3 or C.dim() != 3:
        raise ValueError("the Triton scan takes B and C of shape [batch, d_state, length]")
    block_l = block_l or default_block_l(u.shape[-1], A.shape[1])
    # block states are stored only for a backward pass (not under no_grad, e.g. when sampling)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias))
    with torch.cuda.device(u.device) if u.is_cuda else contextlib.nullcontext():  # launch on u's GPU
        return _TritonScan.apply(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), int(block_l),
                                 needs_grad)
