// Gathered ("key-stationary") MoBA attention over selected chunks. One block = one group of up to
// rows_per_group rows that selected the same (head, chunk) bucket (moba_route.cuh), processed as
// dense 64-row tiles against that chunk's C keys; no masking (a selected chunk lies wholly in the
// row's past). Each row's result over that chunk is written as a partial (o normalised, in the
// input dtype, and its lse) at its (token, head, slot) entry; moba_attn_own_combine adds the own
// chunk and merges.
//
// Pipeline: a flat sequence of (tile, key block) steps, the next step's gathered query tile and
// key block prefetched with cp.async while the current one computes. When the chunk fits the two
// K/V stages (C <= 128) it stays resident for the whole group and only query tiles stream.
#pragma once

#include "moba_flash.cuh"
#include "moba_route.cuh"

namespace moba {

template <int HD>
struct SelectedConfig {
    using Flash = FlashConfig<HD>;
    static constexpr int kQStages = 2;
    static constexpr int kSmemBytes = kQStages * Flash::kQBytes + Flash::kStages * 2 * Flash::kKVBytes;
};

template <class DT, int HD>
__device__ __forceinline__ void attn_selected(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                                              const uint16_t* __restrict__ v, const int* __restrict__ cu_seqlens,
                                              const int* __restrict__ chunk_base, int num_sequences,
                                              const int* __restrict__ bucket_row0, const int* __restrict__ bucket_group0,
                                              const int* __restrict__ rows_of_buckets, int rows_per_group,
                                              uint16_t* __restrict__ partial_o, float* __restrict__ partial_lse,
                                              int heads, int kv_heads, int width, int chunk_size, int num_full_chunks,
                                              float scale) {
    using Cfg = FlashConfig<HD>;
    using Rows = FlashRows<DT, HD>;
    extern __shared__ __align__(128) unsigned char smem[];

    const BucketGroup grp = BucketGroup::of_block(bucket_row0, bucket_group0, chunk_base, cu_seqlens, num_sequences,
                                                  heads, kv_heads, num_full_chunks, chunk_size, rows_per_group);
    if (!grp.valid) return;
    const int h = grp.h, hk = grp.hk, group_rows = grp.rows;
    const long key0 = grp.key0;
    const int* entries = rows_of_buckets + grp.first;  // entry e = (t * H + h) * W + slot
    const unsigned entries_per_token = static_cast<unsigned>(heads) * width;  // entries are ints: 32-bit division
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long kv_stride = static_cast<long>(kv_heads) * HD;
    const uint16_t* k_chunk = k + (key0 * kv_heads + hk) * HD;
    const uint16_t* v_chunk = v + (key0 * kv_heads + hk) * HD;

    const uint32_t q_tiles = smem_address(smem);  // stage s at q_tiles + s * kQBytes
    const uint32_t kv_tiles = q_tiles + SelectedConfig<HD>::kQStages * Cfg::kQBytes;
    // A query tile's gather needs its rows' entries first (global loads). They are fetched one tile ahead into
    // registers, so that issuing a tile's cp.asyncs never waits on them (it used to stall every warp once per tile).
    constexpr int kVectors = HD / 8;
    constexpr int kGatherLoads = Cfg::kBlockM * kVectors / Cfg::kThreads;  // 16-byte copies per thread per tile
    static_assert(Cfg::kBlockM * kVectors % Cfg::kThreads == 0, "a tile's copies divide among the threads");
    int ahead[kGatherLoads];  // the entry of each of this thread's copies in the next tile to gather; -1: none
    auto fetch_entries = [&](int tile) {
#pragma unroll
        for (int c = 0; c < kGatherLoads; ++c) {
            const int r = (threadIdx.x + c * Cfg::kThreads) / kVectors, row = tile * Cfg::kBlockM + r;
            ahead[c] = row < group_rows ? entries[row] : -1;
        }
    };
    auto load_query_tile = [&](int stage) {  // the tile whose entries are in `ahead`
#pragma unroll
        for (int c = 0; c < kGatherLoads; ++c) {
            const int i = threadIdx.x + c * Cfg::kThreads, r = i / kVectors, vec = i % kVectors;
            const bool valid = ahead[c] >= 0;
            const long token = valid ? static_cast<unsigned>(ahead[c]) / entries_per_token : 0;
            cp_async_16(q_tiles + stage * Cfg::kQBytes + swizzled_offset<HD>(r, vec * 8),
                        q + (token * heads + h) * HD + vec * 8, valid);
        }
    };
    auto load_key_block = [&](int block, int stage) {
        const uint32_t kt = kv_tiles + stage * 2 * Cfg::kKVBytes;
        const long offset = block * Cfg::kBlockN * kv_stride;
        load_tile_async<Cfg::kBlockN, HD, Cfg::kThreads>(kt, k_chunk + offset, kv_stride, Cfg::kBlockN);
        load_tile_async<Cfg::kBlockN, HD, Cfg::kThreads>(kt + Cfg::kKVBytes, v_chunk + offset, kv_stride, Cfg::kBlockN);
    };

    const int blocks = chunk_size / Cfg::kBlockN;
    const bool resident = blocks <= Cfg::kStages;
    const int steps = (group_rows + Cfg::kBlockM - 1) / Cfg::kBlockM * blocks;
    fetch_entries(0);
    load_query_tile(0);
    load_key_block(0, 0);
    cp_async_commit();
    fetch_entries(1);

    Rows rows;
    uint32_t qf[HD / 16][4];
    int entry[2];  // this thread's two rows' entries in the current tile (-1: past the group)
    const float scale_log2 = scale * kLog2e;
    const int all_keys[2] = {Cfg::kBlockN, Cfg::kBlockN};
    for (int step = 0; step < steps; ++step) {
        const int tile = step / blocks, block = step % blocks;
        const int next = step + 1, next_tile = next / blocks, next_block = next % blocks;
        if (next < steps) {
            if (next_block == 0) {
                load_query_tile(next_tile & 1);
                fetch_entries(next_tile + 1);
            }
            if (!resident || next_tile == 0) load_key_block(next_block, resident ? next_block : next & 1);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        if (block == 0) {
#pragma unroll
            for (int ks = 0; ks < HD / 16; ++ks)
                load_a_fragment<HD>(qf[ks], q_tiles + (tile & 1) * Cfg::kQBytes, warp * 16, ks * 16);
            // This thread's rows' entries, read now and used by the tile's epilogue.
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int row = tile * Cfg::kBlockM + warp * 16 + (lane >> 2) + 8 * i;
                entry[i] = row < group_rows ? entries[row] : -1;
            }
        }
        const uint32_t k_tile = kv_tiles + (resident ? block : step & 1) * 2 * Cfg::kKVBytes;
        rows.attend(qf, k_tile, k_tile + Cfg::kKVBytes, scale_log2, false, all_keys);

        if (block == blocks - 1) {  // tile done: write its partials, start the next tile afresh
            write_partial_rows<DT, HD>(rows, entry, partial_o, partial_lse);
            rows = Rows();
        }
        __syncthreads();
    }
}

}  // namespace moba
