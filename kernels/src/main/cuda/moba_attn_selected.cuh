// Gathered ("key-stationary") MoBA attention over selected chunks: one block = up to 64 rows that
// selected the same (head, chunk) bucket (moba_route.cuh), as one dense tile against that chunk's
// C keys; no masking (a selected chunk lies wholly in the row's past). Each row's result over
// that chunk is written as a partial (o normalised, in the input dtype, and its lse) at its
// (token, head, slot) entry; moba_attn_own_combine adds the own chunk and merges.
#pragma once

#include "moba_flash.cuh"
#include "moba_route.cuh"

namespace moba {

template <class DT, int HD>
__device__ __forceinline__ void attn_selected(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                                              const uint16_t* __restrict__ v, const int* __restrict__ cu_seqlens,
                                              const int* __restrict__ chunk_base, int num_sequences,
                                              const int* __restrict__ bucket_row0, const int* __restrict__ bucket_tile0,
                                              const int* __restrict__ rows_of_buckets, uint16_t* __restrict__ partial_o,
                                              float* __restrict__ partial_lse, int heads, int kv_heads, int width,
                                              int chunk_size, int num_full_chunks, float scale) {
    using Cfg = FlashConfig<HD>;
    using Rows = FlashRows<DT, HD>;
    extern __shared__ __align__(128) unsigned char smem[];

    const int buckets = heads * num_full_chunks;
    if (static_cast<int>(blockIdx.x) >= bucket_tile0[buckets]) return;  // the grid is an upper bound
    const int bucket = segment_of(bucket_tile0, buckets, blockIdx.x);
    const int h = bucket / num_full_chunks, g = bucket % num_full_chunks, hk = h / (heads / kv_heads);
    const int b = segment_of(chunk_base, num_sequences, g);
    const long key0 = cu_seqlens[b] + static_cast<long>(g - chunk_base[b]) * chunk_size;
    const int first = bucket_row0[bucket] + (blockIdx.x - bucket_tile0[bucket]) * Cfg::kBlockM;
    const int count = min(Cfg::kBlockM, bucket_row0[bucket + 1] - first);
    const int* entries = rows_of_buckets + first;  // entry e = (t * H + h) * W + slot
    const long entries_per_token = static_cast<long>(heads) * width;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long kv_stride = static_cast<long>(kv_heads) * HD;
    const uint16_t* k_chunk = k + (key0 * kv_heads + hk) * HD;
    const uint16_t* v_chunk = v + (key0 * kv_heads + hk) * HD;

    const uint32_t q_tile = smem_address(smem);
    const uint32_t kv_tiles = q_tile + Cfg::kQBytes;
    auto load_key_block = [&](int block, int stage) {
        const uint32_t kt = kv_tiles + stage * 2 * Cfg::kKVBytes;
        const long offset = block * Cfg::kBlockN * kv_stride;
        load_tile_async<Cfg::kBlockN, HD, Cfg::kThreads>(kt, k_chunk + offset, kv_stride, Cfg::kBlockN);
        load_tile_async<Cfg::kBlockN, HD, Cfg::kThreads>(kt + Cfg::kKVBytes, v_chunk + offset, kv_stride, Cfg::kBlockN);
    };

    // Gather the tile's query rows.
    constexpr int kVectors = HD / 8;
    for (int i = threadIdx.x; i < Cfg::kBlockM * kVectors; i += Cfg::kThreads) {
        const int r = i / kVectors, vec = i % kVectors;
        const bool valid = r < count;
        const long token = valid ? entries[r] / entries_per_token : 0;
        cp_async_16(q_tile + swizzled_offset<HD>(r, vec * 8), q + (token * heads + h) * HD + vec * 8, valid);
    }
    load_key_block(0, 0);
    cp_async_commit();

    Rows rows;
    uint32_t qf[HD / 16][4];
    const float scale_log2 = scale * kLog2e;
    const int blocks = chunk_size / Cfg::kBlockN;
    const int all_keys[2] = {Cfg::kBlockN, Cfg::kBlockN};
    for (int block = 0; block < blocks; ++block) {
        if (block + 1 < blocks) load_key_block(block + 1, (block + 1) & 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        if (block == 0) {
#pragma unroll
            for (int ks = 0; ks < HD / 16; ++ks) load_a_fragment<HD>(qf[ks], q_tile, warp * 16, ks * 16);
        }
        const uint32_t k_tile = kv_tiles + (block & 1) * 2 * Cfg::kKVBytes;
        rows.attend(qf, k_tile, k_tile + Cfg::kKVBytes, scale_log2, false, all_keys);
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const float l = rows.denominator(i);
        const int r = warp * 16 + (lane >> 2) + 8 * i;
        if (r >= count) continue;
        const long e = entries[r];
        const float inv = 1.f / l;
        uint16_t* o_row = partial_o + e * HD;
#pragma unroll
        for (int dt = 0; dt < Rows::kDT; ++dt)
            *reinterpret_cast<uint32_t*>(o_row + Rows::column(dt)) =
                DT::pack(rows.acc_o[dt][2 * i] * inv, rows.acc_o[dt][2 * i + 1] * inv);
        if ((lane & 3) == 0) partial_lse[e] = rows.lse(i, l);
    }
}

}  // namespace moba
