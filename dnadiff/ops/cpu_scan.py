"""Optional fused C++ kernels of Mamba for CPU tensors (float32/float64), compiled on first use.

``cpu_scan.cpp`` runs, in the channel-last layout the projections produce ([B, L, D]; views go in
without copies), the causal depthwise conv + SiLU (:func:`causal_conv_silu_cl`) and the whole selective
scan of :mod:`dnadiff.ops.scan` (softplus of delta plus its bias, the recurrence, the skip and the
gate; :func:`selective_scan_cpu_cl`), each with its backward. The scan is one sequential loop over
positions per batch row and block of 16 channels, vectorised across the block's channels; the forward
keeps each block's state every 64 positions and the backward recomputes those chunks from there. Tasks
are spread over threads with ``at::parallel_for``. It is built with ``torch.utils.cpp_extension.load``
(needs a C++ compiler; the ``ninja`` wheel this package depends on runs the build whatever ninja is
first on PATH) the first time a CPU scan asks for it, saying so in one line; torch caches the build in
its extension directory (one per checkout and CPU kind) and guards it with a file lock; a lock
left by a killed compile is removed once it is older than any build takes. Any failure to build or load logs one
warning and leaves :func:`available` False, so callers fall back to the pure PyTorch scan.
``DNADIFF_CPU_KERNEL=0`` in the environment disables the extension.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import sys
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_scan.cpp")
DTYPES = (torch.float32, torch.float64)
_state: dict = {}  # "module": the loaded extension or None after a failure


def disabled_by_env() -> bool:
    """True when ``DNADIFF_CPU_KERNEL`` is set to 0 / false / no / off."""
    return os.environ.get("DNADIFF_CPU_KERNEL", "1").strip().lower() in ("0", "false", "no", "off")


def extension():
    """The compiled extension module, building it on the first call; None when it cannot be had."""
    if disabled_by_env():
        return None
    if "module" not in _state:
        try:
            from torch.utils.cpp_extension import load

            name = f"dnadiff_cpu_scan_{_cpu_tag()}_{_source_tag()}"
            _remove_stale_lock(name)
            if not _built(name):
                print("dnadiff: building the fused CPU scan (about a minute, once per install)",
                      file=sys.stderr, flush=True)
            with _pinned_ninja():
                _state["module"] = load(name=name, sources=[str(SOURCE)],
                                        extra_cflags=_cflags(), extra_ldflags=["-fopenmp"],
                                        verbose=False)
        except Exception as error:  # no compiler, no ninja, compile or load error: use the pure scan
            log.warning("fused CPU selective scan unavailable, using the pure PyTorch scan (%s: %s)",
                        type(error).__name__, str(error).strip().splitlines()[-1] if str(error).strip() else "")
            _state["module"] = None
    return _state["module"]


def _built(name: str) -> bool:
    """True when the extension ``name`` is already compiled in torch's extension directory."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return (Path(_get_build_directory(name, verbose=False)) / f"{name}.so").is_file()
    except (ImportError, OSError):
        return False


@contextlib.contextmanager
def _pinned_ninja():
    """Build with the ``ninja`` this package depends on (the ``ninja`` wheel's binary), whatever ninja is
    first on PATH: ninja versions keep incompatible build logs, so alternating between two of them (a
    venv's and the system's, as an activated shell, ``.venv/bin/dnadiff`` and a Jupyter kernel do) would
    rebuild the whole extension every time."""
    try:
        import ninja

        pinned = str(ninja.BIN_DIR)
    except (ImportError, AttributeError):
        yield
        return
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = pinned + os.pathsep + old
    try:
        yield
    finally:
        os.environ["PATH"] = old


def _cflags() -> list[str]:
    """Compiler flags: native instruction set; on x86, full-width AVX-512 vectors where the CPU has them
    (the kernels' blocks are 16 floats); the x86-only flag is left out elsewhere (e.g. aarch64)."""
    flags = ["-O3", "-march=native", "-fno-trapping-math", "-fopenmp"]
    if platform.machine().lower() in ("x86_64", "amd64", "i686", "i386"):
        flags.insert(2, "-mprefer-vector-width=512")
    return flags


def _cpu_tag() -> str:
    """Short hash of this CPU's model and instruction-set flags: the build uses -march=native, so a
    cache directory shared by machines with different CPUs must keep one build per kind of CPU."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        text = "".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))
    except OSError:
        text = ""
    return hashlib.sha1(f"{platform.machine()}|{platform.processor()}|{text}".encode()).hexdigest()[:10]


def _source_tag() -> str:
    """Short hash of this checkout's kernel source (its path and contents): two checkouts never share
    a build directory, so they never rebuild each other's extension or wait on each other's lock."""
    digest = hashlib.sha1(str(SOURCE.resolve()).encode())
    digest.update(SOURCE.read_bytes())
    return digest.hexdigest()[:10]


STALE_LOCK_SECONDS = 900  # a build takes 1-2 minutes; a lock this old was left by a killed build


def _remove_stale_lock(name: str) -> None:
    """Remove the build lock a killed compile left behind (torch would wait on it forever)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        lock = Path(_get_build_directory(name, verbose=False)) / "lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            log.warning("removing a stale build lock left by an interrupted compile: %s", lock)
            lock.unlink(missing_ok=True)
    except (ImportError, OSError):
        pass


def available() -> bool:
    """True when the fused CPU kernel is enabled and builds (compiles it on the first call)."""
    return extension() is not None


def supports(u: torch.Tensor, *others: torch.Tensor) -> bool:
    """True when the fused kernel can take these tensors: CPU, float32 or float64, one dtype."""
    return (u.device.type == "cpu" and u.dtype in DTYPES and all(t.dtype == u.dtype for t in others)
            and available())


class _FusedScan(torch.autograd.Function):
    """The whole selective scan in channel-last layout (softplus of delta + bias, skip, gate included),
    via the C++ kernels; inputs as in :func:`selective_scan_cpu_cl`, z may be None."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, z, softplus):
        needs_grad = any(ctx.needs_input_grad)
        y, starts = extension().forward(u, delta, A, B, C, D, delta_bias, z, softplus, needs_grad)
        if needs_grad:  # with the states at chunk starts, the backward recomputes chunk by chunk
            ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, z, starts)
        ctx.softplus = softplus
        return y

    @staticmethod
    def backward(ctx, gy):
        u, delta, A, B, C, D, delta_bias, z, starts = ctx.saved_tensors
        gu, gdelta, gA, gB, gC, gD, gbias, gz = extension().backward(u, delta, A, B, C, D, delta_bias, z,
                                                                     ctx.softplus, starts, gy)
        return gu, gdelta, gA, gB, gC, gD, gbias, (gz if z is not None else None), None


def selective_scan_cpu_cl(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Fused C++ selective scan in channel-last layout (the layout the projections produce).

    u, delta, z: [B, L, D]; B, C: [B, L, N]; A: [D, N]; D, delta_bias: [D]. Views with a contiguous last
    dimension go in without a copy. Differentiable in all of them. Requires :func:`supports` (u, delta, A).
    Returns y: [B, L, D], the transpose of :func:`selective_scan_cpu`'s result.
    """
    zeros = None
    if D is None or delta_bias is None:
        zeros = u.new_zeros(u.shape[-1])
    return _FusedScan.apply(u, delta, A, B.to(u.dtype), C.to(u.dtype), zeros if D is None else D.to(u.dtype),
                            zeros if delta_bias is None else delta_bias.to(u.dtype),
                            None if z is None else z.to(u.dtype), bool(delta_softplus))


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Fused C++ selective scan, same arguments and result as ``scan.selective_scan_ref``.

    u, delta, z: [B, D, L]; A: [D, N]; B, C: [B, N, L]; D, delta_bias: [D]. Differentiable in all of
    them. Requires :func:`supports` (u, delta, A) to be True. Returns y: [B, D, L] (a transposed view of
    the channel-last result; :func:`selective_scan_cpu_cl` avoids the layout copies).
    """
    t = lambda x: None if x is None else x.transpose(1, 2)  # noqa: E731
    return selective_scan_cpu_cl(t(u), t(delta), A, t(B), t(C), D, t(z), delta_bias,
                                 delta_softplus).transpose(1, 2)


class _FusedConv(torch.autograd.Function):
    """silu(causal depthwise conv(x)) in channel-last layout via the C++ kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight, bias)
        return extension().conv_forward(x, weight, bias)

    @staticmethod
    def backward(ctx, gu):
        return tuple(extension().conv_backward(*ctx.saved_tensors, gu))


def causal_conv_silu_cl(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """silu of the causal depthwise convolution, channel-last, fused in C++.

    x: [B, L, D] (a view with a contiguous last dimension goes in without a copy); weight: [D, K];
    bias: [D]. Returns u: [B, L, D] with u_l = silu(bias + sum_k weight[:, k] * x_{l-K+1+k}), x = 0
    before the start: ``F.silu(F.conv1d(x^T, weight[:, None], bias, padding=K-1, groups=D)[..., :L])^T``.
    Differentiable in all three. Requires :func:`available` and x float32/float64.
    """
    return _FusedConv.apply(x, weight.to(x.dtype), bias.to(x.dtype))
