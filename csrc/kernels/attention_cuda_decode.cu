// Split-key decode forward (Tq <= kDecodeRows = 16), every dtype and D.
//
// A forward with few query rows has too few (b, h, query tile) blocks to fill
// the GPU, and its cost is reading K and V.  The FMA forward
// (attention_cuda_fma.cu) is therefore launched with the query rows of a
// whole GQA group (G * Tq rows per (b, kv head)) in each row tile, so K and V
// are read once per group, and with the visible keys of every row tile split
// evenly across `nsplit` blocks: split s covers
//   [s * chunk, min((s + 1) * chunk, kend)),  chunk = roundup(ceil(kend / nsplit), BK)
// where kend = min(key_lengths[b], causal end of the tile's last query) is
// read on the device, so the work follows the live key length, not Tk (splits
// past kend exit at once).  Each split writes, for each of its rows,
//   part_ml[row][s]  = (m, l): running max (log2 units) and sum of exp2(x - m)
//   part_acc[row][s] = sum_j exp2(x_j - m) v_j   (only when l > 0)
// and the combine kernel merges them:
//   M = max_s m_s,  L = sum_s l_s 2^(m_s - M),  out = sum_s 2^(m_s - M) acc_s / L,
//   lse = ln 2 * (M + log2 L); a row with L = 0 gets out = 0, lse = -inf, and
//   a split with l = NaN (a NaN score) makes L, out and lse NaN.
//
// Workspace (nsplit > 1 only; row = (b * H + h) * Tq + i):
//   float  part_acc[B*H*Tq][nsplit][D]   at offset 0
//   float2 part_ml [B*H*Tq][nsplit]      at offset roundup(bytes of part_acc, 256)
#include "kernels/attention_cuda_common.cuh"

namespace keraslm {
namespace cuda {
namespace attn {
namespace {

// About four resident blocks on each of 132 SMs.
constexpr int64_t kTargetBlocks = 528;
constexpr int64_t kMinSplitKeys = 128;  // a split gets at least this many of the Tk keys
constexpr int64_t kMaxSplits = 256;

struct DecodePlan {
  int rows_per_warp = 8;
  int64_t nsplit = 1;
  size_t acc_bytes = 0, total_bytes = 0;
};

DecodePlan plan(const AttentionParams& p) {
  DecodePlan d;
  const int64_t group_rows = p.H / p.Hkv * p.Tq;
  d.rows_per_warp = group_rows >= 32 ? 8 : 2;
  const int64_t row_tiles = ceil_div(group_rows, 4 * d.rows_per_warp);
  const int64_t blocks = p.B * p.Hkv * row_tiles;
  int64_t n = blocks > 0 ? ceil_div(kTargetBlocks, blocks) : 1;
  int64_t cap = ceil_div(p.Tk, kMinSplitKeys);
  cap = cap < kMaxSplits ? cap : kMaxSplits;
  n = n < cap ? n : cap;
  d.nsplit = n > 1 ? n : 1;
  if (d.nsplit > 1) {
    const int64_t rows = p.B * p.H * p.Tq;
    d.acc_bytes = static_cast<size_t>(ceil_div(rows * d.nsplit * p.D * 4, 256) * 256);
    d.total_bytes = d.acc_bytes + static_cast<size_t>(rows * d.nsplit) * sizeof(float2);
  }
  return d;
}

// One warp per row (b, h, i): merges the nsplit partials.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    combine_kernel(const AttentionParams p, const int nsplit, const float* part_acc, const float2* part_ml) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t row = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  if (row >= p.B * p.H * p.Tq) return;
  const int64_t i = row % p.Tq, h = (row / p.Tq) % p.H, b = row / (p.Tq * p.H);
  const float2* ml = part_ml + row * nsplit;
  const float* acc = part_acc + row * nsplit * p.D;

  float m = neg_inf();
  for (int s = lane; s < nsplit; s += 32) m = fmaxf(m, ml[s].x);
  m = warp_max(m);
  float l = 0.f;
  for (int s = lane; s < nsplit; s += 32) {
    const float2 v = ml[s];
    if (v.y != 0.f) l += v.y * exp2f(v.x - m);  // NaN partials (a NaN score) make l NaN
  }
  l = warp_sum(l);
  const float inv = l == 0.f ? 0.f : 1.f / l;

  T* o = static_cast<T*>(p.out) + b * p.out_stride.b + i * p.out_stride.t + h * p.out_stride.h;
  for (int d = lane; d < p.D; d += 32) {
    float a = 0.f;
    for (int s = 0; s < nsplit; ++s) {
      const float2 v = ml[s];
      if (v.y != 0.f) a += exp2f(v.x - m) * acc[int64_t(s) * p.D + d];  // empty splits wrote no acc
    }
    o[d] = from_float<T>(a * inv);
  }
  if (lane == 0) p.lse[row] = l == 0.f ? neg_inf() : (m + log2f(l)) * kLn2;
}

template <typename T>
const char* combine(const AttentionParams& p, int nsplit, const float* acc, const float2* ml, cudaStream_t stream) {
  const int64_t blocks = ceil_div(p.B * p.H * p.Tq, kThreads / 32);
  if (blocks > kMaxGridX) return kGridTooLarge;
  combine_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p, nsplit, acc, ml);
  return last_launch_error();
}

}  // namespace

size_t decode_workspace(const AttentionParams& p) { return plan(p).total_bytes; }

const char* decode_forward(const AttentionParams& p, void* workspace, cudaStream_t stream) {
  const DecodePlan d = plan(p);
  if (d.nsplit == 1) return fma_forward(p, d.rows_per_warp, 1, nullptr, nullptr, stream);
  float* acc = static_cast<float*>(workspace);
  float2* ml = reinterpret_cast<float2*>(static_cast<char*>(workspace) + d.acc_bytes);
  const int nsplit = static_cast<int>(d.nsplit);
  if (const char* err = fma_forward(p, d.rows_per_warp, nsplit, acc, ml, stream)) return err;
  switch (p.dtype) {
    case DType::kBFloat16: return combine<__nv_bfloat16>(p, nsplit, acc, ml, stream);
    case DType::kFloat16: return combine<__half>(p, nsplit, acc, ml, stream);
    default: return combine<float>(p, nsplit, acc, ml, stream);
  }
}

}  // namespace attn
}  // namespace cuda
}  // namespace keraslm
