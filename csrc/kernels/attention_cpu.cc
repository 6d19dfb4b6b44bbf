// Fast CPU attention forward (per-ISA build; see attention_tiles.h).
//
// Prefill / training (Tq > kDecodeRows): one work unit per (b, h, query tile)
// runs a flash-attention style online softmax over key tiles; scratch is a
// few tiles per thread, never a Tq x Tk buffer.
// Decode (Tq <= kDecodeRows): the keys of each (b, query row) are split across
// threads; a split reads its K and V rows whole (every head at once), keeps
// (max, sum, output) partials per head, and a second pass combines them, so
// one-token decode uses every core and streams through the cache.
//
// Non-finite inputs: a NaN score (or +inf, whose exp2(x - max) is NaN) that a
// row can see makes the row's output and log-sum-exp NaN, as in the reference;
// scores the row cannot see are replaced by -inf or never computed, so NaN in
// masked keys never leaks.
#include <cmath>
#include <vector>

#include "kernels/attention.h"
#include "kernels/attention_tiles.h"

namespace keraslm {
namespace KERASLM_ISA {
namespace {

constexpr int64_t kDecodeRows = 8;

// exp2(x) for x <= 0 that keeps NaN (vexp2_nonpos maps NaN to 2^-126): one
// compare and blend per score.
inline vf vexp2_keep_nan(vf x) {
  const vf e = vexp2_nonpos(x);
  return x == x ? e : x;
}

inline const float* row(const float* base, const Strides3& s, int64_t b, int64_t t, int64_t h) {
  return base + b * s.b + t * s.t + h * s.h;
}
inline float* row(float* base, const Strides3& s, int64_t b, int64_t t, int64_t h) {
  return base + b * s.b + t * s.t + h * s.h;
}

// Keys [0, end) visible to query i of batch b.
inline int64_t key_end(const AttentionParams& p, int64_t b, int64_t i) {
  int64_t end = causal_key_end(p, i);
  const int64_t len = p.key_lengths ? p.key_lengths[b] : p.Tk;
  return std::max<int64_t>(0, std::min(end, len));
}

// One (b, h, query tile) of the blocked forward.
struct ForwardScratch {
  std::vector<float> qt, st, o, vp;
  alignas(64) float m[BR], l[BR], alpha[BR];
  explicit ForwardScratch(int64_t D, int64_t Dp)
      : qt(D * BR), st(BC * BR), o(BR * Dp), vp(BC * Dp) {}
};

void forward_tile(const AttentionParams& p, int64_t b, int64_t h, int64_t i0, ForwardScratch& s) {
  const int64_t D = p.D, Dp = round_up(D, W), G = p.H / p.Hkv, hk = h / G;
  const int64_t nr = std::min<int64_t>(BR, p.Tq - i0);
  const int64_t kend = key_end(p, b, i0 + nr - 1);  // keys needed by the tile's last row
  const int64_t off = p.Tk - p.Tq;
  const bool direct_v = (D % W) == 0;  // V rows usable in place (no padding needed)

  pack_transposed(row(p.q, p.q_stride, b, i0, h), p.q_stride.t, nr, D, p.scale * kLog2e, s.qt.data());
  std::fill(s.o.begin(), s.o.end(), 0.f);
  for (int r = 0; r < BR; ++r) { s.m[r] = -kInf; s.l[r] = 0.f; }
  const vi iota = lane_iota();

  for (int64_t j0 = 0; j0 < kend; j0 += BC) {
    const int64_t nc = std::min<int64_t>(BC, kend - j0);
    float* st = s.st.data();  // [nc][BR]: scores in log2 units
    tile_abt(row(p.k, p.k_stride, b, j0, hk), p.k_stride.t, nc, s.qt.data(), D, st);
    // Causal mask: key j0+c is visible to row i0+r iff c - r < c0.
    const int64_t c0 = i0 + off + 1 - j0;
    if (p.causal && c0 < nc) {
      for (int64_t c = 0; c < nc; ++c)
        for (int v = 0; v < NI; ++v) {
          const vi hidden = (vi{} + int32_t(c)) - (iota + v * W) >= int32_t(c0);
          vf x = vload(st + c * BR + v * W);
          vstore(st + c * BR + v * W, hidden ? vset1(-kInf) : x);
        }
    }
    // Online softmax, all BR rows at once (rows in lanes).
    for (int v = 0; v < NI; ++v) {
      const vf m_old = vload(s.m + v * W);
      vf m_new = m_old;
      for (int64_t c = 0; c < nc; ++c) m_new = vmax(m_new, vload(st + c * BR + v * W));
      const vf m_safe = m_new == vset1(-kInf) ? vf{} : m_new;
      const vf alpha = vexp2_nonpos(m_old - m_safe);
      vf sum{};
      for (int64_t c = 0; c < nc; ++c) {
        const vf e = vexp2_keep_nan(vload(st + c * BR + v * W) - m_safe);
        vstore(st + c * BR + v * W, e);
        sum += e;
      }
      vstore(s.l + v * W, vload(s.l + v * W) * alpha + sum);
      vstore(s.m + v * W, m_new);
      vstore(s.alpha + v * W, alpha);
    }
    for (int64_t r = 0; r < nr; ++r) {
      const float a = s.alpha[r];
      if (a == 1.f) continue;
      float* o = s.o.data() + r * Dp;
      for (int64_t d = 0; d < Dp; d += W) vstore(o + d, vload(o + d) * a);
    }
    const float* vrows = row(p.v, p.v_stride, b, j0, hk);
    int64_t ldv = p.v_stride.t;
    if (!direct_v) {
      pack_rows(vrows, ldv, nc, D, Dp, 1.f, s.vp.data());
      vrows = s.vp.data();
      ldv = Dp;
    }
    // O[r] += sum_c P[c][r] V[c]
    tile_acc(st, 1, BR, nr, nc, vrows, ldv, s.o.data(), Dp, Dp);
  }

  for (int64_t r = 0; r < nr; ++r) {
    const float l = s.l[r];  // 0: the row saw no key; NaN: it saw a NaN score
    const float inv = l == 0.f ? 0.f : 1.f / l;
    float* out = row(p.out, p.out_stride, b, i0 + r, h);
    const float* o = s.o.data() + r * Dp;
    for (int64_t d = 0; d < D; ++d) out[d] = o[d] * inv;
    p.lse[(b * p.H + h) * p.Tq + i0 + r] = l == 0.f ? -kInf : s.m[r] * kLn2 + std::log(l);
  }
}

void forward_blocked(const AttentionParams& p, const Parallel& par) {
  const int64_t nqt = (p.Tq + BR - 1) / BR;
  const int64_t Dp = round_up(p.D, W);
  const int64_t cost = BR * std::max<int64_t>(p.Tk, 1) * p.D * 4;
  par(p.B * p.H * nqt, cost, [&](int64_t begin, int64_t end) {
    ForwardScratch s(p.D, Dp);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t qt = u % nqt, bh = u / nqt;
      forward_tile(p, bh / p.H, bh % p.H, qt * BR, s);
    }
  });
}

inline float dot(const float* a, const float* b, int64_t D) {
  vf acc{};
  int64_t d = 0;
  for (; d + W <= D; d += W) acc += vload(a + d) * vload(b + d);
  float s = hsum(acc);
  for (; d < D; ++d) s += a[d] * b[d];
  return s;
}

// The scores of four keys at once: independent accumulators hide the FMA
// latency (each sum is formed exactly as dot() forms it).
inline void dot4(const float* a, const float* b0, const float* b1, const float* b2, const float* b3, int64_t D,
                 float* out) {
  vf s0{}, s1{}, s2{}, s3{};
  int64_t d = 0;
  for (; d + W <= D; d += W) {
    const vf av = vload(a + d);
    s0 += av * vload(b0 + d);
    s1 += av * vload(b1 + d);
    s2 += av * vload(b2 + d);
    s3 += av * vload(b3 + d);
  }
  float r0 = hsum(s0), r1 = hsum(s1), r2 = hsum(s2), r3 = hsum(s3);
  for (; d < D; ++d) r0 += a[d] * b0[d], r1 += a[d] * b1[d], r2 += a[d] * b2[d], r3 += a[d] * b3[d];
  out[0] = r0, out[1] = r1, out[2] = r2, out[3] = r3;
}

inline void axpy(float a, const float* x, float* y, int64_t D) {
  const vf av = vset1(a);
  int64_t d = 0;
  for (; d + W <= D; d += W) vstore(y + d, vload(y + d) + av * vload(x + d));
  for (; d < D; ++d) y[d] += a * x[d];
}

// Decode: partial softmaxes of query row i, for every head, over keys [k0, k1).
// The K and V rows are read whole, in order: each key row holds every kv head
// (a cache row), so the reads stream through memory instead of visiting one
// head's slice of each row at the stride of the whole row, H times over.
// part + h * head_stride = {max (log2 units), sum, o[D]} of head h.
struct DecodeScratch {
  std::vector<float> qs, sc, o, m, l;
  DecodeScratch(int64_t H, int64_t D) : qs(H * D), sc(H * BC), o(H * D), m(H), l(H) {}
};

void decode_partial(const AttentionParams& p, int64_t b, int64_t i, int64_t k0, int64_t k1, DecodeScratch& s,
                    float* part, int64_t head_stride) {
  const int64_t D = p.D, H = p.H, G = p.H / p.Hkv;
  float* qs = s.qs.data();
  float* o = s.o.data();
  for (int64_t h = 0; h < H; ++h) {
    const float* q = row(p.q, p.q_stride, b, i, h);
    for (int64_t d = 0; d < D; ++d) qs[h * D + d] = q[d] * p.scale * kLog2e;
    s.m[h] = -kInf, s.l[h] = 0.f;
  }
  std::fill(o, o + H * D, 0.f);
  for (int64_t j0 = k0; j0 < k1; j0 += BC) {
    const int64_t nc = std::min<int64_t>(BC, k1 - j0);
    auto key = [&](int64_t c, int64_t h) { return row(p.k, p.k_stride, b, j0 + c, h / G); };
    auto value = [&](int64_t c, int64_t h) { return row(p.v, p.v_stride, b, j0 + c, h / G); };
    // Scores, four keys at a time for every head (rows c..c+3 are read once, whole).
    int64_t c = 0;
    for (; c + 4 <= nc; c += 4)
      for (int64_t h = 0; h < H; ++h)
        dot4(qs + h * D, key(c, h), key(c + 1, h), key(c + 2, h), key(c + 3, h), D, s.sc.data() + h * BC + c);
    for (; c < nc; ++c)
      for (int64_t h = 0; h < H; ++h) s.sc[h * BC + c] = dot(qs + h * D, key(c, h), D);
    // Each head's online-softmax update; o(h) *= alpha(h).
    for (int64_t h = 0; h < H; ++h) {
      float* sc = s.sc.data() + h * BC;
      float cmax = -kInf;
      for (c = 0; c < nc; ++c) cmax = std::max(cmax, sc[c]);
      for (c = nc; c < BC; ++c) sc[c] = -kInf;
      const float m = s.m[h], m_new = std::max(m, cmax);  // (std::max skips NaN scores: their e is NaN)
      const float m_safe = m_new == -kInf ? 0.f : m_new;
      const float alpha = m == -kInf ? 0.f : std::exp2(m - m_safe);
      vf sum{};
      for (c = 0; c < BC; c += W) {
        const vf e = vexp2_keep_nan(vload(sc + c) - m_safe);
        vstore(sc + c, e);
        sum += e;
      }
      s.l[h] = s.l[h] * alpha + hsum(sum);
      s.m[h] = m_new;
      float* oh = o + h * D;
      const vf av = vset1(alpha);
      int64_t d = 0;
      for (; d + W <= D; d += W) vstore(oh + d, vload(oh + d) * av);
      for (; d < D; ++d) oh[d] *= alpha;
    }
    // o(h) += sum_c e(h, c) v(c, h), four value rows at a time, each read once, whole; the terms are
    // added in key order.
    c = 0;
    for (; c + 4 <= nc; c += 4)
      for (int64_t h = 0; h < H; ++h) {
        const float* e = s.sc.data() + h * BC + c;
        const vf e0 = vset1(e[0]), e1 = vset1(e[1]), e2 = vset1(e[2]), e3 = vset1(e[3]);
        const float *v0 = value(c, h), *v1 = value(c + 1, h), *v2 = value(c + 2, h), *v3 = value(c + 3, h);
        float* oh = o + h * D;
        int64_t d = 0;
        for (; d + W <= D; d += W) {
          vf acc = vload(oh + d);
          acc += e0 * vload(v0 + d);
          acc += e1 * vload(v1 + d);
          acc += e2 * vload(v2 + d);
          acc += e3 * vload(v3 + d);
          vstore(oh + d, acc);
        }
        for (; d < D; ++d) {
          float acc = oh[d];
          acc += e[0] * v0[d];
          acc += e[1] * v1[d];
          acc += e[2] * v2[d];
          acc += e[3] * v3[d];
          oh[d] = acc;
        }
      }
    for (; c < nc; ++c)
      for (int64_t h = 0; h < H; ++h) axpy(s.sc[h * BC + c], value(c, h), o + h * D, D);
  }
  for (int64_t h = 0; h < H; ++h) {
    float* out = part + h * head_stride;
    out[0] = s.m[h];
    out[1] = s.l[h];
    std::copy(o + h * D, o + (h + 1) * D, out + 2);
  }
}

void forward_decode(const AttentionParams& p, const Parallel& host_par) {
  const int64_t D = p.D, rows = p.B * p.H * p.Tq;
  // The live keys (a KV cache is usually much longer than its filled part):
  // splits and threading follow them, not Tk.
  int64_t live = 0, work = 0;
  for (int64_t b = 0; b < p.B; ++b) {
    const int64_t end = key_end(p, b, p.Tq - 1);
    live = std::max(live, end);
    work += end;
  }
  work *= p.H * p.Tq * D;  // multiply-adds of q.k and p.v, about
  // Below ~20 us of work, handing units to other threads costs more than it saves.
  const Parallel& par = work < (1 << 18) ? Parallel::serial() : host_par;
  // A unit is one query row of one batch row over a split of the keys, every head at once. Split the
  // keys so that there are a few units per thread, each >= 256 keys; one thread splits nothing.
  const int64_t queries = p.B * p.Tq;
  const int64_t want = par.num_threads <= 1 ? 1 : (4 * par.num_threads + queries - 1) / queries;
  const int64_t nsplit = std::max<int64_t>(1, std::min(want, (live + 255) / 256));
  const int64_t chunk = std::max<int64_t>(BC, round_up((live + nsplit - 1) / nsplit, BC));
  std::vector<float> parts(rows * nsplit * (D + 2));  // [B, H, Tq, nsplit, D + 2]
  par(queries * nsplit, chunk * p.H * D * 4, [&](int64_t begin, int64_t end) {
    DecodeScratch s(p.H, D);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t sp = u % nsplit, i = u / nsplit % p.Tq, b = u / (nsplit * p.Tq);
      const int64_t kend = key_end(p, b, i);
      const int64_t k0 = std::min(sp * chunk, kend), k1 = std::min(k0 + chunk, kend);
      decode_partial(p, b, i, k0, k1, s, &parts[((b * p.H * p.Tq + i) * nsplit + sp) * (D + 2)],
                     p.Tq * nsplit * (D + 2));
    }
  });
  // Combine the splits of each row.
  par(rows, nsplit * D * 2, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t i = r % p.Tq, h = (r / p.Tq) % p.H, b = r / (p.Tq * p.H);
      const float* pr = &parts[r * nsplit * (D + 2)];
      float m = -kInf;
      for (int64_t sp = 0; sp < nsplit; ++sp) m = std::max(m, pr[sp * (D + 2)]);
      const float m_safe = m == -kInf ? 0.f : m;
      float* out = row(p.out, p.out_stride, b, i, h);
      std::fill(out, out + D, 0.f);
      float l = 0.f;
      for (int64_t sp = 0; sp < nsplit; ++sp) {
        const float* part = pr + sp * (D + 2);
        if (part[1] == 0.f) continue;  // no key (a NaN sum, even with max -inf, is kept)
        const float w = std::exp2(part[0] - m_safe);
        l += part[1] * w;
        axpy(w, part + 2, out, D);
      }
      const float inv = l == 0.f ? 0.f : 1.f / l;
      for (int64_t d = 0; d < D; ++d) out[d] *= inv;
      p.lse[(b * p.H + h) * p.Tq + i] = l == 0.f ? -kInf : m * kLn2 + std::log(l);
    }
  });
}

}  // namespace

void attention_forward(const AttentionParams& p, const Parallel& par) {
  if (p.B == 0 || p.H == 0 || p.Tq == 0) return;
  if (p.Tq <= kDecodeRows)
    forward_decode(p, par);
  else
    forward_blocked(p, par);
}

}  // namespace KERASLM_ISA
}  // namespace keraslm
