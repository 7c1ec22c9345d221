"""Triton kernels of the selective scan (forward and backward); the host side is :mod:`triton_scan`.

Imported by :mod:`dnadiff.ops.triton_scan` on first use, only when triton is installed. Under
``TRITON_INTERPRET=1`` (set before triton is imported) these run in Triton's interpreter, on CPU too.

One program owns a batch row ``b`` and ``BLOCK_D`` channels, holds the state ``h: [BLOCK_D, BLOCK_N]``
in float32 (float64 for float64 inputs) and walks the length in blocks of ``BLOCK_L`` positions. In a
block the recurrence ``h_l = a_l h_{l-1} + x_l`` is an associative scan over ``(a, x)`` pairs (only
products of decays in (0, 1] appear, so nothing overflows), and the incoming state is added times the
running product of decays. Positions past the end load ``delta = 0`` (decay 1, no input), so a length
need not be a multiple of ``BLOCK_L``.

Backward, block by block from the end: the states before each position are rebuilt from the state
stored at the previous block's end (one scan whose first element injects it), and the adjoint
``s_l = C_l g_l + a_{l+1} s_{l+1}`` is a reverse scan carried into the previous block. Per-channel
sums (dA, dD, d delta_bias) go to per-batch-row buffers summed by the host; dB and dC, summed over
channels, are added atomically into float32 buffers. ``rows_bucket`` (the batch rounded up to a power
of two) is unused by the kernels: it only keys the host's autotuning.
"""
import triton
import triton.language as tl


@triton.jit
def _recurrence(a1, b1, a2, b2):
    """Compose h -> a1 h + b1 then h -> a2 h + b2."""
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _softplus(x):
    """log(1 + exp(x)) as torch computes it (x past 20 passes through), accurate for x << 0."""
    e = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + e
    log1p = tl.where(w == 1.0, e, tl.log(w) * (e / tl.where(w == 1.0, 1.0, w - 1.0)))
    return tl.where(x > 20.0, x, log1p)


@triton.jit
def _delta(ptrs, mask, bias, SOFTPLUS: tl.constexpr, CD: tl.constexpr):
    """Step sizes at ``ptrs`` ([BLOCK_D, BLOCK_L]): (delta, delta + bias), delta = 0 where masked."""
    raw = tl.load(ptrs, mask=mask, other=0.0).to(CD) + bias[:, None]
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _channel_params(A_ptr, D_ptr, bias_ptr, offs_d, offs_n, Dm, N, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                    CD: tl.constexpr, BLOCK_D: tl.constexpr):
    """A program's per-channel parameters and masks: (mask_d [BLOCK_D], mask_n [BLOCK_N], mask_dn,
    A [BLOCK_D, BLOCK_N], D [BLOCK_D], delta_bias [BLOCK_D]); D and delta_bias are 0 when absent."""
    mask_d, mask_n = offs_d < Dm, offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0).to(CD)
    Dv = tl.zeros([BLOCK_D], CD)
    bias = tl.zeros([BLOCK_D], CD)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(CD)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(CD)
    return mask_d, mask_n, mask_dn, A, Dv, bias


@triton.jit
def scan_fwd(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, state_ptr,
             Dm, N, L, su_b, su_d, sdt_b, sdt_d, sz_b, sz_d, sB_b, sB_n, sC_b, sC_n, rows_bucket,
             HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
             STORE_STATES: tl.constexpr, CD: tl.constexpr,
             BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    """out[b, d, l] = (<C_l, h_l> + D u_l) silu(z_l); states[b, d, n, k] = h at the end of block k."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    idx = tl.arange(0, BLOCK_L)
    mask_d, mask_n, mask_dn, A, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, offs_d, offs_n, Dm, N,
                                                           HAS_D, HAS_BIAS, CD, BLOCK_D)
    u_base = u_ptr + pid_b * su_b + offs_d[:, None] * su_d
    dt_base = delta_ptr + pid_b * sdt_b + offs_d[:, None] * sdt_d
    z_base = z_ptr + pid_b * sz_b + offs_d[:, None] * sz_d
    out_base = out_ptr + pid_b * Dm * L + offs_d[:, None] * L
    B_base = B_ptr + pid_b * sB_b + offs_n[:, None] * sB_n
    C_base = C_ptr + pid_b * sC_b + offs_n[:, None] * sC_n
    K = tl.cdiv(L, BLOCK_L)
    state_base = state_ptr + pid_b * Dm * N * K + offs_d[:, None] * N * K + offs_n[None, :] * K
    h = tl.zeros([BLOCK_D, BLOCK_N], CD)
    for k in range(0, K):
        offs_l = k * BLOCK_L + idx
        mask_l = offs_l < L
        m = mask_d[:, None] & mask_l[None, :]
        m_nl = mask_n[:, None] & mask_l[None, :]
        u = tl.load(u_base + offs_l[None, :], mask=m, other=0.0).to(CD)
        dt, _ = _delta(dt_base + offs_l[None, :], m, bias, SOFTPLUS, CD)
        Bl = tl.load(B_base + offs_l[None, :], mask=m_nl, other=0.0).to(CD)
        Cl = tl.load(C_base + offs_l[None, :], mask=m_nl, other=0.0).to(CD)
        a = tl.exp(dt[:, None, :] * A[:, :, None])  # [BLOCK_D, BLOCK_N, BLOCK_L]
        x = (dt * u)[:, None, :] * Bl[None, :, :]
        a_run, h_loc = tl.associative_scan((a, x), axis=2, combine_fn=_recurrence)
        hs = h_loc + a_run * h[:, :, None]
        y = tl.sum(hs * Cl[None, :, :], axis=1) + u * Dv[:, None]
        if HAS_Z:
            zz = tl.load(z_base + offs_l[None, :], mask=m, other=0.0).to(CD)
            y = y * (zz / (1.0 + tl.exp(-zz)))
        tl.store(out_base + offs_l[None, :], y, mask=m)
        # padded positions have decay 1 and no input: the last column is the state at the block's end
        h = tl.sum(tl.where(idx[None, None, :] == BLOCK_L - 1, hs, 0.0), axis=2)
        if STORE_STATES:
            tl.store(state_base + k, h, mask=mask_dn)


@triton.jit
def scan_bwd(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, state_ptr, gout_ptr,
             gu_ptr, gdelta_ptr, gz_ptr, gA_ptr, gB_ptr, gC_ptr, gD_ptr, gbias_ptr,
             Dm, N, L, su_b, su_d, sdt_b, sdt_d, sz_b, sz_d, sB_b, sB_n, sC_b, sC_n, sg_b, sg_d, rows_bucket,
             HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
             CD: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    """Gradients of :func:`scan_fwd`'s output. gu, gdelta, gz: [B, D, L] (contiguous); gA: [B, D, N],
    gD, gbias: [B, D] (per batch row, summed by the host); gB, gC: [B, N, L] zeroed, added into."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    idx = tl.arange(0, BLOCK_L)
    first = idx[None, None, :] == 0
    mask_d, mask_n, mask_dn, A, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, offs_d, offs_n, Dm, N,
                                                           HAS_D, HAS_BIAS, CD, BLOCK_D)
    u_base = u_ptr + pid_b * su_b + offs_d[:, None] * su_d
    dt_base = delta_ptr + pid_b * sdt_b + offs_d[:, None] * sdt_d
    z_base = z_ptr + pid_b * sz_b + offs_d[:, None] * sz_d
    g_base = gout_ptr + pid_b * sg_b + offs_d[:, None] * sg_d
    B_base = B_ptr + pid_b * sB_b + offs_n[:, None] * sB_n
    C_base = C_ptr + pid_b * sC_b + offs_n[:, None] * sC_n
    dl_base = pid_b * Dm * L + offs_d[:, None] * L  # offsets into gu, gdelta, gz
    nl_base = pid_b * N * L + offs_n[:, None] * L  # offsets into gB, gC
    K = tl.cdiv(L, BLOCK_L)
    state_base = state_ptr + pid_b * Dm * N * K + offs_d[:, None] * N * K + offs_n[None, :] * K
    s_next = tl.zeros([BLOCK_D, BLOCK_N], CD)  # adjoint state at the first position of the next block
    gA_acc = tl.zeros([BLOCK_D, BLOCK_N], CD)
    gD_acc = tl.zeros([BLOCK_D], CD)
    gbias_acc = tl.zeros([BLOCK_D], CD)
    for kk in range(0, K):
        k = K - 1 - kk
        offs_l = k * BLOCK_L + idx
        mask_l = offs_l < L
        m = mask_d[:, None] & mask_l[None, :]
        m_nl = mask_n[:, None] & mask_l[None, :]
        # states before each position: a scan whose first element (decay 0) injects the incoming state
        h_in = tl.load(state_base + tl.maximum(k - 1, 0), mask=mask_dn, other=0.0).to(CD)
        h_in = tl.where(k > 0, h_in, 0.0)
        offs_p = offs_l - 1
        m_p = mask_d[:, None] & (offs_p >= 0)[None, :] & (offs_p < L)[None, :]
        m_np = mask_n[:, None] & (offs_p >= 0)[None, :] & (offs_p < L)[None, :]
        u_p = tl.load(u_base + offs_p[None, :], mask=m_p, other=0.0).to(CD)
        dt_p, _ = _delta(dt_base + offs_p[None, :], m_p, bias, SOFTPLUS, CD)
        B_p = tl.load(B_base + offs_p[None, :], mask=m_np, other=0.0).to(CD)
        a_p = tl.where(first, 0.0, tl.exp(dt_p[:, None, :] * A[:, :, None]))
        x_p = tl.where(first, h_in[:, :, None], (dt_p * u_p)[:, None, :] * B_p[None, :, :])
        _, h_prev = tl.associative_scan((a_p, x_p), axis=2, combine_fn=_recurrence)
        # this block's own terms
        u = tl.load(u_base + offs_l[None, :], mask=m, other=0.0).to(CD)
        dt, raw = _delta(dt_base + offs_l[None, :], m, bias, SOFTPLUS, CD)
        Bl = tl.load(B_base + offs_l[None, :], mask=m_nl, other=0.0).to(CD)
        Cl = tl.load(C_base + offs_l[None, :], mask=m_nl, other=0.0).to(CD)
        a = tl.exp(dt[:, None, :] * A[:, :, None])
        du = dt * u
        h = a * h_prev + du[:, None, :] * Bl[None, :, :]
        g = tl.load(g_base + offs_l[None, :], mask=m, other=0.0).to(CD)
        if HAS_Z:
            zz = tl.load(z_base + offs_l[None, :], mask=m, other=0.0).to(CD)
            y = tl.sum(h * Cl[None, :, :], axis=1) + u * Dv[:, None]
            sz = 1.0 / (1.0 + tl.exp(-zz))
            tl.store(gz_ptr + dl_base + offs_l[None, :], g * y * sz * (1.0 + zz * (1.0 - sz)), mask=m)
            g = g * zz * sz
        gD_acc += tl.sum(g * u, axis=1)
        tl.atomic_add(gC_ptr + nl_base + offs_l[None, :], tl.sum(g[:, None, :] * h, axis=0), mask=m_nl)
        # adjoint s_l = C_l g_l + a_{l+1} s_{l+1}: a reverse scan with the next position's decay
        offs_x = offs_l + 1
        m_x = mask_d[:, None] & (offs_x < L)[None, :]
        dt_x, _ = _delta(dt_base + offs_x[None, :], m_x, bias, SOFTPLUS, CD)
        a_x = tl.exp(dt_x[:, None, :] * A[:, :, None])
        a_run, s_loc = tl.associative_scan((a_x, g[:, None, :] * Cl[None, :, :]), axis=2,
                                           combine_fn=_recurrence, reverse=True)
        s = s_loc + a_run * s_next[:, :, None]
        s_next = tl.sum(tl.where(first, s, 0.0), axis=2)
        tl.atomic_add(gB_ptr + nl_base + offs_l[None, :], tl.sum(s * du[:, None, :], axis=0), mask=m_nl)
        g_du = tl.sum(s * Bl[None, :, :], axis=1)  # d loss / d (delta u): [BLOCK_D, BLOCK_L]
        tl.store(gu_ptr + dl_base + offs_l[None, :], g_du * dt + g * Dv[:, None], mask=m)
        m_a = s * a * h_prev  # d loss / d a_l times a_l
        gA_acc += tl.sum(m_a * dt[:, None, :], axis=2)
        g_dt = g_du * u + tl.sum(m_a * A[:, :, None], axis=1)
        if SOFTPLUS:
            g_dt = g_dt / (1.0 + tl.exp(-raw))
        g_dt = tl.where(m, g_dt, 0.0)
        gbias_acc += tl.sum(g_dt, axis=1)
        tl.store(gdelta_ptr + dl_base + offs_l[None, :], g_dt, mask=m)
    tl.store(gA_ptr + pid_b * Dm * N + offs_d[:, None] * N + offs_n[None, :], gA_acc, mask=mask_dn)
    tl.store(gD_ptr + pid_b * Dm + offs_d, gD_acc, mask=mask_d)
    tl.store(gbias_ptr + pid_b * Dm + offs_d, gbias_acc, mask=mask_d)
