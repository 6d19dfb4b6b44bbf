// The CUDA attention kernels (csrc/kernels/attention_cuda_*.cu), run on the
// CPU through the CUDA emulation, against the C++ reference
// (attention_forward_reference / attention_backward_reference).
//
// Usage: keraslm_emulated_attention [random_cases=20] [seed=1]
// Runs fixed edge cases, then random shapes (GQA, causal or not, key lengths
// with zeros, Tq > Tk, decode with long Tk, padded / unaligned strides,
// float32 / bfloat16 / float16, backward with and without dlse).  Inputs are
// rounded to the dtype and the reference runs on the rounded values; key
// positions past a batch's key length hold NaN, which must never leak.  Each
// case prints its worst error as a fraction of the dtype's tolerance; output
// bytes outside the logical elements must stay untouched.  Exit status: 0 all
// match, 1 a mismatch, 3 an error found by the emulation itself.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda_emulation.h"
#include "kernels/attention.h"
#include "kernels/attention_cuda.h"

using keraslm::Strides3;
using keraslm::cuda::DType;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr size_t kGuardBytes = 64;

// Device memory stand-in: 256-byte aligned, every byte 0xff (NaN in every
// dtype) until written, guard bytes after the end.
struct Buffer {
  unsigned char* data;
  size_t size;
  explicit Buffer(size_t n) : size(n) {
    data = static_cast<unsigned char*>(std::aligned_alloc(256, (n + kGuardBytes + 255) & ~size_t(255)));
    std::memset(data, 0xff, n + kGuardBytes);
  }
  ~Buffer() { std::free(data); }
  Buffer(const Buffer&) = delete;
};

// A [B, T, H, D] tensor of dtype dt with `pad` extra elements after each
// head, time step and batch; `val` holds the same elements as float32 (NaN
// in the padding), so the reference reads it with the same strides.
struct Tensor {
  int64_t B, T, H, D;
  DType dt;
  Strides3 s;
  std::vector<float> val;
  Buffer dev;
  Tensor(int64_t b, int64_t t, int64_t h, int64_t d, DType type, int pad)
      : B(b), T(t), H(h), D(d), dt(type), s{t * (h * (d + pad) + pad) + pad, h * (d + pad) + pad, d + pad},
        val(size_t(b * s.b), kNaN), dev(size_t(b * s.b) * keraslm::cuda::dtype_size(type)) {}
  int64_t at(int64_t b, int64_t t, int64_t h, int64_t d) const { return b * s.b + t * s.t + h * s.h + d; }
  size_t es() const { return size_t(keraslm::cuda::dtype_size(dt)); }
  void set(int64_t i, float x) {  // rounds x to the dtype
    const uint32_t bits = dt == DType::kFloat32    ? __float_as_uint(x)
                          : dt == DType::kBFloat16 ? __bfloat16_as_ushort(__float2bfloat16_rn(x))
                                                   : __half_as_ushort(__float2half_rn(x));
    std::memcpy(dev.data + size_t(i) * es(), &bits, es());  // (little endian)
    val[size_t(i)] = get(i);
  }
  float get(int64_t i) const {
    uint32_t bits = 0;
    std::memcpy(&bits, dev.data + size_t(i) * es(), es());
    if (dt == DType::kFloat32) return __uint_as_float(bits);
    return dt == DType::kBFloat16 ? __uint_as_float(bits << 16) : __half2float(__ushort_as_half(uint16_t(bits)));
  }
  template <class F> void each(F f) const {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t d = 0; d < D; ++d) f(b, t, h, d, at(b, t, h, d));
  }
  // Random values in [-amp, amp); NaN at t >= lens[b] (past the key length).
  void fill(std::mt19937_64& g, float amp, const std::vector<int32_t>* lens = nullptr) {
    std::uniform_real_distribution<float> u(-amp, amp);
    each([&](int64_t b, int64_t t, int64_t, int64_t, int64_t i) { set(i, lens && t >= (*lens)[b] ? kNaN : u(g)); });
  }
  // True when no byte outside the logical elements was written.
  bool untouched_padding() const {
    std::vector<char> logical(dev.size, 0);
    each([&](int64_t, int64_t, int64_t, int64_t, int64_t i) { std::memset(&logical[size_t(i) * es()], 1, es()); });
    for (size_t k = 0; k < dev.size + kGuardBytes; ++k)
      if ((k >= dev.size || !logical[k]) && dev.data[k] != 0xff) return false;
    return true;
  }
};

struct Case {
  DType dt;
  int64_t B, Tq, Tk, H, Hkv, D;
  bool causal, lens;  // key_lengths (a zero one when B > 1)
  int pad;            // extra elements after each head, time step and batch
  bool bwd, dlse;
};

std::string describe(const Case& c) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%-8s B=%ld Tq=%ld Tk=%ld H=%ld/%ld D=%ld%s%s pad=%d%s",
                keraslm::cuda::dtype_name(c.dt), long(c.B), long(c.Tq), long(c.Tk), long(c.H), long(c.Hkv), long(c.D),
                c.causal ? " causal" : "", c.lens ? " lens" : "", c.pad, c.bwd ? (c.dlse ? " bwd+dlse" : " bwd") : "");
  return buf;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::fmax(m, std::fabs(x));  // NaN (padding, masked keys) ignored
  return m;
}

// Error of a result relative to its tolerance: |got - ref| / (tol * (|ref| + scale)),
// scale = max |ref| of the tensor (at least `floor`); infinities must match
// exactly.  > 1 fails.
struct Check {
  double worst = 0;
  std::string where;
  bool padding_ok = true;
  void value(double got, double ref, double tol, double scale, const char* name, int64_t index) {
    double r;
    if (std::isinf(ref) || std::isinf(got)) r = got == ref ? 0 : INFINITY;
    else r = std::fabs(got - ref) / (tol * (std::fabs(ref) + scale));
    if (!(r <= worst)) {  // NaN counts as worst
      worst = std::isnan(r) ? INFINITY : r;
      char buf[120];
      std::snprintf(buf, sizeof buf, "%s[%ld] = %.7g, reference %.7g", name, long(index), got, ref);
      where = buf;
    }
  }
  void tensor(const Tensor& got, const std::vector<float>& ref, double tol, const char* name, double floor = 0) {
    const double scale = std::fmax(std::fmax(max_abs(ref), floor), 1e-6);
    int64_t k = 0;
    got.each([&](int64_t, int64_t, int64_t, int64_t, int64_t i) {
      value(got.get(i), ref[size_t(k)], tol, scale, name, k);
      ++k;
    });
    if (!got.untouched_padding()) padding_ok = false, where = std::string(name) + ": bytes outside the tensor written";
  }
};

// About four units in the last place of the dtype (the kernels round their
// outputs, and P before the tensor-core P V).
double tolerance(DType dt) { return dt == DType::kFloat32 ? 2e-5 : dt == DType::kBFloat16 ? 1.6e-2 : 2e-3; }

// Runs one case; returns its worst error / tolerance (inf on a failed launch).
double run(const Case& c, uint64_t seed, std::string& where) {
  std::mt19937_64 g(seed);
  std::vector<int32_t> lens(size_t(c.B), int32_t(c.Tk));
  if (c.lens) {
    for (auto& l : lens) l = int32_t(g() % uint64_t(c.Tk + 1));
    if (c.B > 1) lens[0] = 0, lens[size_t(c.B) - 1] = int32_t(c.Tk);
  }
  Tensor q(c.B, c.Tq, c.H, c.D, c.dt, c.pad), out(c.B, c.Tq, c.H, c.D, c.dt, c.pad);
  Tensor k(c.B, c.Tk, c.Hkv, c.D, c.dt, c.pad), v(c.B, c.Tk, c.Hkv, c.D, c.dt, c.pad);
  q.fill(g, 2.f);
  k.fill(g, 2.f, c.lens ? &lens : nullptr);
  v.fill(g, 1.f, c.lens ? &lens : nullptr);
  const size_t rows = size_t(c.B * c.H * c.Tq);
  std::vector<float> lse(rows, kNaN), ref_lse(rows), ref_out(size_t(c.B * c.Tq * c.H * c.D));

  keraslm::AttentionParams rp;
  rp.B = c.B, rp.Tq = c.Tq, rp.Tk = c.Tk, rp.H = c.H, rp.Hkv = c.Hkv, rp.D = c.D, rp.causal = c.causal;
  rp.scale = 1.f / std::sqrt(float(c.D));
  rp.key_lengths = c.lens ? lens.data() : nullptr;
  rp.q = q.val.data(), rp.q_stride = q.s, rp.k = k.val.data(), rp.k_stride = k.s;
  rp.v = v.val.data(), rp.v_stride = v.s;
  rp.out = ref_out.data(), rp.out_stride = keraslm::dense_strides(c.Tq, c.H, c.D), rp.lse = ref_lse.data();
  keraslm::attention_forward_reference(rp);

  keraslm::cuda::AttentionParams p;
  p.B = c.B, p.Tq = c.Tq, p.Tk = c.Tk, p.H = c.H, p.Hkv = c.Hkv, p.D = c.D, p.causal = c.causal, p.scale = rp.scale;
  p.dtype = c.dt, p.key_lengths = rp.key_lengths;
  p.q = q.dev.data, p.q_stride = q.s, p.k = k.dev.data, p.k_stride = k.s, p.v = v.dev.data, p.v_stride = v.s;
  p.out = out.dev.data, p.out_stride = out.s, p.lse = lse.data();
  Buffer ws(keraslm::cuda::attention_forward_workspace(p));
  if (const char* err = keraslm::cuda::attention_forward(p, ws.data, nullptr)) return where = err, INFINITY;
  Check check;
  const double tol = tolerance(c.dt);
  check.tensor(out, ref_out, tol, "out");
  for (size_t i = 0; i < rows; ++i) check.value(lse[i], ref_lse[i], 2e-5, 1.0, "lse", int64_t(i));

  if (c.bwd) {
    Tensor dout(c.B, c.Tq, c.H, c.D, c.dt, c.pad), dq(c.B, c.Tq, c.H, c.D, c.dt, c.pad);
    Tensor dk(c.B, c.Tk, c.Hkv, c.D, c.dt, c.pad), dv(c.B, c.Tk, c.Hkv, c.D, c.dt, c.pad);
    dout.fill(g, 1.f);
    std::vector<float> dlse(rows), ref_dlse(rows);
    for (auto& x : dlse) x = std::uniform_real_distribution<float>(-1.f, 1.f)(g);
    // The kernel's delta = <dout, out> - dlse uses its rounded out, the
    // reference's the exact one: the difference, folded into the reference's
    // dlse, makes both differentiate the same function.
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t h = 0; h < c.H; ++h)
        for (int64_t i = 0; i < c.Tq; ++i) {
          double diff = 0;
          const float* exact = &ref_out[size_t(((b * c.Tq + i) * c.H + h) * c.D)];
          for (int64_t d = 0; d < c.D; ++d)
            diff += double(dout.val[dout.at(b, i, h, d)]) * (exact[d] - out.get(out.at(b, i, h, d)));
          const size_t row = size_t((b * c.H + h) * c.Tq + i);
          ref_dlse[row] = float((c.dlse ? dlse[row] : 0.f) + diff);
        }
    std::vector<float> rdq(size_t(c.B * c.Tq * c.H * c.D)), rdk(size_t(c.B * c.Tk * c.Hkv * c.D)), rdv(rdk.size());
    keraslm::AttentionGradParams rg;  // (the reference recomputes P and lse itself)
    rg.fwd = rp;
    rg.dout = dout.val.data(), rg.dout_stride = dout.s, rg.dlse = ref_dlse.data();
    rg.dq = rdq.data(), rg.dq_stride = keraslm::dense_strides(c.Tq, c.H, c.D);
    rg.dk = rdk.data(), rg.dk_stride = keraslm::dense_strides(c.Tk, c.Hkv, c.D);
    rg.dv = rdv.data(), rg.dv_stride = rg.dk_stride;
    keraslm::attention_backward_reference(rg);
    keraslm::cuda::AttentionGradParams cg;
    cg.fwd = p, cg.dout = dout.dev.data, cg.dout_stride = dout.s, cg.dlse = c.dlse ? dlse.data() : nullptr;
    cg.dq = dq.dev.data, cg.dq_stride = dq.s, cg.dk = dk.dev.data, cg.dk_stride = dk.s, cg.dv = dv.dev.data;
    cg.dv_stride = dv.s;
    Buffer ws2(keraslm::cuda::attention_backward_workspace(cg));
    if (const char* err = keraslm::cuda::attention_backward(cg, ws2.data, nullptr)) return where = err, INFINITY;
    // dS = P (dp - delta) cancels where one key takes nearly all the weight,
    // and the float32 rounding of dp and delta then dominates dq and dk: their
    // error is measured against at least scale * max |dp| * max |k| (or |q|).
    double dp_max = 0;
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t h = 0; h < c.H; ++h)
        for (int64_t i = 0; i < c.Tq; ++i)
          for (int64_t j = 0; j < lens[size_t(b)]; ++j) {
            double dp = 0;
            for (int64_t d = 0; d < c.D; ++d)
              dp += double(dout.val[dout.at(b, i, h, d)]) * v.val[v.at(b, j, h / (c.H / c.Hkv), d)];
            dp_max = std::fmax(dp_max, std::fabs(dp));
          }
    check.tensor(dq, rdq, tol, "dq", rp.scale * dp_max * max_abs(k.val));
    check.tensor(dk, rdk, tol, "dk", rp.scale * dp_max * max_abs(q.val));
    check.tensor(dv, rdv, tol, "dv");
  }
  where = check.where;
  return check.padding_ok ? check.worst : INFINITY;
}

// NaN in, NaN out (the contract of attention.h, as in the reference): a
// NaN in one query row, and a NaN in one key that only some rows see
// (causal), make exactly the rows that see them NaN (out and lse), and the
// other rows match the reference; NaN past the key lengths never leaks.
// Returns the worst error / tolerance of the finite rows (inf on a NaN
// pattern mismatch or a failed launch).
double run_nan(const Case& c, uint64_t seed, std::string& where) {
  std::mt19937_64 g(seed);
  std::vector<int32_t> lens(size_t(c.B), int32_t(c.Tk));
  if (c.lens) lens[size_t(c.B) - 1] = int32_t(c.Tk / 2);
  Tensor q(c.B, c.Tq, c.H, c.D, c.dt, c.pad), out(c.B, c.Tq, c.H, c.D, c.dt, c.pad);
  Tensor k(c.B, c.Tk, c.Hkv, c.D, c.dt, c.pad), v(c.B, c.Tk, c.Hkv, c.D, c.dt, c.pad);
  q.fill(g, 2.f);
  k.fill(g, 2.f, c.lens ? &lens : nullptr);
  v.fill(g, 1.f, c.lens ? &lens : nullptr);
  q.set(q.at(0, c.Tq / 2, 0, c.D - 1), kNaN);
  k.set(k.at(c.B - 1, c.Tk / 3, 0, 0), kNaN);
  const size_t rows = size_t(c.B * c.H * c.Tq);
  std::vector<float> lse(rows, 0.f), ref_lse(rows), ref_out(size_t(c.B * c.Tq * c.H * c.D));

  keraslm::AttentionParams rp;
  rp.B = c.B, rp.Tq = c.Tq, rp.Tk = c.Tk, rp.H = c.H, rp.Hkv = c.Hkv, rp.D = c.D, rp.causal = c.causal;
  rp.scale = 1.f / std::sqrt(float(c.D));
  rp.key_lengths = c.lens ? lens.data() : nullptr;
  rp.q = q.val.data(), rp.q_stride = q.s, rp.k = k.val.data(), rp.k_stride = k.s;
  rp.v = v.val.data(), rp.v_stride = v.s;
  rp.out = ref_out.data(), rp.out_stride = keraslm::dense_strides(c.Tq, c.H, c.D), rp.lse = ref_lse.data();
  keraslm::attention_forward_reference(rp);

  keraslm::cuda::AttentionParams p;
  p.B = c.B, p.Tq = c.Tq, p.Tk = c.Tk, p.H = c.H, p.Hkv = c.Hkv, p.D = c.D, p.causal = c.causal, p.scale = rp.scale;
  p.dtype = c.dt, p.key_lengths = rp.key_lengths;
  p.q = q.dev.data, p.q_stride = q.s, p.k = k.dev.data, p.k_stride = k.s, p.v = v.dev.data, p.v_stride = v.s;
  p.out = out.dev.data, p.out_stride = out.s, p.lse = lse.data();
  Buffer ws(keraslm::cuda::attention_forward_workspace(p));
  if (const char* err = keraslm::cuda::attention_forward(p, ws.data, nullptr)) return where = err, INFINITY;
  int64_t nan_rows = 0;
  for (size_t i = 0; i < rows; ++i) nan_rows += std::isnan(ref_lse[i]);
  if (nan_rows == 0 || nan_rows == int64_t(rows)) return where = "the case has no NaN row, or only NaN rows", INFINITY;
  Check check;
  const double tol = tolerance(c.dt);
  std::vector<float> finite_ref(ref_out);
  int64_t k_out = 0;
  bool pattern = true;
  out.each([&](int64_t b, int64_t i, int64_t h, int64_t d, int64_t idx) {
    const bool ref_nan = std::isnan(ref_lse[size_t((b * c.H + h) * c.Tq + i)]);
    const float got = out.get(idx);
    if (ref_nan != std::isnan(got) || ref_nan != std::isnan(ref_out[size_t(k_out)])) {
      if (pattern) where = "out[" + std::to_string(b) + ", " + std::to_string(i) + ", " + std::to_string(h) + ", " +
                           std::to_string(d) + "]: NaN where the reference is not, or the reverse";
      pattern = false;
    }
    ++k_out;
  });
  if (!pattern) return INFINITY;
  for (size_t i = 0; i < rows; ++i) {
    if (std::isnan(ref_lse[i]) != std::isnan(lse[i])) return where = "lse[" + std::to_string(i) + "] NaN pattern", INFINITY;
    if (!std::isnan(ref_lse[i])) check.value(lse[i], ref_lse[i], 2e-5, 1.0, "lse", int64_t(i));
  }
  // Finite rows against the reference (NaN rows compared as 0 = 0).
  Tensor masked(c.B, c.Tq, c.H, c.D, c.dt, c.pad);
  k_out = 0;
  out.each([&](int64_t, int64_t, int64_t, int64_t, int64_t idx) {
    const float got = out.get(idx);
    masked.set(idx, std::isnan(got) ? 0.f : got);
    if (std::isnan(finite_ref[size_t(k_out)])) finite_ref[size_t(k_out)] = 0.f;
    ++k_out;
  });
  check.tensor(masked, finite_ref, tol, "out");
  if (!out.untouched_padding()) return where = "out: bytes outside the tensor written", INFINITY;
  where = check.where;
  return check.worst;
}

Case random_case(std::mt19937_64& g) {
  static const int64_t kHeadSizes[] = {1, 33, 64, 80, 128, 256};
  Case c;
  c.dt = DType(g() % 3);
  c.D = g() % 4 == 0 ? int64_t(1 + g() % 256) : kHeadSizes[g() % 6];
  c.B = int64_t(1 + g() % 3), c.Hkv = int64_t(1 + g() % 2), c.H = c.Hkv * int64_t(1 + g() % 4);
  const bool decode = g() % 3 == 0;
  c.Tq = decode ? int64_t(1 + g() % 16) : int64_t(17 + g() % 120);
  c.Tk = decode ? int64_t(129 + g() % 1500) : g() % 8 == 0 ? int64_t(g() % 17) : int64_t(1 + g() % 200);
  c.causal = g() % 4 != 0, c.lens = g() % 2 == 0;
  static const int kPads[] = {0, 0, 1, 8};
  c.pad = kPads[g() % 4];
  c.bwd = g() % (decode ? 4 : 2) == 0, c.dlse = g() % 2 == 0;
  // Bound the cost (about B * H * Tq * Tk * D multiply-adds, more for the backward).
  while (c.B * c.H * c.Tq * c.Tk * c.D * (c.bwd ? 4 : 1) > 20000000) {
    if (c.Tk > 64) c.Tk = c.Tk * 2 / 3;
    else if (c.Tq > 17) c.Tq = c.Tq * 2 / 3;
    else if (c.H > c.Hkv) c.H -= c.Hkv;
    else c.B = c.B > 1 ? c.B - 1 : 1, c.D = c.D > 1 ? c.D / 2 : 1;
  }
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  const int random_cases = argc > 1 ? std::atoi(argv[1]) : 20;
  const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
  cuda_emulation::set_schedule_seed(seed);
  const DType f32 = DType::kFloat32, bf16 = DType::kBFloat16, f16 = DType::kFloat16;
  std::vector<Case> cases = {
      // dtype, B, Tq, Tk, H, Hkv, D, causal, lens, pad, bwd, dlse
      {bf16, 2, 77, 77, 4, 2, 64, true, false, 0, true, false},     // tensor cores, GQA
      {f16, 2, 70, 40, 2, 1, 80, true, true, 0, true, true},        // tensor cores, Tq > Tk, empty rows
      {bf16, 1, 40, 90, 2, 2, 128, false, true, 1, true, true},     // unaligned rows: FMA kernel
      {f32, 3, 20, 17, 4, 2, 1, false, true, 0, true, true},        // D = 1, a zero key length
      {f16, 1, 33, 50, 2, 1, 256, true, false, 8, true, false},     // D = 256
      {f32, 2, 16, 700, 8, 1, 33, true, true, 0, true, true},       // decode, a GQA group of 128 rows
      {bf16, 2, 1, 1000, 4, 2, 128, true, true, 0, false, false},   // one-token decode, long Tk
      {f32, 1, 3, 0, 2, 1, 32, false, false, 0, true, true},        // Tk = 0
      {bf16, 1, 130, 20, 2, 1, 48, true, false, 0, false, false},   // several query tiles, Tq > Tk
  };
  std::mt19937_64 g(seed);
  for (int i = 0; i < random_cases; ++i) cases.push_back(random_case(g));
  int failures = 0;
  double worst = -1;
  std::string worst_where;
  for (size_t i = 0; i < cases.size(); ++i) {
    std::string where;
    const double r = run(cases[i], seed * 1000003 + i, where);
    const bool ok = r <= 1;
    failures += !ok;
    if (r > worst) worst = r, worst_where = "case " + std::to_string(i) + ": " + where;
    std::printf("%s case %2zu %-62s worst %.3f of tolerance%s%s\n", ok ? "ok  " : "FAIL", i, describe(cases[i]).c_str(),
                r, ok ? "" : ": ", ok ? "" : where.c_str());
    std::fflush(stdout);
  }
  // NaN propagation on every forward path: split-key decode (one row and
  // 1000 keys, and a GQA group), FMA prefill (float32; bfloat16 with
  // unaligned rows), tensor cores (bfloat16 / float16), Tq > Tk.
  const std::vector<Case> nan_cases = {
      // dtype, B, Tq, Tk, H, Hkv, D, causal, lens, pad, bwd, dlse
      {f32, 1, 1, 1000, 2, 2, 64, true, false, 0, false, false},
      {f16, 2, 4, 300, 4, 2, 32, true, true, 0, false, false},
      {f32, 2, 40, 70, 4, 2, 16, true, true, 0, false, false},
      {bf16, 1, 40, 90, 2, 2, 128, false, true, 1, false, false},
      {bf16, 1, 100, 100, 2, 1, 64, true, false, 0, false, false},
      {f16, 2, 70, 40, 2, 1, 80, true, true, 0, false, false},
  };
  int nan_failures = 0;
  for (size_t i = 0; i < nan_cases.size(); ++i) {
    std::string where;
    const double r = run_nan(nan_cases[i], seed * 7919 + i, where);
    const bool ok = r <= 1;
    nan_failures += !ok;
    std::printf("%s NaN case %zu %-58s worst %.3f of tolerance%s%s\n", ok ? "ok  " : "FAIL", i,
                describe(nan_cases[i]).c_str(), r, ok ? "" : ": ", ok ? "" : where.c_str());
  }
  cuda_emulation::print_launch_summary();
  std::printf("attention NaN propagation: %zu cases, %d failed\n", nan_cases.size(), nan_failures);
  std::printf("attention: %zu cases, %d failed, worst error %.3f of tolerance (%s)\n", cases.size(), failures, worst,
              worst_where.c_str());
  return failures || nan_failures ? 1 : 0;
}
