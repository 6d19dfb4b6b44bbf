// AMX kernel of gemm_bf16 (gemm_bf16.h).  This file alone is compiled with
// the AMX and AVX512-BF16 instruction sets; it is only entered after
// amx_bf16_available() (gemm_bf16.cc) said the CPU and the OS allow it.
//
// Both operands are packed once per call, rounding to bfloat16 on the way,
// into whole 1 KiB tiles stored in the order the product reads them:
//   A -> Ap: tile (mb, ks, h) holds rows 32 mb + 16 h + [0, 16) of op(A),
//            columns 32 ks + [0, 32), as uint16 [16][32];
//   B -> Bp: tile (nb, ks, h) holds columns 32 nb + 16 h + [0, 16) of op(B),
//            rows 32 ks + [0, 32) as bfloat16 pairs, uint32 [16][16]
//            (pair q of column n = (op(B)[2q][n], op(B)[2q+1][n]));
// M, N and K rounded up to 32, zero-padded.  The product runs over 32 x 32
// blocks of C, each held in four 16 x 16 float32 tiles while k advances 32 at
// a time (two A tiles, two B tiles, four TDPBF16PS); a block's operands are
// two contiguous runs of memory, which the hardware prefetcher streams.
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/gemm_bf16.h"

namespace keraslm {
namespace amx {

namespace {

constexpr int64_t kBlock = 32;  // C block edge (2 x 2 tiles of 16)
constexpr int64_t kStepK = 32;  // bfloat16 values per tile row

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

void load_tile_config() {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int i = 0; i < 8; ++i) {
    cfg.rows[i] = 16;
    cfg.colsb[i] = 64;
  }
  _tile_loadconfig(&cfg);
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

constexpr int64_t kTileElems16 = 16 * 32;  // uint16 per A tile
constexpr int64_t kTileElems32 = 16 * 16;  // uint32 per B tile

// Offset of element (m, k) of op(A) in Ap; ksteps = Kp / 32.
inline int64_t a_offset(int64_t m, int64_t k, int64_t ksteps) {
  return ((m / kBlock * ksteps + k / kStepK) * 2 + (m % kBlock) / 16) * kTileElems16 + (m % 16) * kStepK + k % kStepK;
}

// Offset of pair q (rows 2q, 2q + 1) of column n of op(B) in Bp.
inline int64_t b_offset(int64_t q, int64_t n, int64_t ksteps) {
  return ((n / kBlock * ksteps + q / 16) * 2 + (n % kBlock) / 16) * kTileElems32 + (q % 16) * 16 + n % 16;
}

__mmask16 tail_mask(int64_t remaining) {
  if (remaining >= 16) return 0xFFFF;
  if (remaining <= 0) return 0;
  return static_cast<__mmask16>((1u << remaining) - 1u);
}

// 16 float32 (masked: missing lanes read as 0) -> 16 bfloat16 bit patterns.
__m256i to_bf16(const float* src, __mmask16 mask) {
  __m512 v = _mm512_maskz_loadu_ps(mask, src);
  return (__m256i)_mm512_cvtneps_pbh(v);
}

// Units of packing work: rows of Ap (A as stored) or 32-row pieces of A
// (A transposed); pairs of rows of op(B) (B as stored) or columns of op(B)
// (B transposed).
int64_t a_units(const GemmBf16Params& p, int64_t Mp, int64_t Kp) { return p.trans_a ? Kp / kStepK : Mp; }
int64_t b_units(const GemmBf16Params& p, int64_t Kp) { return p.trans_b ? p.N : Kp / 2; }

// Zero the padding that the unit loops below do not write.
void clear_padding(const GemmBf16Params& p, int64_t Mp, int64_t Np, int64_t Kp, uint16_t* ap, uint32_t* bp) {
  if (p.trans_a && Mp > p.M) std::memset(ap, 0, Mp * Kp * sizeof(uint16_t));
  if (p.trans_b && Np > p.N) std::memset(bp, 0, (Kp / 2) * Np * sizeof(uint32_t));
}

// 16 bfloat16 pairs (row k, row k + 1) of a row-major float32 matrix with
// row stride ld, starting at column src; rows >= rows read as zeros.
__m512i pair_rows(const float* src, int64_t ld, int64_t k, int64_t rows, __mmask16 mask) {
  const __m256i lo = k < rows ? to_bf16(src + k * ld, mask) : _mm256_setzero_si256();
  const __m256i hi = k + 1 < rows ? to_bf16(src + (k + 1) * ld, mask) : _mm256_setzero_si256();
  return _mm512_or_si512(_mm512_cvtepu16_epi32(lo), _mm512_slli_epi32(_mm512_cvtepu16_epi32(hi), 16));
}

// In-register transpose of a 16 x 16 matrix of 32-bit values, r[i] = row i.
void transpose_16x16_epi32(__m512i r[16]) {
  __m512i a[16], b[16];
  for (int i = 0; i < 16; i += 2) {  // 32-bit interleave within 128-bit lanes
    a[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    a[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int g = 0; g < 16; g += 4) {  // 64-bit interleave: b[g + j] lane L = rows g..g+3, column 4L + j
    b[g + 0] = _mm512_unpacklo_epi64(a[g], a[g + 2]);
    b[g + 1] = _mm512_unpackhi_epi64(a[g], a[g + 2]);
    b[g + 2] = _mm512_unpacklo_epi64(a[g + 1], a[g + 3]);
    b[g + 3] = _mm512_unpackhi_epi64(a[g + 1], a[g + 3]);
  }
  for (int j = 0; j < 4; ++j) {  // 4 x 4 transpose of 128-bit lanes
    const __m512i c0 = _mm512_shuffle_i32x4(b[j], b[4 + j], 0x44);
    const __m512i c1 = _mm512_shuffle_i32x4(b[j], b[4 + j], 0xEE);
    const __m512i c2 = _mm512_shuffle_i32x4(b[8 + j], b[12 + j], 0x44);
    const __m512i c3 = _mm512_shuffle_i32x4(b[8 + j], b[12 + j], 0xEE);
    r[0 + j] = _mm512_shuffle_i32x4(c0, c2, 0x88);
    r[4 + j] = _mm512_shuffle_i32x4(c0, c2, 0xDD);
    r[8 + j] = _mm512_shuffle_i32x4(c1, c3, 0x88);
    r[12 + j] = _mm512_shuffle_i32x4(c1, c3, 0xDD);
  }
}

// op(A) [M, K] -> Ap, units [u0, u1).
void pack_a(const GemmBf16Params& p, int64_t Kp, uint16_t* ap, int64_t u0, int64_t u1) {
  const int64_t ksteps = Kp / kStepK;
  if (!p.trans_a) {
    for (int64_t m = u0; m < u1; ++m) {
      const float* row = p.a + m * p.lda;
      for (int64_t k = 0; k < Kp; k += 16) {
        uint16_t* dst = ap + a_offset(m, k, ksteps);
        if (m < p.M)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), to_bf16(row + k, tail_mask(p.K - k)));
        else
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_setzero_si256());
      }
    }
    return;
  }
  // A stored [K, M]: rows k and k + 1 of storage give the bfloat16 pairs
  // (A[k][m], A[k+1][m]) for 16 m at once (as in pack_b); a 16 x 16
  // transpose of those pairs gives 16 rows of an A tile (32 k each).
  __m512i r[16];
  for (int64_t k0 = u0 * kStepK; k0 < u1 * kStepK; k0 += kStepK) {
    for (int64_t m0 = 0; m0 < p.M; m0 += 16) {
      const __mmask16 mask = tail_mask(p.M - m0);
      for (int q = 0; q < 16; ++q) r[q] = pair_rows(p.a + m0, p.lda, k0 + 2 * q, p.K, mask);
      transpose_16x16_epi32(r);
      const int64_t mn = std::min<int64_t>(16, p.M - m0);
      for (int64_t j = 0; j < mn; ++j) _mm512_store_si512(ap + a_offset(m0 + j, k0, ksteps), r[j]);
    }
  }
}

// op(B) [K, N] -> Bp, units [u0, u1).
void pack_b(const GemmBf16Params& p, int64_t Np, int64_t Kp, uint32_t* bp, int64_t u0, int64_t u1) {
  const int64_t ksteps = Kp / kStepK;
  if (!p.trans_b) {
    for (int64_t q = u0; q < u1; ++q) {
      const int64_t k0 = 2 * q, k1 = 2 * q + 1;
      for (int64_t n = 0; n < Np; n += 16) {
        uint32_t* dst = bp + b_offset(q, n, ksteps);
        const __mmask16 mask = tail_mask(p.N - n);
        _mm512_store_si512(dst, pair_rows(p.b + n, p.ldb, k0, p.K, mask));
      }
    }
    return;
  }
  // B stored [N, K]: row n of storage is column n of op(B); its consecutive
  // bfloat16 pairs are exactly the pairs Bp wants, one per tile row.
  alignas(64) uint16_t row16[kStepK];
  for (int64_t n = u0; n < u1; ++n) {
    const float* src = p.b + n * p.ldb;
    for (int64_t k0 = 0; k0 < Kp; k0 += kStepK) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(row16), to_bf16(src + k0, tail_mask(p.K - k0)));
      _mm256_store_si256(reinterpret_cast<__m256i*>(row16 + 16), to_bf16(src + k0 + 16, tail_mask(p.K - k0 - 16)));
      const uint32_t* pairs = reinterpret_cast<const uint32_t*>(row16);
      uint32_t* dst = bp + b_offset(k0 / 2, n, ksteps);
      for (int64_t q = 0; q < kStepK / 2; ++q) dst[q * 16] = pairs[q];
    }
  }
}

// Grow-only, 64-byte aligned scratch: a tile row that straddles two cache
// lines costs two accesses, which made unaligned packs several times slower.
struct Scratch {
  void* data = nullptr;
  size_t bytes = 0;
  ~Scratch() { std::free(data); }
  template <typename T>
  T* get(size_t count) {
    const size_t need = (count * sizeof(T) + 63) / 64 * 64;
    if (need > bytes) {
      std::free(data);
      data = std::aligned_alloc(64, need);
      if (!data) throw std::bad_alloc();
      bytes = need;
    }
    return static_cast<T*>(data);
  }
};

struct Workspace {
  Scratch a, b;
};

Workspace& workspace() {
  thread_local Workspace ws;
  return ws;
}

}  // namespace

void gemm_bf16(const GemmBf16Params& p, const Parallel& par) {
  if (p.M <= 0 || p.N <= 0) return;
  if (p.K <= 0) {
    for (int64_t m = 0; m < p.M; ++m) std::fill(p.c + m * p.ldc, p.c + m * p.ldc + p.N, 0.0f);
    return;
  }
  const int64_t Mp = round_up(p.M, kBlock), Np = round_up(p.N, kBlock), Kp = round_up(p.K, kStepK);
  Workspace& ws = workspace();
  uint16_t* ap = ws.a.get<uint16_t>(Mp * Kp);
  uint32_t* bp = ws.b.get<uint32_t>(Kp / 2 * Np);
  // Below ~8M multiply-adds, handing work to another thread costs more than it saves.
  const Parallel serial = Parallel::serial();
  const Parallel& run = Mp * Np * Kp < (int64_t{8} << 20) ? serial : par;
  clear_padding(p, Mp, Np, Kp, ap, bp);
  const int64_t na = a_units(p, Mp, Kp), nb = b_units(p, Kp);
  run(na + nb, /*cost_per_unit=*/16 * Kp, [&](int64_t begin, int64_t end) {
    if (begin < na) pack_a(p, Kp, ap, begin, std::min(end, na));
    if (end > na) pack_b(p, Np, Kp, bp, std::max(begin, na) - na, end - na);
  });

  const int64_t mblocks = Mp / kBlock, nblocks = Np / kBlock, ksteps = Kp / kStepK;
  constexpr int64_t kRowBytes = 64;
  run(mblocks * nblocks, /*cost_per_unit=*/kBlock * kBlock * Kp, [&](int64_t begin, int64_t end) {
    load_tile_config();
    alignas(64) float edge[kBlock][kBlock];
    for (int64_t u = begin; u < end; ++u) {
      const int64_t m0 = (u / nblocks) * kBlock, n0 = (u % nblocks) * kBlock;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      const uint16_t* at = ap + (m0 / kBlock) * ksteps * 2 * kTileElems16;
      const uint32_t* bt = bp + (n0 / kBlock) * ksteps * 2 * kTileElems32;
      for (int64_t ks = 0; ks < ksteps; ++ks, at += 2 * kTileElems16, bt += 2 * kTileElems32) {
        _tile_loadd(4, at, kRowBytes);
        _tile_loadd(5, at + kTileElems16, kRowBytes);
        _tile_loadd(6, bt, kRowBytes);
        _tile_loadd(7, bt + kTileElems32, kRowBytes);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      if (m0 + kBlock <= p.M && n0 + kBlock <= p.N) {
        float* c = p.c + m0 * p.ldc + n0;
        const int64_t c_stride = p.ldc * sizeof(float);
        _tile_stored(0, c, c_stride);
        _tile_stored(1, c + 16, c_stride);
        _tile_stored(2, c + 16 * p.ldc, c_stride);
        _tile_stored(3, c + 16 * p.ldc + 16, c_stride);
      } else {
        const int64_t e_stride = kBlock * sizeof(float);
        _tile_stored(0, &edge[0][0], e_stride);
        _tile_stored(1, &edge[0][16], e_stride);
        _tile_stored(2, &edge[16][0], e_stride);
        _tile_stored(3, &edge[16][16], e_stride);
        const int64_t rows = std::min(kBlock, p.M - m0), cols = std::min(kBlock, p.N - n0);
        for (int64_t i = 0; i < rows; ++i) std::memcpy(p.c + (m0 + i) * p.ldc + n0, edge[i], cols * sizeof(float));
      }
    }
    _tile_release();
  });
}

}  // namespace amx
}  // namespace keraslm
