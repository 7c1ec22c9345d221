// Fused CPU selective scan (forward and adjoint backward) for dnadiff.models.cpu_scan, and the causal
// depthwise convolution + SiLU in front of it (both channel-last, so Mamba on CPU needs no transposes).
//
// Channel-last layout, the one the projections produce: u, delta, z, y [B, L, D] and B, C [B, L, N],
// each with its last dimension contiguous (other strides free, so views of the projections' outputs
// go in without a copy). A [D, N]; D_skip, delta_bias [D]. Per batch row b, channel d, state n:
//     dt_l = softplus(delta_l + delta_bias)        (or delta_l + delta_bias without softplus)
//     a_l  = exp(dt_l * A_n),  h_l = a_l * h_{l-1} + dt_l * u_l * B_{n,l}
//     y_l  = (sum_n C_{n,l} h_l + D_skip * u_l) * silu(z_l)        (no gate without z)
// Channels are cut into blocks of kW; a task is (b, group of blocks), every loop over a block's channels
// is a fixed-width loop the compiler vectorises: the state is N vectors of kW lanes, no reductions
// across lanes in the recurrence, one exp per (position, channel, state) with an inlined polynomial.
// The forward keeps each block's state at the start of every kChunk positions; the backward recomputes
// each chunk's decays and states from there (buffers that stay in L2), then runs the adjoint
//     g_l = C_l gy0_l + a_{l+1} g_{l+1}
// in reverse. Gradients of B and C (sums over channels) are accumulated per lane in a task buffer,
// reduced once per chunk into per-group partial buffers [G, B, L, N] summed at the end, so no two
// threads write the same place and no lane reduction sits in the inner loop. G is 1 (whole rows per
// task) unless the batch is too small to keep every thread busy.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

namespace {

constexpr int64_t kW = 16;        // channels per block (one AVX-512 or two AVX2 vectors of float)
constexpr int64_t kChunk = 64;    // positions per backward chunk (its buffers stay in L2)

// float: Cephes' expf and logf polynomials written with plain arithmetic so that loops over lanes
// vectorise (about 1 ulp; exp arguments are clamped to [-87, 88]). double: the C library.
inline float fexp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
inline double fexp(double x) { return std::exp(x); }

inline float flog(float x) {  // x > 0, normal
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  float e = static_cast<float>(((bits >> 23) & 0xff) - 126);  // x = m 2^e, m in [0.5, 1)
  bits = (bits & 0x007fffff) | 0x3f000000;
  float m;
  std::memcpy(&m, &bits, sizeof(m));
  const bool low = m < 0.707106781186547524f;
  e = low ? e - 1.0f : e;
  m = low ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return m + y + 0.693359375f * e;
}

// softplus with torch's threshold (x > 20: x) and its derivative sigmoid(x) (1 above the threshold)
inline void softplus(float x, float& value, float& slope) {
  const float e = fexp(std::min(x, 20.0f));
  const float s = 1.0f + e, r = 1.0f / s;
  const float lp = flog(s) - ((s - 1.0f) - e) * r;  // log1p(e): log(s) corrected for the rounding of s
  value = x > 20.0f ? x : lp;
  slope = x > 20.0f ? 1.0f : e * r;
}
inline void softplus(double x, double& value, double& slope) {
  const double e = std::exp(std::min(x, 20.0));
  value = x > 20.0 ? x : std::log1p(e);
  slope = x > 20.0 ? 1.0 : e / (1.0 + e);
}

template <typename T>
inline T sigmoid(T x) { return T(1) / (T(1) + fexp(-x)); }

template <typename T>
struct Args {
  const T *u, *delta, *z, *A, *Bm, *Cm, *Dskip, *bias;
  int64_t batch, len, dim, nstate;
  int64_t su_b, su_l, sd_b, sd_l, sz_b, sz_l, sB_b, sB_l, sC_b, sC_l;  // batch and position strides
  bool softplus, gate;
};

// One block's parameters with the tail lanes (channels past D) neutral: A = 0, D = 0, bias = 0.
template <typename T>
struct Block {
  std::vector<T> A;  // [N][kW]
  T Dk[kW], bias[kW];
  int64_t d0, w;
  Block(const Args<T>& p, int64_t d0_) : A(p.nstate * kW, T(0)), d0(d0_), w(std::min(kW, p.dim - d0_)) {
    for (int64_t j = 0; j < kW; ++j) {
      const bool in = j < w;
      Dk[j] = in ? p.Dskip[d0 + j] : T(0);
      bias[j] = in ? p.bias[d0 + j] : T(0);
      for (int64_t n = 0; n < p.nstate; ++n) A[n * kW + j] = in ? p.A[(d0 + j) * p.nstate + n] : T(0);
    }
  }
};

// dst[0:kW] = src[0:w], zeros after (w < kW only for the last block of channels)
template <typename T>
inline void load_lanes(T* __restrict__ dst, const T* __restrict__ src, int64_t w) {
  if (w == kW) {
#pragma omp simd
    for (int64_t j = 0; j < kW; ++j) dst[j] = src[j];
  } else {
    std::fill(dst, dst + kW, T(0));
    std::copy(src, src + w, dst);
  }
}

// Inputs of one position for a block: u, dt = softplus(delta + bias), its slope, du = dt * u, z.
template <typename T>
struct Step {
  alignas(64) T u[kW];
  alignas(64) T dt[kW];
  alignas(64) T slope[kW];
  alignas(64) T du[kW];
  alignas(64) T z[kW];
  void load(const Args<T>& p, const Block<T>& blk, int64_t b, int64_t l) {
    alignas(64) T pre[kW];
    load_lanes(u, p.u + b * p.su_b + l * p.su_l + blk.d0, blk.w);
    load_lanes(pre, p.delta + b * p.sd_b + l * p.sd_l + blk.d0, blk.w);
    if (p.softplus) {
#pragma omp simd
      for (int64_t j = 0; j < kW; ++j) softplus(pre[j] + blk.bias[j], dt[j], slope[j]);
    } else {
#pragma omp simd
      for (int64_t j = 0; j < kW; ++j) {
        dt[j] = pre[j] + blk.bias[j];
        slope[j] = T(1);
      }
    }
#pragma omp simd
    for (int64_t j = 0; j < kW; ++j) du[j] = dt[j] * u[j];
    if (p.gate) load_lanes(z, p.z + b * p.sz_b + l * p.sz_l + blk.d0, blk.w);
  }
  // u and z only, with dt and its slope as computed before (the backward's adjoint pass)
  void reload(const Args<T>& p, const Block<T>& blk, int64_t b, int64_t l, const T* __restrict__ dt_saved,
              const T* __restrict__ slope_saved) {
    load_lanes(u, p.u + b * p.su_b + l * p.su_l + blk.d0, blk.w);
#pragma omp simd
    for (int64_t j = 0; j < kW; ++j) {
      dt[j] = dt_saved[j];
      slope[j] = slope_saved[j];
      du[j] = dt[j] * u[j];
    }
    if (p.gate) load_lanes(z, p.z + b * p.sz_b + l * p.sz_l + blk.d0, blk.w);
  }
};

// One step of the recurrence for a block: h <- a h + du B (a stored to a_out when given); returns
// the readout sum_n C h in acc.
// NS: the number of states when known at compile time (16, Mamba's default: the loops over states
// unroll and the accumulators stay in registers), 0 for any other.
template <bool kStore, int NS, typename T>
inline void advance(const Args<T>& p, const Block<T>& blk, const Step<T>& s, const T* B_l, const T* C_l,
                    const T* h_in, T* h_out, T* a_out, T* acc) {
  const int64_t N = NS > 0 ? NS : p.nstate;
#pragma omp simd
  for (int64_t j = 0; j < kW; ++j) acc[j] = T(0);
  for (int64_t n = 0; n < N; ++n) {
    const T Bn = B_l[n], Cn = C_l[n];
    const T* An = blk.A.data() + n * kW;
    const T* hi = h_in + n * kW;
    T* ho = h_out + n * kW;
    T* an = a_out + (kStore ? n * kW : 0);
#pragma omp simd
    for (int64_t j = 0; j < kW; ++j) {
      const T a = fexp(s.dt[j] * An[j]);
      if constexpr (kStore) an[j] = a;
      const T h = a * hi[j] + s.du[j] * Bn;
      ho[j] = h;
      acc[j] += Cn * h;
    }
  }
}

inline int64_t num_chunks(int64_t len) { return std::max<int64_t>(1, (len + kChunk - 1) / kChunk); }

// Channel groups per batch row: a task is (b, group of blocks). One group (whole rows read in order, the
// best memory traffic) when the batch alone gives every thread about four tasks; more for small batches.
inline int64_t channel_groups(int64_t batch, int64_t nblocks) {
  const int64_t want = 4 * static_cast<int64_t>(at::get_num_threads());
  return std::max<int64_t>(1, std::min(nblocks, (want + batch - 1) / std::max<int64_t>(1, batch)));
}

// The backward's steps are split into functions that must inline into its loops, as one body would be:
// the per-position lane arrays then stay on the loops' stack and the compiler contracts the same
// multiply-adds (so the split changes neither results nor speed).
#if defined(__GNUC__) || defined(__clang__)
#define SCAN_INLINE inline __attribute__((always_inline))
#define SCAN_INLINE_LAMBDA __attribute__((always_inline))
#else
#define SCAN_INLINE inline
#define SCAN_INLINE_LAMBDA
#endif

inline int64_t num_blocks(int64_t dim) { return (dim + kW - 1) / kW; }

// The blocks [lo, hi) of channels (none when lo >= hi).
template <typename T>
std::vector<Block<T>> group_blocks(const Args<T>& p, int64_t lo, int64_t hi) {
  std::vector<Block<T>> blocks;
  blocks.reserve(std::max<int64_t>(0, hi - lo));
  for (int64_t i = lo; i < hi; ++i) blocks.emplace_back(p, i * kW);
  return blocks;
}

// Runs work(scratch, b, grp, blk_lo, blocks) for every task, (batch row b, group grp of `groups` of
// channel blocks, its first block blk_lo), that has blocks, spread over threads with at::parallel_for;
// each thread makes its scratch once (make_scratch()) and reuses it for all its tasks.
template <typename T, typename MakeScratch, typename Work>
void for_each_task(const Args<T>& p, int64_t groups, const MakeScratch& make_scratch, const Work& work) {
  const int64_t nblocks = num_blocks(p.dim), per_group = (nblocks + groups - 1) / groups;
  at::parallel_for(0, p.batch * groups, 1, [&](int64_t begin, int64_t end) {
    auto scratch = make_scratch();
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / groups, grp = task % groups, blk_lo = grp * per_group;
      const std::vector<Block<T>> blocks = group_blocks(p, blk_lo, std::min(nblocks, blk_lo + per_group));
      if (blocks.empty()) continue;
      work(scratch, b, grp, blk_lo, blocks);
    }
  });
}

// y [B, L, D]; starts (when given) [B, nblocks, K, N * kW]: each block's state at the start of each
// backward chunk (chunk 0 starts from zero), so the backward recomputes a chunk without a first pass.
template <int NS, typename T>
void forward_cl(const Args<T>& p, T* y, T* starts) {
  const int64_t nblocks = num_blocks(p.dim), K = num_chunks(p.len), NW = p.nstate * kW;
  struct Scratch {
    Step<T> s;
    T acc[kW];
  };
  for_each_task(p, channel_groups(p.batch, nblocks), [] { return Scratch(); },
                [&](Scratch& scratch, int64_t b, int64_t, int64_t blk_lo, const std::vector<Block<T>>& blocks)
                    SCAN_INLINE_LAMBDA {
    Step<T>& s = scratch.s;
    T* acc = scratch.acc;
    const int64_t nb = static_cast<int64_t>(blocks.size());
    std::vector<T> h(nb * NW, T(0));  // the group's states, advanced in lockstep: rows are read in order
    for (int64_t l = 0; l < p.len; ++l) {
      const T* B_l = p.Bm + b * p.sB_b + l * p.sB_l;
      const T* C_l = p.Cm + b * p.sC_b + l * p.sC_l;
      for (int64_t i = 0; i < nb; ++i) {
        const Block<T>& blk = blocks[i];
        T* h_i = h.data() + i * NW;
        if (starts && l % kChunk == 0)
          std::copy(h_i, h_i + NW, starts + ((b * nblocks + blk_lo + i) * K + l / kChunk) * NW);
        s.load(p, blk, b, l);
        advance<false, NS>(p, blk, s, B_l, C_l, h_i, h_i, static_cast<T*>(nullptr), acc);
        T out[kW];
        for (int64_t j = 0; j < kW; ++j) out[j] = acc[j] + blk.Dk[j] * s.u[j];
        if (p.gate) {
#pragma omp simd
          for (int64_t j = 0; j < kW; ++j) out[j] *= s.z[j] * sigmoid(s.z[j]);
        }
        std::copy(out, out + blk.w, y + (b * p.len + l) * p.dim + blk.d0);
      }
    }
  });
}

template <typename T>
struct Grads {
  T *gu, *gdelta, *gz;           // [B, L, D]
  T *gA, *gD, *gbias;            // per batch row: [B, D, N], [B, D], [B, D]
  T *gB, *gC;                    // per group: [G, B, L, N]
  const T* gy;                   // [B, L, D] contiguous
  const T* starts;               // [B, nblocks, K, N * kW] from the forward
  int64_t groups;                // G: channel groups per batch row (channel_groups)
};

// A thread's buffers for one chunk of kChunk positions (they stay in L2): for the block being worked
// on, as[t] = a_{lo+t} (as[n_pos] = a_{hi}) and hs[t] = h_{lo+t-1} (hs[0] the chunk's incoming state),
// and each position's dt, softplus slope and ungated output y0; per lane, the chunk's B and C gradients
// summed over the group's blocks. (The step and readout lanes are plain locals of the task's loop
// instead, as they were in the unsplit function: this struct's address escapes to its out-of-line
// constructor, and lanes inside it could then be taken as aliased by stores through other pointers.)
template <typename T>
struct ChunkBuffers {
  std::vector<T> as, hs, gB_acc, gC_acc;  // [kChunk (+ 1)][N * kW]
  std::vector<T> dts, slopes, y0s;        // [kChunk][kW]
  explicit ChunkBuffers(int64_t NW)
      : as((kChunk + 1) * NW), hs((kChunk + 1) * NW), gB_acc(kChunk * NW), gC_acc(kChunk * NW),
        dts(kChunk * kW), slopes(kChunk * kW), y0s(kChunk * kW) {}
};

// A task's accumulators, per block of its group: the adjoint g carried from a chunk to the earlier one,
// the decay a_{hi} at the first position of the later chunk, and the gradients of A, D and delta_bias.
template <typename T>
struct TaskAccumulators {
  std::vector<T> g, a_next, gA, gD, gbias;  // [nb][N * kW] (g, a_next, gA), [nb][kW] (gD, gbias)
  TaskAccumulators(int64_t nb, int64_t NW)
      : g(nb * NW, T(0)), a_next(nb * NW, T(0)), gA(nb * NW, T(0)), gD(nb * kW, T(0)), gbias(nb * kW, T(0)) {}
};

// Per-lane gradients of one position: at the ungated output y0 (gy0), at du = dt u and at dt.
template <typename T>
struct PositionGrads {
  alignas(64) T gy0[kW];
  alignas(64) T g_du[kW];
  alignas(64) T g_dt[kW];
};

// Recompute one block's chunk [lo, lo + n_pos) from its stored start state st: decays and states into
// buf.as / buf.hs, and each position's dt, slope and ungated output y0 = sum_n C h + D u (s and acc: the
// step and readout lanes).
template <int NS, typename T>
SCAN_INLINE void recompute_chunk(const Args<T>& p, const Block<T>& blk, int64_t b, int64_t lo, int64_t n_pos,
                                 const T* st, ChunkBuffers<T>& buf, Step<T>& s, T* acc) {
  const int64_t NW = (NS > 0 ? NS : p.nstate) * kW;
  std::copy(st, st + NW, buf.hs.begin());
  for (int64_t t = 0; t < n_pos; ++t) {
    const int64_t l = lo + t;
    s.load(p, blk, b, l);
    advance<true, NS>(p, blk, s, p.Bm + b * p.sB_b + l * p.sB_l, p.Cm + b * p.sC_b + l * p.sC_l,
                      buf.hs.data() + t * NW, buf.hs.data() + (t + 1) * NW, buf.as.data() + t * NW, acc);
    for (int64_t j = 0; j < kW; ++j) {
      buf.dts[t * kW + j] = s.dt[j];
      buf.slopes[t * kW + j] = s.slope[j];
      buf.y0s[t * kW + j] = acc[j] + blk.Dk[j] * s.u[j];
    }
  }
}

// Hand decays across the chunk boundary: as[n_pos] = a_{hi} from the later chunk (0 past the end),
// and this chunk's a_{lo} kept in a_next_i for the earlier chunk.
template <typename T>
SCAN_INLINE void link_chunk_decays(int64_t NW, int64_t n_pos, ChunkBuffers<T>& buf, T* a_next_i) {
  T* a_after = buf.as.data() + n_pos * NW;
  std::copy(a_next_i, a_next_i + NW, a_after);
  std::copy(buf.as.begin(), buf.as.begin() + NW, a_next_i);
}

// Gradient at the ungated output y0_l: gy_l, times silu(z_l)' with a gate (then gz_l is written out).
template <typename T>
SCAN_INLINE void output_grad(const Args<T>& p, const Grads<T>& g_out, const Block<T>& blk, const Step<T>& s,
                             int64_t b, int64_t l, const T* y0_t, T* gy0) {
  load_lanes(gy0, g_out.gy + (b * p.len + l) * p.dim + blk.d0, blk.w);
  if (!p.gate) return;
  alignas(64) T gz[kW];
#pragma omp simd
  for (int64_t j = 0; j < kW; ++j) {
    const T go = gy0[j], zz = s.z[j], sz = sigmoid(zz);
    gy0[j] = go * zz * sz;
    gz[j] = go * y0_t[j] * sz * (T(1) + zz * (T(1) - sz));
  }
  std::copy(gz, gz + blk.w, g_out.gz + (b * p.len + l) * p.dim + blk.d0);
}

// Adjoint step of the recurrence at position l = lo + t, state by state: g_l = C_l gy0_l + a_{l+1} g_{l+1}
// (gi holds g_{l+1} and gets g_l); accumulates the lanes' gradients of C (gy0 h_l), B (g_l du_l) and A
// (gA_i), and sums over states the gradients at du_l (g.g_du) and, through the decays, at dt_l (g.g_dt).
template <int NS, typename T>
SCAN_INLINE void state_adjoint(const Args<T>& p, const Block<T>& blk, const Step<T>& s, int64_t b, int64_t l,
                               int64_t t, ChunkBuffers<T>& buf, T* gi, T* gA_i, PositionGrads<T>& g) {
  const int64_t N = NS > 0 ? NS : p.nstate, NW = N * kW;
  const T* gy0 = g.gy0;
  T* g_du = g.g_du;
  T* g_dt = g.g_dt;
#pragma omp simd
  for (int64_t j = 0; j < kW; ++j) {
    g_du[j] = T(0);
    g_dt[j] = T(0);
  }
  const T* B_l = p.Bm + b * p.sB_b + l * p.sB_l;
  const T* C_l = p.Cm + b * p.sC_b + l * p.sC_l;
  const T* __restrict__ a_t1 = buf.as.data() + (t + 1) * NW;  // a_{l+1}
  const T* __restrict__ h_t = buf.hs.data() + (t + 1) * NW;   // h_l
  T* __restrict__ gB_t = buf.gB_acc.data() + t * NW;
  T* __restrict__ gC_t = buf.gC_acc.data() + t * NW;
#pragma GCC unroll 16
  for (int64_t n = 0; n < N; ++n) {
    const T Bn = B_l[n], Cn = C_l[n];
    const T* An = blk.A.data() + n * kW;
    T* gn = gi + n * kW;
    T* gAn = gA_i + n * kW;
    const int64_t o = n * kW;
#pragma omp simd
    for (int64_t j = 0; j < kW; ++j) {
      const T gv = gy0[j] * Cn + a_t1[o + j] * gn[j];
      gn[j] = gv;
      gC_t[o + j] += gy0[j] * h_t[o + j];
      gB_t[o + j] += gv * s.du[j];
      g_du[j] += gv * Bn;
      // gradient through a_l = exp(dt_l A_n): m = g_l a_l h_{l-1} = g_l (h_l - du_l B_l)
      const T m = gv * (h_t[o + j] - s.du[j] * Bn);
      g_dt[j] += m * An[j];
      gAn[j] += m * s.dt[j];
    }
  }
}

// Gradients at position l's inputs: D (gy0 u) and delta_bias accumulated, gu = g_du dt + gy0 D and
// gdelta = (g_du u + g_dt) softplus' written out.
template <typename T>
SCAN_INLINE void input_grads(const Args<T>& p, const Grads<T>& g_out, const Block<T>& blk, const Step<T>& s,
                             int64_t b, int64_t l, const PositionGrads<T>& g, T* gD_i, T* gbias_i) {
  const T* gy0 = g.gy0;
  const T* g_du = g.g_du;
  const T* g_dt = g.g_dt;
  alignas(64) T gu[kW];
  alignas(64) T gpre[kW];
#pragma omp simd
  for (int64_t j = 0; j < kW; ++j) {
    gD_i[j] += gy0[j] * s.u[j];
    gpre[j] = (g_du[j] * s.u[j] + g_dt[j]) * s.slope[j];
    gbias_i[j] += gpre[j];
    gu[j] = g_du[j] * s.dt[j] + gy0[j] * blk.Dk[j];
  }
  std::copy(gu, gu + blk.w, g_out.gu + (b * p.len + l) * p.dim + blk.d0);
  std::copy(gpre, gpre + blk.w, g_out.gdelta + (b * p.len + l) * p.dim + blk.d0);
}

// Reverse sweep of block i over its recomputed chunk [lo, lo + n_pos), last position first.
template <int NS, typename T>
SCAN_INLINE void reverse_sweep(const Args<T>& p, const Grads<T>& g_out, const Block<T>& blk, int64_t i, int64_t b,
                               int64_t lo, int64_t n_pos, ChunkBuffers<T>& buf, TaskAccumulators<T>& sums,
                               Step<T>& s) {
  const int64_t NW = (NS > 0 ? NS : p.nstate) * kW;
  T* gi = sums.g.data() + i * NW;
  T* gA_i = sums.gA.data() + i * NW;
  T* gD_i = sums.gD.data() + i * kW;
  T* gbias_i = sums.gbias.data() + i * kW;
  for (int64_t t = n_pos - 1; t >= 0; --t) {
    const int64_t l = lo + t;
    s.reload(p, blk, b, l, buf.dts.data() + t * kW, buf.slopes.data() + t * kW);
    PositionGrads<T> g;
    output_grad(p, g_out, blk, s, b, l, buf.y0s.data() + t * kW, g.gy0);
    state_adjoint<NS>(p, blk, s, b, l, t, buf, gi, gA_i, g);
    input_grads(p, g_out, blk, s, b, l, g, gD_i, gbias_i);
  }
}

// Lane sums of the chunk's B and C gradients into the group's partial buffers [G, B, L, N].
template <int NS, typename T>
SCAN_INLINE void store_chunk_BC_grads(const Args<T>& p, const Grads<T>& g_out, int64_t grp, int64_t b, int64_t lo,
                                      int64_t n_pos, const ChunkBuffers<T>& buf) {
  const int64_t N = NS > 0 ? NS : p.nstate, NW = N * kW;
  T* gB_dst = g_out.gB + ((grp * p.batch + b) * p.len + lo) * N;
  T* gC_dst = g_out.gC + ((grp * p.batch + b) * p.len + lo) * N;
  for (int64_t t = 0; t < n_pos; ++t)
    for (int64_t n = 0; n < N; ++n) {
      T sb = 0, sc = 0;
      for (int64_t j = 0; j < kW; ++j) {
        sb += buf.gB_acc[t * NW + n * kW + j];
        sc += buf.gC_acc[t * NW + n * kW + j];
      }
      gB_dst[t * N + n] = sb;
      gC_dst[t * N + n] = sc;
    }
}

// The task's A, D and delta_bias gradients, real channels only, into its batch row.
template <int NS, typename T>
SCAN_INLINE void store_param_grads(const Args<T>& p, const Grads<T>& g_out, int64_t b,
                                   const std::vector<Block<T>>& blocks, const TaskAccumulators<T>& sums) {
  const int64_t N = NS > 0 ? NS : p.nstate, NW = N * kW;
  for (int64_t i = 0; i < static_cast<int64_t>(blocks.size()); ++i) {
    const Block<T>& blk = blocks[i];
    for (int64_t j = 0; j < blk.w; ++j) {
      const int64_t d = blk.d0 + j;
      for (int64_t n = 0; n < N; ++n) g_out.gA[(b * p.dim + d) * N + n] = sums.gA[i * NW + n * kW + j];
      g_out.gD[b * p.dim + d] = sums.gD[i * kW + j];
      g_out.gbias[b * p.dim + d] = sums.gbias[i * kW + j];
    }
  }
}

// Per task, chunks last to first; per chunk, every block of the group is recomputed from its stored
// start and swept in reverse (the adjoint g carried over from the later chunk), then the chunk's B and C
// gradients are stored; the A, D and delta_bias gradients at the end.
template <int NS, typename T>
void backward_cl(const Args<T>& p, const Grads<T>& g_out) {
  const int64_t NW = (NS > 0 ? NS : p.nstate) * kW, nblocks = num_blocks(p.dim), K = num_chunks(p.len);
  for_each_task(p, g_out.groups, [NW] { return ChunkBuffers<T>(NW); },
                [&](ChunkBuffers<T>& buf, int64_t b, int64_t grp, int64_t blk_lo, const std::vector<Block<T>>& blocks)
                    SCAN_INLINE_LAMBDA {
    const int64_t nb = static_cast<int64_t>(blocks.size());
    TaskAccumulators<T> sums(nb, NW);
    Step<T> s;
    T acc[kW];
    for (int64_t k = K - 1; k >= 0; --k) {
      const int64_t lo = k * kChunk, n_pos = std::min(p.len, lo + kChunk) - lo;
      std::fill(buf.gB_acc.begin(), buf.gB_acc.begin() + n_pos * NW, T(0));
      std::fill(buf.gC_acc.begin(), buf.gC_acc.begin() + n_pos * NW, T(0));
      for (int64_t i = 0; i < nb; ++i) {
        const T* st = g_out.starts + ((b * nblocks + blk_lo + i) * K + k) * NW;
        recompute_chunk<NS>(p, blocks[i], b, lo, n_pos, st, buf, s, acc);
        link_chunk_decays(NW, n_pos, buf, sums.a_next.data() + i * NW);
        reverse_sweep<NS>(p, g_out, blocks[i], i, b, lo, n_pos, buf, sums, s);
      }
      store_chunk_BC_grads<NS>(p, g_out, grp, b, lo, n_pos, buf);
    }
    store_param_grads<NS>(p, g_out, b, blocks, sums);
  });
}

// Causal depthwise convolution then SiLU, channel-last: x [B, L, D] (last dimension contiguous),
// w [D, K], bias [D] -> u [B, L, D] with pre_l = bias + sum_k w_k x_{l-K+1+k} (x = 0 before the start),
// u_l = silu(pre_l). Tasks are (b, run of kConvRun positions); every loop runs over a whole row of D
// contiguous channels. The backward recomputes pre.
constexpr int64_t kConvRun = 64;

template <typename T>
struct ConvArgs {
  const T *x, *w, *bias;
  int64_t batch, len, dim, taps, sx_b, sx_l;
};

template <typename T>
std::vector<T> conv_taps(const ConvArgs<T>& c) {  // weights as [K][D]
  std::vector<T> wt(c.taps * c.dim);
  for (int64_t d = 0; d < c.dim; ++d)
    for (int64_t k = 0; k < c.taps; ++k) wt[k * c.dim + d] = c.w[d * c.taps + k];
  return wt;
}

template <typename T>
inline void conv_pre_row(const ConvArgs<T>& c, const T* wt, int64_t b, int64_t l, T* __restrict__ pre) {
  const int64_t D = c.dim;
  std::copy(c.bias, c.bias + D, pre);
  for (int64_t k = std::max<int64_t>(0, c.taps - 1 - l); k < c.taps; ++k) {
    const T* __restrict__ x_s = c.x + b * c.sx_b + (l - c.taps + 1 + k) * c.sx_l;
    const T* __restrict__ w_k = wt + k * D;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) pre[d] += w_k[d] * x_s[d];
  }
}

template <typename T>
void conv_forward_cl(const ConvArgs<T>& c, T* u) {
  const std::vector<T> wt = conv_taps(c);
  const int64_t runs = (c.len + kConvRun - 1) / kConvRun, D = c.dim;
  at::parallel_for(0, c.batch * runs, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / runs, lo = (task % runs) * kConvRun, hi = std::min(c.len, lo + kConvRun);
      for (int64_t l = lo; l < hi; ++l) {
        T* __restrict__ u_l = u + (b * c.len + l) * D;
        conv_pre_row(c, wt.data(), b, l, u_l);
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) u_l[d] *= sigmoid(u_l[d]);
      }
    }
  });
}

// gu [B, L, D] contiguous -> gx [B, L, D]; gw, gbias per task: [tasks, K, D], [tasks, D] (summed by the caller)
template <typename T>
void conv_backward_cl(const ConvArgs<T>& c, const T* gu, T* gx, T* gw, T* gbias) {
  const std::vector<T> wt = conv_taps(c);
  const int64_t runs = (c.len + kConvRun - 1) / kConvRun, D = c.dim, K = c.taps;
  at::parallel_for(0, c.batch * runs, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> gpre((kConvRun + K - 1) * D), pre(D);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / runs, lo = (task % runs) * kConvRun, hi = std::min(c.len, lo + kConvRun);
      const int64_t top = std::min(c.len, hi + K - 1);  // gx at l reads gpre up to l + K - 1
      T* __restrict__ gw_t = gw + task * K * D;
      T* __restrict__ gb_t = gbias + task * D;
      std::fill(gw_t, gw_t + K * D, T(0));
      std::fill(gb_t, gb_t + D, T(0));
      for (int64_t l = lo; l < top; ++l) {  // gradient at the pre-activation
        conv_pre_row(c, wt.data(), b, l, pre.data());
        const T* __restrict__ gu_l = gu + (b * c.len + l) * D;
        T* __restrict__ gp = gpre.data() + (l - lo) * D;
        const T* __restrict__ pr = pre.data();
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) {
          const T sg = sigmoid(pr[d]);
          gp[d] = gu_l[d] * sg * (T(1) + pr[d] * (T(1) - sg));
        }
        if (l >= hi) continue;  // halo: used by gx only
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) gb_t[d] += gp[d];
        for (int64_t k = std::max<int64_t>(0, K - 1 - l); k < K; ++k) {
          const T* __restrict__ x_s = c.x + b * c.sx_b + (l - K + 1 + k) * c.sx_l;
          T* __restrict__ gw_k = gw_t + k * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) gw_k[d] += gp[d] * x_s[d];
        }
      }
      for (int64_t l = lo; l < hi; ++l) {  // gx_l = sum_k w_k gpre_{l+K-1-k}
        T* __restrict__ gx_l = gx + (b * c.len + l) * D;
        std::fill(gx_l, gx_l + D, T(0));
        for (int64_t k = 0; k < K; ++k) {
          const int64_t src = l + K - 1 - k;
          if (src >= c.len) continue;
          const T* __restrict__ gp = gpre.data() + (src - lo) * D;
          const T* __restrict__ w_k = wt.data() + k * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) gx_l[d] += w_k[d] * gp[d];
        }
      }
    }
  });
}

struct Inputs {
  at::Tensor u, delta, A, B, C, D, bias;
  std::optional<at::Tensor> z;
};

Inputs check_inputs(at::Tensor u, at::Tensor delta, at::Tensor A, at::Tensor B, at::Tensor C, at::Tensor D,
                    at::Tensor bias, std::optional<at::Tensor> z) {
  TORCH_CHECK(u.device().is_cpu(), "cpu_scan: CPU tensors only");
  TORCH_CHECK(u.dim() == 3 && delta.sizes() == u.sizes(), "cpu_scan: u and delta must be [B, L, D]");
  TORCH_CHECK(A.dim() == 2 && A.size(0) == u.size(2), "cpu_scan: A must be [D, N]");
  TORCH_CHECK(B.dim() == 3 && B.size(0) == u.size(0) && B.size(1) == u.size(1) && B.size(2) == A.size(1),
              "cpu_scan: B must be [B, L, N]");
  TORCH_CHECK(C.sizes() == B.sizes(), "cpu_scan: C must be [B, L, N]");
  TORCH_CHECK(D.dim() == 1 && D.size(0) == u.size(2) && bias.sizes() == D.sizes(), "cpu_scan: D, bias must be [D]");
  if (z) TORCH_CHECK(z->sizes() == u.sizes(), "cpu_scan: z must be [B, L, D]");
  for (const auto& t : {delta, A, B, C, D, bias})
    TORCH_CHECK(t.scalar_type() == u.scalar_type(), "cpu_scan: one dtype");
  auto last_contiguous = [](const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); };
  Inputs in{last_contiguous(u), last_contiguous(delta), A.contiguous(), last_contiguous(B), last_contiguous(C),
            D.contiguous(), bias.contiguous(), std::nullopt};
  if (z) {
    TORCH_CHECK(z->scalar_type() == u.scalar_type(), "cpu_scan: one dtype");
    in.z = last_contiguous(*z);
  }
  return in;
}

template <typename T>
Args<T> make_args(const Inputs& in, bool softplus) {
  Args<T> p;
  p.u = in.u.data_ptr<T>();
  p.delta = in.delta.data_ptr<T>();
  p.z = in.z ? in.z->data_ptr<T>() : nullptr;
  p.A = in.A.data_ptr<T>();
  p.Bm = in.B.data_ptr<T>();
  p.Cm = in.C.data_ptr<T>();
  p.Dskip = in.D.data_ptr<T>();
  p.bias = in.bias.data_ptr<T>();
  p.batch = in.u.size(0);
  p.len = in.u.size(1);
  p.dim = in.u.size(2);
  p.nstate = in.A.size(1);
  p.su_b = in.u.stride(0); p.su_l = in.u.stride(1);
  p.sd_b = in.delta.stride(0); p.sd_l = in.delta.stride(1);
  p.sz_b = in.z ? in.z->stride(0) : 0; p.sz_l = in.z ? in.z->stride(1) : 0;
  p.sB_b = in.B.stride(0); p.sB_l = in.B.stride(1);
  p.sC_b = in.C.stride(0); p.sC_l = in.C.stride(1);
  p.softplus = softplus;
  p.gate = in.z.has_value();
  return p;
}

}  // namespace

std::vector<at::Tensor> scan_forward(at::Tensor u, at::Tensor delta, at::Tensor A, at::Tensor B, at::Tensor C,
                                     at::Tensor D, at::Tensor bias, std::optional<at::Tensor> z, bool softplus,
                                     bool save_states) {
  const Inputs in = check_inputs(u, delta, A, B, C, D, bias, z);
  auto y = at::empty(in.u.sizes(), in.u.options());
  const int64_t nblocks = (in.u.size(2) + kW - 1) / kW;
  auto starts = save_states ? at::empty({in.u.size(0), nblocks, num_chunks(in.u.size(1)), in.A.size(1) * kW},
                                        in.u.options())
                            : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(in.u.scalar_type(), "cpu_scan_forward", [&] {
    const auto p = make_args<scalar_t>(in, softplus);
    scalar_t* st = save_states ? starts.data_ptr<scalar_t>() : nullptr;
    if (p.nstate == 16) forward_cl<16>(p, y.data_ptr<scalar_t>(), st);
    else forward_cl<0>(p, y.data_ptr<scalar_t>(), st);
  });
  return {y, starts};
}

std::vector<at::Tensor> scan_backward(at::Tensor u, at::Tensor delta, at::Tensor A, at::Tensor B, at::Tensor C,
                                      at::Tensor D, at::Tensor bias, std::optional<at::Tensor> z, bool softplus,
                                      at::Tensor starts, at::Tensor gy) {
  const Inputs in = check_inputs(u, delta, A, B, C, D, bias, z);
  TORCH_CHECK(gy.sizes() == u.sizes() && gy.scalar_type() == u.scalar_type(), "cpu_scan: gy must match u");
  TORCH_CHECK(starts.is_contiguous() && starts.scalar_type() == u.scalar_type() && starts.dim() == 4 &&
                  starts.size(0) == u.size(0) && starts.size(1) == (u.size(2) + kW - 1) / kW &&
                  starts.size(2) == num_chunks(u.size(1)) && starts.size(3) == A.size(1) * kW,
              "cpu_scan: starts must come from the forward of these inputs");
  gy = gy.contiguous();
  const int64_t batch = in.u.size(0), len = in.u.size(1), dim = in.u.size(2), nstate = in.A.size(1);
  const int64_t groups = channel_groups(batch, (dim + kW - 1) / kW);
  auto opts = in.u.options();
  auto gu = at::empty({batch, len, dim}, opts), gdelta = at::empty({batch, len, dim}, opts);
  auto gz = in.z ? at::empty({batch, len, dim}, opts) : at::Tensor();
  auto gA = at::zeros({batch, dim, nstate}, opts), gD = at::zeros({batch, dim}, opts), gbias = at::zeros({batch, dim}, opts);
  auto gB = at::zeros({groups, batch, len, nstate}, opts), gC = at::zeros({groups, batch, len, nstate}, opts);
  AT_DISPATCH_FLOATING_TYPES(in.u.scalar_type(), "cpu_scan_backward", [&] {
    Grads<scalar_t> g{gu.data_ptr<scalar_t>(), gdelta.data_ptr<scalar_t>(),
                      in.z ? gz.data_ptr<scalar_t>() : nullptr, gA.data_ptr<scalar_t>(), gD.data_ptr<scalar_t>(),
                      gbias.data_ptr<scalar_t>(), gB.data_ptr<scalar_t>(), gC.data_ptr<scalar_t>(),
                      gy.data_ptr<scalar_t>(), starts.data_ptr<scalar_t>(), groups};
    const auto p = make_args<scalar_t>(in, softplus);
    if (p.nstate == 16) backward_cl<16>(p, g);
    else backward_cl<0>(p, g);
  });
  return {gu, gdelta, gA.sum(0), gB.sum(0), gC.sum(0), gD.sum(0), gbias.sum(0), gz};
}

template <typename T>
ConvArgs<T> conv_args(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) {
  return ConvArgs<T>{x.data_ptr<T>(), w.data_ptr<T>(), bias.data_ptr<T>(), x.size(0), x.size(1), x.size(2),
                     w.size(1), x.stride(0), x.stride(1)};
}

void check_conv(at::Tensor& x, at::Tensor& w, at::Tensor& bias) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3, "cpu_scan: conv input must be a CPU tensor [B, L, D]");
  TORCH_CHECK(w.dim() == 2 && w.size(0) == x.size(2) && bias.dim() == 1 && bias.size(0) == x.size(2),
              "cpu_scan: conv weight must be [D, K] and bias [D]");
  TORCH_CHECK(w.scalar_type() == x.scalar_type() && bias.scalar_type() == x.scalar_type(), "cpu_scan: one dtype");
  if (x.stride(-1) != 1) x = x.contiguous();
  w = w.contiguous();
  bias = bias.contiguous();
}

at::Tensor conv_forward(at::Tensor x, at::Tensor w, at::Tensor bias) {
  check_conv(x, w, bias);
  auto u = at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cpu_conv_forward", [&] {
    conv_forward_cl<scalar_t>(conv_args<scalar_t>(x, w, bias), u.data_ptr<scalar_t>());
  });
  return u;
}

std::vector<at::Tensor> conv_backward(at::Tensor x, at::Tensor w, at::Tensor bias, at::Tensor gu) {
  check_conv(x, w, bias);
  TORCH_CHECK(gu.sizes() == x.sizes() && gu.scalar_type() == x.scalar_type(), "cpu_scan: gu must match x");
  gu = gu.contiguous();
  auto gx = at::empty(x.sizes(), x.options());
  const int64_t tasks = x.size(0) * ((x.size(1) + kConvRun - 1) / kConvRun);
  auto gw = at::empty({tasks, w.size(1), x.size(2)}, x.options()), gb = at::empty({tasks, x.size(2)}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cpu_conv_backward", [&] {
    conv_backward_cl<scalar_t>(conv_args<scalar_t>(x, w, bias), gu.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(),
                               gw.data_ptr<scalar_t>(), gb.data_ptr<scalar_t>());
  });
  return {gx, gw.sum(0).t().contiguous(), gb.sum(0)};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &scan_forward, "fused selective scan, channel-last: (y [B, L, D], chunk start states)");
  m.def("backward", &scan_backward, "its backward: (gu, gdelta, gA, gB, gC, gD, gbias, gz)");
  m.def("conv_forward", &conv_forward, "causal depthwise conv + SiLU, channel-last: u [B, L, D]");
  m.def("conv_backward", &conv_backward, "its backward: (gx, gw, gbias)");
}
