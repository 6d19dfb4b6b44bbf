// Fast CPU attention backward (per-ISA build; see attention_tiles.h).
//
// Work unit: (b, kv head, key-tile split).  A unit owns dK/dV of its key
// tiles and, for every query head of its group, walks the query tiles that can
// see those keys, recomputing P from the saved log-sum-exp (flash-attention
// v2 style):
//   S^T = K Q^T,  P^T = exp(S^T - lse),  dV += P^T dO,  dP^T = V dO^T,
//   dS^T = P^T * (dP^T - delta),  dK += dS^T Q,  dQ += dS K
// dQ partials live in a per-unit [G, Tq, D] buffer (O(Tq) memory); when the key
// tiles of one (b, kv head) are split across units, each split writes its own
// partial and a final pass adds them in split order, so results are
// deterministic (bit-identical from run to run, whatever the thread timing).
#include <cmath>
#include <vector>

#include "kernels/attention.h"
#include "kernels/attention_tiles.h"

namespace keraslm {
namespace KERASLM_ISA {
namespace {

inline const float* row(const float* base, const Strides3& s, int64_t b, int64_t t, int64_t h) {
  return base + b * s.b + t * s.t + h * s.h;
}
inline float* row(float* base, const Strides3& s, int64_t b, int64_t t, int64_t h) {
  return base + b * s.b + t * s.t + h * s.h;
}

struct BackwardScratch {
  std::vector<float> qt, qp, dot, dop, kp, pt, dpt, dk, dv, dq;
  alignas(64) float lse2[BR], delta[BR];
  BackwardScratch(int64_t D, int64_t Dp, int64_t G, int64_t Tq)
      : qt(D * BR), qp(BR * Dp), dot(D * BR), dop(BR * Dp), kp(BC * Dp), pt(BC * BR), dpt(BC * BR),
        dk(BC * Dp), dv(BC * Dp), dq(G * Tq * Dp) {}
};

struct BackwardContext {
  const AttentionGradParams& g;
  const std::vector<float>& lse2;    // [B, H, Tq] in log2 units; +inf for empty rows
  const std::vector<float>& delta;   // [B, H, Tq] = <dO, O>
  int64_t nsplit;
  float* dq_parts;                   // [nsplit, B, Tq, H, D] when nsplit > 1
};

// Key tile j0 of kv head hk against query tile i0 of head h; accumulates into
// s.dk, s.dv (tile) and s.dq (rows of head g_index).
void backward_tile(const BackwardContext& ctx, int64_t b, int64_t h, int64_t j0, int64_t nc, int64_t i0,
                   BackwardScratch& s, float* dq_head) {
  const AttentionParams& p = ctx.g.fwd;
  const int64_t D = p.D, Dp = round_up(D, W), hk = h / (p.H / p.Hkv);
  const int64_t nr = std::min<int64_t>(BR, p.Tq - i0);
  const float* q = row(p.q, p.q_stride, b, i0, h);
  const float* dout = row(ctx.g.dout, ctx.g.dout_stride, b, i0, h);
  pack_transposed(q, p.q_stride.t, nr, D, p.scale * kLog2e, s.qt.data());
  pack_rows(q, p.q_stride.t, nr, D, Dp, 1.f, s.qp.data());
  pack_transposed(dout, ctx.g.dout_stride.t, nr, D, 1.f, s.dot.data());
  pack_rows(dout, ctx.g.dout_stride.t, nr, D, Dp, 1.f, s.dop.data());
  const int64_t base = (b * p.H + h) * p.Tq + i0;
  for (int64_t r = 0; r < BR; ++r) {
    s.lse2[r] = r < nr ? ctx.lse2[base + r] : kInf;
    s.delta[r] = r < nr ? ctx.delta[base + r] : 0.f;
  }
  float* pt = s.pt.data();
  float* dpt = s.dpt.data();
  tile_abt(row(p.k, p.k_stride, b, j0, hk), p.k_stride.t, nc, s.qt.data(), D, pt);
  tile_abt(row(p.v, p.v_stride, b, j0, hk), p.v_stride.t, nc, s.dot.data(), D, dpt);
  const int64_t c0 = i0 + (p.Tk - p.Tq) + 1 - j0;  // key j0+c visible to row r iff c - r < c0
  const bool mask = p.causal && c0 < nc;
  const vi iota = lane_iota();
  for (int64_t c = 0; c < nc; ++c)
    for (int v = 0; v < NI; ++v) {
      // P keeps NaN (a row whose forward saw a NaN score has lse NaN): its
      // gradients are NaN, as in the reference; hidden keys get exact zeros.
      const vf x = vload(pt + c * BR + v * W) - vload(s.lse2 + v * W);
      const vf ex = vexp2_nonpos(x);
      vf e = x == x ? ex : x;
      vf ds = e * (vload(dpt + c * BR + v * W) - vload(s.delta + v * W));
      if (mask) {
        const vi hidden = (vi{} + int32_t(c)) - (iota + v * W) >= int32_t(c0);
        e = hidden ? vf{} : e;
        ds = hidden ? vf{} : ds;
      }
      vstore(pt + c * BR + v * W, e);
      vstore(dpt + c * BR + v * W, ds);
    }
  tile_acc(pt, BR, 1, nc, nr, s.dop.data(), Dp, s.dv.data(), Dp, Dp);    // dV += P^T dO
  tile_acc(dpt, BR, 1, nc, nr, s.qp.data(), Dp, s.dk.data(), Dp, Dp);    // dK += dS^T Q
  tile_acc(dpt, 1, BR, nr, nc, s.kp.data(), Dp, dq_head + i0 * Dp, Dp, Dp);  // dQ += dS K
}

void backward_unit(const BackwardContext& ctx, int64_t b, int64_t hk, int64_t split, BackwardScratch& s) {
  const AttentionGradParams& g = ctx.g;
  const AttentionParams& p = g.fwd;
  const int64_t D = p.D, Dp = round_up(D, W), G = p.H / p.Hkv;
  const int64_t len = p.key_lengths ? p.key_lengths[b] : p.Tk;
  const int64_t nkt = (p.Tk + BC - 1) / BC;
  const int64_t off = p.Tk - p.Tq;
  std::fill(s.dq.begin(), s.dq.end(), 0.f);
  for (int64_t kt = split; kt < nkt; kt += ctx.nsplit) {
    const int64_t j0 = kt * BC, nt = std::min<int64_t>(BC, p.Tk - j0);
    const int64_t nc = std::max<int64_t>(0, std::min<int64_t>(nt, len - j0));  // live keys
    std::fill(s.dk.begin(), s.dk.end(), 0.f);
    std::fill(s.dv.begin(), s.dv.end(), 0.f);
    if (nc > 0) {
      pack_rows(row(p.k, p.k_stride, b, j0, hk), p.k_stride.t, nc, D, Dp, 1.f, s.kp.data());
      // The first query that sees key j0 (bottom-right causal alignment).
      const int64_t i_first = p.causal ? std::max<int64_t>(0, j0 - off) : 0;
      for (int64_t gi = 0; gi < G; ++gi)
        for (int64_t i0 = (i_first / BR) * BR; i0 < p.Tq; i0 += BR)
          backward_tile(ctx, b, hk * G + gi, j0, nc, i0, s, s.dq.data() + gi * p.Tq * Dp);
    }
    for (int64_t c = 0; c < nt; ++c) {
      float* dk = row(g.dk, g.dk_stride, b, j0 + c, hk);
      float* dv = row(g.dv, g.dv_stride, b, j0 + c, hk);
      for (int64_t d = 0; d < D; ++d) {
        dk[d] = s.dk[c * Dp + d] * p.scale;
        dv[d] = s.dv[c * Dp + d];
      }
    }
  }
  const Strides3 dense = dense_strides(p.Tq, p.H, D);
  float* part = ctx.nsplit > 1 ? ctx.dq_parts + split * p.B * p.Tq * p.H * D : nullptr;
  for (int64_t gi = 0; gi < G; ++gi)
    for (int64_t i = 0; i < p.Tq; ++i) {
      float* dq = part ? row(part, dense, b, i, hk * G + gi) : row(g.dq, g.dq_stride, b, i, hk * G + gi);
      const float* acc = s.dq.data() + (gi * p.Tq + i) * Dp;
      for (int64_t d = 0; d < D; ++d) dq[d] = acc[d] * p.scale;
    }
}

}  // namespace

void attention_backward(const AttentionGradParams& g, const Parallel& par) {
  const AttentionParams& p = g.fwd;
  if (p.B == 0 || p.H == 0) return;
  const int64_t D = p.D, Dp = round_up(D, W), G = p.H / p.Hkv;
  const int64_t rows = p.B * p.H * p.Tq;
  // Per-row log-sum-exp in log2 units (+inf for empty rows makes P = 0) and
  // delta = <dO, O>.
  std::vector<float> lse2(rows), delta(rows);  // O(B H Tq)
  par(rows, D * 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t i = r % p.Tq, h = (r / p.Tq) % p.H, b = r / (p.Tq * p.H);
      const float l = p.lse[r];
      lse2[r] = l == -kInf ? kInf : l * kLog2e;
      const float* o = row(p.out, p.out_stride, b, i, h);
      const float* d_o = row(g.dout, g.dout_stride, b, i, h);
      // A gradient on lse adds dlse * P to dS, i.e. shifts delta.
      float acc = g.dlse && l != -kInf ? -g.dlse[r] : 0.f;
      for (int64_t d = 0; d < D; ++d) acc += o[d] * d_o[d];
      delta[r] = acc;
    }
  });
  const int64_t nkt = (p.Tk + BC - 1) / BC;
  const int64_t heads = p.B * p.Hkv;
  const int64_t nsplit = std::max<int64_t>(1, std::min<int64_t>(nkt, (2 * par.num_threads + heads - 1) / heads));
  std::vector<float> dq_parts(nsplit > 1 ? nsplit * rows * D : 0);  // O(nsplit B H Tq D)
  BackwardContext ctx{g, lse2, delta, nsplit, dq_parts.data()};
  const int64_t cost = G * p.Tq * std::max<int64_t>(p.Tk, 1) * D * 10 / nsplit;
  par(heads * nsplit, cost, [&](int64_t begin, int64_t end) {
    BackwardScratch s(D, Dp, G, p.Tq);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t split = u % nsplit, bh = u / nsplit;
      backward_unit(ctx, bh / p.Hkv, bh % p.Hkv, split, s);
    }
  });
  if (nsplit > 1) {
    const Strides3 dense = dense_strides(p.Tq, p.H, D);
    par(rows, nsplit * D, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t i = r % p.Tq, h = (r / p.Tq) % p.H, b = r / (p.Tq * p.H);
        float* dq = row(g.dq, g.dq_stride, b, i, h);
        const int64_t off = (b * dense.b + i * dense.t + h * dense.h);
        for (int64_t d = 0; d < D; ++d) dq[d] = dq_parts[off + d];
        for (int64_t sp = 1; sp < nsplit; ++sp)
          for (int64_t d = 0; d < D; ++d) dq[d] += dq_parts[sp * rows * D + off + d];
      }
    });
  }
}

}  // namespace KERASLM_ISA
}  // namespace keraslm
