// Device-side building blocks shared by every MoBA kernel: the two 16-bit element types, the
// tensor-core MMA, ldmatrix, cp.async and the swizzled shared-memory tile layout.
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace moba {

constexpr float kNegInf = -__builtin_huge_valf();
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---------------------------------------------------------------------------------------------
// Element types. Tensors cross the ABI as raw 16-bit patterns; these traits give them meaning.
// kSplitExponent: the gate's chunk means are scaled by a power of two so that their largest
// component lies in [2^E, 2^(E+1)) before being split into three 16-bit planes. fp16 needs the
// large scale to keep the low plane out of the subnormal range; bf16 has fp32's exponent range.
// ---------------------------------------------------------------------------------------------
struct Fp16 {
    static constexpr int kSplitExponent = 14;
    __device__ __forceinline__ static float to_float(uint16_t bits) { return __half2float(__ushort_as_half(bits)); }
    __device__ __forceinline__ static uint16_t from_float(float x) { return __half_as_ushort(__float2half_rn(x)); }
    // Two floats rounded to nearest-even and packed; `lo` lands in the low half (lower column).
    __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
        __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t*>(&h);
    }
    // d += a * b on the tensor cores, m16n8k16, fp32 accumulation.
    __device__ __forceinline__ static void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

struct Bf16 {
    static constexpr int kSplitExponent = 0;
    __device__ __forceinline__ static float to_float(uint16_t bits) { return __bfloat162float(__ushort_as_bfloat16(bits)); }
    __device__ __forceinline__ static uint16_t from_float(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }
    __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
        __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t*>(&h);
    }
    __device__ __forceinline__ static void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

// ---------------------------------------------------------------------------------------------
// Shared-memory tiles of `rows` x HD 16-bit elements. Each row is HD/8 16-byte vectors; vector v of
// row r is stored at position v ^ (r & 7), so that the 8 rows read by one ldmatrix phase hit 8
// different bank groups (no conflicts) for both HD = 64 and HD = 128.
// ---------------------------------------------------------------------------------------------
template <int HD>
__device__ __forceinline__ uint32_t swizzled_offset(int row, int col) {
    return static_cast<uint32_t>(row * HD * 2 + (((col >> 3) ^ (row & 7)) << 4) + ((col & 7) << 1));
}

__device__ __forceinline__ uint32_t smem_address(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte asynchronous global->shared copy; when !valid the destination is zero-filled and
// nothing is read.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
// 4-byte variant (indices, per-row statistics); zero-filled when !valid.
__device__ __forceinline__ void cp_async_4(uint32_t dst, const void* src, bool valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Copies `ROWS` rows of HD elements (row r at src + r * row_stride) into a swizzled tile; rows at or
// past valid_rows are zero-filled. All THREADS threads of the block take part.
template <int ROWS, int HD, int THREADS>
__device__ __forceinline__ void load_tile_async(uint32_t tile, const uint16_t* src, long row_stride, int valid_rows) {
    constexpr int kVectors = HD / 8;
    for (int i = threadIdx.x; i < ROWS * kVectors; i += THREADS) {
        const int r = i / kVectors, v = i % kVectors;
        const bool valid = r < valid_rows;
        const uint16_t* from = valid ? src + r * row_stride + v * 8 : src;
        cp_async_16(tile + swizzled_offset<HD>(r, v * 8), from, valid);
    }
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// A operand (16 rows x 16 k) of m16n8k16 from a row-major tile: rows row0.., columns k0...
template <int HD>
__device__ __forceinline__ void load_a_fragment(uint32_t (&a)[4], uint32_t tile, int row0, int k0) {
    const int lane = threadIdx.x & 31;
    ldmatrix_x4(a, tile + swizzled_offset<HD>(row0 + (lane & 15), k0 + (lane >> 4) * 8));
}

// B operands of two n8 tiles (n0..n0+15) x k16 from a tile stored [n][k] (keys or chunk means as
// rows): b[0], b[1] for n0..n0+7, b[2], b[3] for n0+8..n0+15.
template <int HD>
__device__ __forceinline__ void load_b_fragments_nk(uint32_t (&b)[4], uint32_t tile, int n0, int k0) {
    const int lane = threadIdx.x & 31;
    ldmatrix_x4(b, tile + swizzled_offset<HD>(n0 + (lane & 7) + ((lane >> 4) << 3), k0 + ((lane >> 3) & 1) * 8));
}

// B operands of two n8 tiles (columns n0..n0+15) x k16 (rows k0..k0+15) from a tile stored [k][n]
// (values: key rows, head-dim columns), transposed on the fly.
template <int HD>
__device__ __forceinline__ void load_b_fragments_kn(uint32_t (&b)[4], uint32_t tile, int k0, int n0) {
    const int lane = threadIdx.x & 31;
    ldmatrix_x4_trans(b, tile + swizzled_offset<HD>(k0 + (lane & 7) + ((lane >> 3) & 1) * 8, n0 + (lane >> 4) * 8));
}

// The segment holding x for non-decreasing offsets[0..n] with offsets[0] <= x < offsets[n]: the
// largest i < n with offsets[i] <= x (empty segments are skipped). Finds the sequence of a token
// (cu_seqlens), of a full chunk (chunk_base), the bucket of a gathered tile.
__device__ __forceinline__ int segment_of(const int* offsets, int n, int x) {
    int lo = 0, hi = n;  // invariant: offsets[lo] <= x < offsets[hi]
    while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (offsets[mid] <= x) lo = mid; else hi = mid;
    }
    return lo;
}

// segment_of searched by the 32 lanes of a warp together: each step probes 32 evenly spaced offsets and keeps
// the span between the last probe at or below x and the next, so n = 16K segments take three dependent loads
// instead of fourteen. Every lane of the warp calls it and gets the result.
__device__ __forceinline__ int segment_of_warp(const int* offsets, int n, int x) {
    const int lane = threadIdx.x & 31;
    int lo = 0, hi = n;  // invariant: offsets[lo] <= x < offsets[hi]
    while (hi - lo > 1) {
        const int step = (hi - lo + 31) / 32;
        const int probe = lo + (lane + 1) * step;
        const bool at_or_below = probe < hi && offsets[probe] <= x;
        const int below = __popc(__ballot_sync(0xffffffffu, at_or_below));  // probes are ascending: a prefix
        hi = min(hi, lo + (below + 1) * step);
        lo += below * step;
    }
    return lo;
}

__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

}  // namespace moba
