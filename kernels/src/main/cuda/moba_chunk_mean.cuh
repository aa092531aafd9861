// Chunk key means: mu[g, hk, :] = (1/C) * sum of the C keys of full chunk g (global full-chunk
// index), accumulated and kept in fp32. The same kernel also prepares the gate's tensor-core
// operand: mu scaled by a power of two and split exactly into three 16-bit planes hi + mid + lo.
#pragma once

#include "moba_device.cuh"

namespace moba {

struct ChunkMeanConfig {
    static constexpr int kThreads = 256;
    static constexpr int kMaxHeadDim = 2 * kThreads;
};

template <class DT>
__device__ __forceinline__ void chunk_mean(const uint16_t* __restrict__ k, const int* __restrict__ cu_seqlens,
                                           const int* __restrict__ chunk_base, int num_sequences, int kv_heads,
                                           int head_dim, int chunk_size, float* __restrict__ mu,
                                           uint16_t* __restrict__ mu_planes, float* __restrict__ mu_unscale) {
    // Thread layout: head_dim/2 lanes each own two adjacent components (one 32-bit load per key);
    // kGroups groups of lanes stride over the chunk's keys, then are summed in a fixed order so
    // the result is deterministic.
    __shared__ float2 partial[ChunkMeanConfig::kThreads];
    __shared__ float max_abs[ChunkMeanConfig::kThreads / 32];

    const int g = blockIdx.x, hk = blockIdx.y, num_full_chunks = gridDim.x;
    const int b = segment_of(chunk_base, num_sequences, g);
    const long token0 = cu_seqlens[b] + static_cast<long>(g - chunk_base[b]) * chunk_size;

    const int lanes = head_dim / 2, groups = ChunkMeanConfig::kThreads / lanes;
    const int lane = threadIdx.x % lanes, group = threadIdx.x / lanes;
    float2 sum = make_float2(0.f, 0.f);
    if (group < groups) {
        const uint16_t* row = k + (token0 * kv_heads + hk) * head_dim + 2 * lane;
        const long stride = static_cast<long>(kv_heads) * head_dim;
        for (int t = group; t < chunk_size; t += groups) {
            const uint32_t pair = *reinterpret_cast<const uint32_t*>(row + t * stride);
            sum.x += DT::to_float(static_cast<uint16_t>(pair & 0xffffu));
            sum.y += DT::to_float(static_cast<uint16_t>(pair >> 16));
        }
    }
    partial[threadIdx.x] = sum;
    __syncthreads();

    const int d = threadIdx.x;
    float mean = 0.f;
    if (d < head_dim) {
        float total = 0.f;
        for (int grp = 0; grp < groups; ++grp) {
            const float2 p = partial[grp * lanes + d / 2];
            total += (d & 1) ? p.y : p.x;
        }
        mean = total / static_cast<float>(chunk_size);
        mu[(static_cast<long>(g) * kv_heads + hk) * head_dim + d] = mean;
    }

    // Largest |component| of this mean vector (block reduction).
    float m = fabsf(mean);
    for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    if ((threadIdx.x & 31) == 0) max_abs[threadIdx.x >> 5] = m;
    __syncthreads();
    m = 0.f;
    for (int w = 0; w < ChunkMeanConfig::kThreads / 32; ++w) m = fmaxf(m, max_abs[w]);

    // Power-of-two scale putting the largest component in [2^E, 2^(E+1)); scaling by it is exact.
    int exponent = 0;
    if (m > 0.f) frexpf(m, &exponent);  // m = f * 2^exponent, f in [0.5, 1)
    const int shift = (m > 0.f) ? DT::kSplitExponent + 1 - exponent : 0;
    if (d == 0) mu_unscale[static_cast<long>(g) * kv_heads + hk] = ldexpf(1.f, -shift);

    // Exact three-way split: each residual is exactly representable in fp32 and each plane takes the
    // next 8 (bf16) or 11 (fp16) significant bits, so hi + mid + lo == scaled mean.
    if (d < head_dim) {
        const float x = ldexpf(mean, shift);
        const uint16_t hi = DT::from_float(x);
        const float r1 = x - DT::to_float(hi);
        const uint16_t mid = DT::from_float(r1);
        const float r2 = r1 - DT::to_float(mid);
        const uint16_t lo = DT::from_float(r2);
        const long plane = static_cast<long>(num_full_chunks) * kv_heads * head_dim;
        const long at = (static_cast<long>(g) * kv_heads + hk) * head_dim + d;
        mu_planes[at] = hi;
        mu_planes[plane + at] = mid;
        mu_planes[2 * plane + at] = lo;
    }
}

}  // namespace moba
