"""Mamba's selective scan: a sequential reference, a chunked pure-PyTorch scan, and dispatch to fused kernels.

The recurrence (per batch b, channel d, state n; mamba-ssm's ``selective_scan_ref``)::

    delta = softplus(delta + delta_bias)          (when delta_softplus)
    h_l   = exp(delta_l * A) * h_{l-1} + delta_l * u_l * B_l
    y_l   = <C_l, h_l> + D * u_l,    out = y * silu(z)

Shapes everywhere: ``u, delta, z: [B, D, L]``, ``A: [D, N]``, ``B, C: [B, N, L]``, ``D, delta_bias: [D]``.

The pure path never loops in Python over positions. The length is cut into K chunks of T positions;
a loop over the T offsets runs all chunks at once (local scans from a zero state, with the running
product of decays), then a loop over the K chunks adds each chunk's incoming state times that
product. Only products of decays in (0, 1] appear, so no exponent can overflow, whatever the decay.
Gradients come from the adjoint recurrence (a reverse scan with the same decays), recomputing the
states instead of storing them, tile by tile over channels so the working memory stays bounded.
The Python loops are over chunk offsets and chunks (about 2 sqrt(L) iterations per tile), never over
positions; bfloat16/float16 inputs are scanned in float32 with autocast off, like the fused kernels.

Dispatch (``kernels="auto"``): CUDA tensors use mamba-ssm's kernel when installed, else the Triton
scan of :mod:`dnadiff.ops.triton_scan` when triton is installed, else the pure scan; CPU tensors use
the fused C++ scan of :mod:`dnadiff.ops.cpu_scan` when it builds, else the pure scan.
``kernels="pure"``, ``"cuda"`` (mamba-ssm) and ``"triton"`` force one implementation.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from dnadiff.errors import UserError
from dnadiff.ops import cpu_scan, triton_scan

# the optional CUDA kernels, resolved once at import (used only for CUDA tensors)
try:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _mamba_scan
except ImportError:  # pragma: no cover - depends on the machine
    _mamba_scan = None
try:  # fused causal depthwise conv + SiLU, used next to mamba-ssm
    from causal_conv1d import causal_conv1d_fn
except ImportError:  # pragma: no cover - depends on the machine
    causal_conv1d_fn = None

KERNELS = ("auto", "pure", "cuda", "triton")
HALF = (torch.float16, torch.bfloat16)
TILE_ELEMENTS = 1 << 22  # [L, B, d_tile, N] elements processed at once by the pure scan


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Plain sequential recurrence (one step per position), for tests. Returns y: [B, D, L]."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for i in range(u.shape[-1]):
        h = torch.exp(delta[:, :, i, None] * A) * h + (delta[:, :, i] * u[:, :, i])[..., None] * B[:, None, :, i]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, i]))
    y = torch.stack(ys, dim=-1)
    return _skip_and_gate(y, u, D, z)


def _skip_and_gate(y, u, D, z):
    if D is not None:
        y = y + u * D[:, None]
    return y if z is None else y * F.silu(z)


def _chunk_states(decay: torch.Tensor, state: torch.Tensor, chunk: int, reverse: bool = False) -> torch.Tensor:
    """In place: turn inputs x_l into states along dim 0; returns ``state`` (now holding the states).

    Forward: h_l = decay_l * h_{l-1} + x_l. Reverse (the adjoint): h_l = decay_{l+1} * h_{l+1} + x_l.
    decay, state: [L, ...] with L a multiple of ``chunk``; ``decay`` is overwritten (running products).
    """
    K = state.shape[0] // chunk
    a = decay.view(K, chunk, *decay.shape[1:])
    h = state.view(K, chunk, *state.shape[1:])
    if not reverse:
        for t in range(1, chunk):  # local scans of every chunk at once; a[:, t] <- prod a[:, :t+1]
            h[:, t].addcmul_(a[:, t], h[:, t - 1])
            a[:, t].mul_(a[:, t - 1])
        for k in range(1, K):  # carry the last state of chunk k-1 into chunk k
            h[k].addcmul_(a[k], h[k - 1, -1].unsqueeze(0))
        return state
    for t in range(chunk - 2, -1, -1):  # a[:, t+1] <- prod a[:, t+1:]
        h[:, t].addcmul_(a[:, t + 1], h[:, t + 1])
        if t + 2 < chunk:
            a[:, t + 1].mul_(a[:, t + 2])
    for k in range(K - 2, -1, -1):  # carry a_{next} * (first state of chunk k+1) into chunk k
        carry = a[k + 1, 0] * h[k + 1, 0]
        h[k, :-1].addcmul_(a[k, 1:], carry.unsqueeze(0))
        h[k, -1].add_(carry)
    return state


def _chunk_for(length: int) -> int:
    """Default chunk length: the power of two nearest sqrt(L) (balances the two Python loops)."""
    return max(1, 2 ** round(math.log2(max(1.0, math.sqrt(length)))))


class _ChunkedScan(torch.autograd.Function):
    """y[b, d, l] = <C_l, h_l> for the recurrence above (no skip, no gate; delta already positive).
    Runs with autocast off, so float32 inputs stay float32 on a GPU under mixed precision."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk):
        ctx.save_for_backward(u, delta, A, B, C)
        ctx.chunk = chunk
        y = u.new_empty(u.shape)
        with _no_autocast(u.device.type):
            for sl, (dl, ul, Bl, Cl, _) in _tiles(u, delta, A, B, C, None, chunk):
                a, h = _decays_and_inputs(dl, ul, A[sl], Bl)
                h = _chunk_states(a, h, chunk)
                y[:, sl] = (h @ Cl.unsqueeze(-1))[: u.shape[-1], ..., 0].permute(1, 2, 0)
        return y

    @staticmethod
    def backward(ctx, gy):
        with _no_autocast(gy.device.type):
            return _ChunkedScan._backward(ctx, gy)

    @staticmethod
    def _backward(ctx, gy):
        u, delta, A, B, C = ctx.saved_tensors
        gu, gdelta, gA = torch.empty_like(u), torch.empty_like(delta), torch.empty_like(A)
        L = u.shape[-1]
        gB, gC = u.new_zeros(L, u.shape[0], A.shape[1]), u.new_zeros(L, u.shape[0], A.shape[1])  # [L, B, N]
        chunk = ctx.chunk
        for sl, (dl, ul, Bl, Cl, gl) in _tiles(u, delta, A, B, C, gy, chunk):
            Ad = A[sl]
            a, h = _decays_and_inputs(dl, ul, Ad, Bl)
            a_copy = a.clone()
            h = _chunk_states(a, h, chunk)
            gC += (gl.unsqueeze(-2) @ h)[:L, :, 0]
            # adjoint states g_l = C_l gy_l + a_{l+1} g_{l+1} (reverse scan, same decays)
            g = _chunk_states(a_copy, gl.unsqueeze(-1) * Cl.unsqueeze(2), chunk, reverse=True)
            du = dl * ul
            g_du = (g @ Bl.unsqueeze(-1))[..., 0]  # d loss / d (delta * u): [Lp, B, d]
            gB += (du.unsqueeze(-2) @ g)[:L, :, 0]
            # m = g_l * a_l * h_{l-1} = g_l * (h_l - x_l): the gradient through a_l = exp(delta_l A)
            m = g.mul_(h.sub_(du.unsqueeze(-1) * Bl.unsqueeze(2))).mul_(Ad)
            gdelta[:, sl] = (g_du * ul + m.sum(-1))[:L].permute(1, 2, 0)
            gA[sl] = m.mul_(dl.unsqueeze(-1)).sum((0, 1)) / Ad
            gu[:, sl] = (g_du * dl)[:L].permute(1, 2, 0)
        return gu, gdelta, gA, gB.permute(1, 2, 0), gC.permute(1, 2, 0), None


def _no_autocast(device_type: str):
    """A context with autocast off on this device type (a no-op context where autocast does not exist)."""
    if device_type in ("cuda", "cpu"):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _tiles(u, delta, A, B, C, gy, chunk):
    """Yield (channel slice, time-major padded tensors) over channel tiles of the pure scan.

    Each item: dl, ul, gl [Lp, B, d_tile]; Bl, Cl [Lp, B, N] with Lp a multiple of the chunk length;
    padded positions have delta = 0 (decay 1, no input) and gy = 0, so they change nothing.
    """
    b, d, L = u.shape
    pad = (-L) % chunk
    tm = lambda x: F.pad(x, (0, pad)).permute(2, 0, 1)  # noqa: E731  [B, *, L] -> [Lp, B, *]
    Bl, Cl = tm(B).contiguous(), tm(C).contiguous()
    step = max(1, TILE_ELEMENTS // max(1, (L + pad) * b * A.shape[1]))
    for start in range(0, d, step):
        sl = slice(start, min(d, start + step))
        gl = None if gy is None else tm(gy[:, sl]).contiguous()
        yield sl, (tm(delta[:, sl]).contiguous(), tm(u[:, sl]).contiguous(), Bl, Cl, gl)


def _decays_and_inputs(dl, ul, A, Bl):
    """a = exp(delta * A) and x = delta * u * B, both [Lp, B, d, N] (fresh, contiguous)."""
    a = torch.exp(dl.unsqueeze(-1) * A)
    x = (dl * ul).unsqueeze(-1) * Bl.unsqueeze(2)
    return a, x


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           chunk: int | None = None):
    """Chunked pure-PyTorch selective scan (same arguments and result as :func:`selective_scan_ref`).

    Differentiable in u, delta, A, B, C, D, z and delta_bias; ``chunk``: chunk length (default about
    sqrt(L)). Half-precision inputs are scanned in float32; the result has u's dtype. Returns y: [B, D, L].
    """
    work = torch.float32 if u.dtype in HALF else u.dtype
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta.to(work))
    y = _ChunkedScan.apply(u.to(work), delta.to(work), A.to(work), B.to(work), C.to(work),
                           chunk or _chunk_for(u.shape[-1]))
    return _skip_and_gate(y, u.to(work), D, None if z is None else z.to(work)).to(u.dtype)


def check_kernels(kernels: str) -> str:
    """Validate a ``kernels`` setting ("auto", "pure", "cuda" or "triton"); returns it."""
    if kernels not in KERNELS:
        raise UserError(f"unknown kernels setting {kernels!r}: use one of {', '.join(KERNELS)}")
    if kernels == "cuda" and (_mamba_scan is None or not torch.cuda.is_available()):
        raise UserError("kernels='cuda' needs mamba-ssm and a CUDA GPU: install `pip install mamba-ssm` "
                        "on a CUDA machine or use kernels='auto'")
    if kernels == "triton" and not (triton_scan.available()
                                    and (torch.cuda.is_available() or triton_scan.interpreting())):
        raise UserError("kernels='triton' needs triton>=3.0 and a CUDA GPU: `pip install triton` on a CUDA "
                        "machine or use kernels='auto'")
    return kernels


def scan_backend(u: torch.Tensor, kernels: str, *others: torch.Tensor) -> str:
    """The one dispatch: which scan runs for input ``u`` under setting ``kernels`` ("mamba-ssm", "triton",
    "cpp" or "pure"); ``others`` (e.g. delta, A) must share u's dtype for the fused C++ scan.

    CUDA: mamba-ssm (auto, cuda), then Triton (auto, triton), then pure. CPU: the fused C++ scan
    (auto), Triton only under its interpreter when asked for by name, then pure. A Mamba layer asks
    once per forward and runs the answer (:func:`selective_scan`'s ``backend``).
    """
    if kernels == "pure":
        return "pure"
    if u.is_cuda:
        if kernels in ("auto", "cuda") and _mamba_scan is not None:
            return "mamba-ssm"
        if kernels in ("auto", "triton") and triton_scan.supports(u):
            return "triton"
        return "pure"
    if kernels == "triton" and triton_scan.available() and triton_scan.interpreting():
        return "triton"
    if kernels == "auto" and cpu_scan.supports(u, *others):
        return "cpp"
    return "pure"


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, kernels="auto",
                   backend=None):
    """Selective scan through the implementation :func:`scan_backend` picks (fused kernels when they apply,
    else the chunked pure-PyTorch scan), or through ``backend`` when the caller already asked. Same
    arguments as :func:`selective_scan_ref`; ``kernels`` in {"auto", "pure", "cuda", "triton"}. Returns [B, D, L].
    """
    backend = backend or scan_backend(u, kernels, delta, A)
    if backend == "mamba-ssm":
        return _mamba_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if backend == "triton":
        return triton_scan.selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if backend == "cpp":
        return cpu_scan.selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
