// The sm_90a backward (ABI.md, "Hopper backward"), two kernels on the forward's engine (moba_attn_fwd_hopper.cuh):
//
// bwd_fused_hopper: dK, dV and the selected rows' dQ partials of one 128-key block in one pass, where the mma.sync
// backward needs two (dkdv, and dq_selected, which recomputes S and dP).
// One block = one 128-key block x one kv head, warp-specialized:
// - the block's K and V stay in shared memory for the whole pass;
// - warpgroup 0 (producer) streams 64-row query tiles through three stages: Q, dO (sw128 tiles) and each row's lse
//   and delta, in KeyTileWork's order (per head of the kv head's group: the own chunk's causal rows from the
//   block's first key on, then the rows of the (head, chunk) bucket, ascending; moba_attn_bwd.cuh);
// - warpgroups 1 and 2 (consumers) own 64 keys each and keep their dK and dV (64 x D, fp32) in registers:
//     S^T = K Q^T, dP^T = V dO^T             wgmma, both operands from shared memory
//     P^T = exp(scale S^T - lse), dS^T = P^T (dP^T - delta)
//     dV += P^T dO, dK += dS^T Q             wgmma, A from registers, B (dO, Q) read transposed
//   and, for a bucket tile, the rows' dQ over this chunk: each consumer stores its dS^T transposed (stmatrix) into a
//   64 x 128 dS tile, both meet at a named barrier, and each computes half of dQ's columns, dS K, written as that
//   entry's 16-bit partial (the same partial_dq that the dq kernels add in slot order).
// Serves chunks that are whole 128-key blocks, and dense attention (no buckets). With chunk_size == 128 a bucket
// tile's dQ over the chunk is this block's alone, so the kernel writes the entries' partials; with a longer chunk
// (a multiple of 128) each entry's partial sums several blocks, so the kernel computes dK and dV only and
// dq_selected writes the partials. The own chunk's dQ comes from the dq kernel, which walks the causal prefix.
//
// bwd_dq_hopper: dq of one 128-row query tile x one head (the wide tiles of the forward), the mma.sync bwd_dq on
// wgmma: the producer loads the tile's Q and dO once, then streams 128-key K/V steps of the own chunk's causal prefix
// (dense: the whole prefix) through two stages; each consumer (64 rows) computes S = Q K^T and dP = dO V^T from
// shared memory, dS = P (dP - delta), dQ += dS K with dS from registers, and ends with store_dq_row (the partials
// added in slot order).
//
// Every sum runs in a fixed order (tiles and steps in a fixed order, keys in wgmma's order): the gradients are
// bit-identical run to run.
#pragma once

#include "moba_attn_bwd.cuh"
#include "moba_attn_fwd_hopper.cuh"

namespace moba {

template <int HD>
struct HopperBwdConfig {
    static constexpr int kConsumers = 2;                   // consumer warpgroups, 64 keys each
    static constexpr int kThreads = 128 * (1 + kConsumers);
    static constexpr int kBlockN = 64 * kConsumers;        // keys per block: the chunk
    static constexpr int kBlockM = 64;                     // query rows per tile (KeyTileWork's tiles)
    static constexpr int kQStages = 3;
    static constexpr int kKVBytes = kBlockN * HD * 2;      // K or V of the block
    static constexpr int kRowTileBytes = kBlockM * HD * 2; // Q or dO of one tile
    static constexpr int kStatsBytes = 2 * kBlockM * 4;    // lse then delta of one tile
    static constexpr int kStageBytes = 2 * kRowTileBytes;  // Q then dO; the stats sit apart, after the stages
    static constexpr int kDsBytes = kBlockM * kBlockN * 2; // dS of one tile, 64 rows x 128 keys, two buffers
    // Barriers: K/V full, then a full/empty pair per query stage.
    static constexpr int kBarrierBytes = 8 * (1 + 2 * kQStages);
    static constexpr int kSmemBytes =
            1024 + 2 * kKVBytes + 2 * kDsBytes + kQStages * (kStageBytes + kStatsBytes) + kBarrierBytes;
    static constexpr int kProducerRegisters = 40;
    static constexpr int kConsumerRegisters = 232;
    static_assert(HD == 128, "dQ's columns split in two 64-column halves, one per consumer");
    static_assert(kKVBytes % 1024 == 0 && kRowTileBytes % 1024 == 0 && kDsBytes % 1024 == 0 &&
                          kStageBytes % 1024 == 0,
                  "swizzled tiles stay 1024-byte aligned");
    static_assert(kSmemBytes <= 227 * 1024, "fits an H100 block's shared memory");
    // The launch gives each thread 65536 / 384 rounded down to 8 (168); setmaxnreg moves them.
    static_assert(128 * kProducerRegisters + 128 * kConsumers * kConsumerRegisters <= kThreads * 168,
                  "registers of the block at launch");
};

#ifdef MOBA_SM90A
// stmatrix .trans, four 8x8 16-bit matrices: lane l gives the row address of row l % 8 of matrix l / 8, register
// r_m holds this thread's pair (row lane / 4, columns 2 (lane % 4), +1) of matrix m, stored transposed: a warp's
// m16n8 accumulator fragments land as columns of the shared-memory tile.
__device__ __forceinline__ void stmatrix_x4_trans(uint32_t address, uint32_t r0, uint32_t r1, uint32_t r2,
                                                  uint32_t r3) {
    asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(address), "r"(r0),
                 "r"(r1), "r"(r2), "r"(r3)
                 : "memory");
}

// d (64 x 64) (+)= A B with A (64 x 16) K-major and B (16 x 64) MN-major (rows of K, N contiguous), both in shared
// memory: the dS K product, K's columns read as B.
template <class DT>
struct WgmmaMn64;

template <>
struct WgmmaMn64<Fp16> {
    __device__ __forceinline__ static void ss(float (&d)[8][4], uint64_t desc_a, uint64_t desc_b, int accumulate) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 1;\n}\n"
            : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
            : "l"(desc_a), "l"(desc_b), "r"(accumulate));
    }
};

template <>
struct WgmmaMn64<Bf16> {
    __device__ __forceinline__ static void ss(float (&d)[8][4], uint64_t desc_a, uint64_t desc_b, int accumulate) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 1;\n}\n"
            : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
            : "l"(desc_a), "l"(desc_b), "r"(accumulate));
    }
};

#endif  // MOBA_SM90A

template <class DT, int HD>
__device__ __forceinline__ void bwd_fused_hopper(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                                                 const uint16_t* __restrict__ v, const uint16_t* __restrict__ dout,
                                                 const float* __restrict__ lse, const float* __restrict__ delta,
                                                 uint16_t* __restrict__ dk, uint16_t* __restrict__ dv,
                                                 uint16_t* __restrict__ partial_dq, const int* __restrict__ cu_seqlens,
                                                 const int* __restrict__ chunk_base, const int2* __restrict__ blocks,
                                                 const int* __restrict__ bucket_row0,
                                                 const int* __restrict__ rows_of_buckets, int heads, int kv_heads,
                                                 int width, int chunk_size, int num_full_chunks, float scale,
                                                 int dense) {
#ifdef MOBA_SM90A
    using Cfg = HopperBwdConfig<HD>;
    using QueryTile = KeyTileWork::QueryTile;
    extern __shared__ __align__(128) unsigned char smem[];  // re-aligned to 1024 below (swizzled tiles)

    const int2 block = blocks[blockIdx.x];
    const int hk = blockIdx.y;
    const int seq0 = cu_seqlens[block.x], seq_len = cu_seqlens[block.x + 1] - seq0, start = block.y;
    const int keys_valid = min(Cfg::kBlockN, seq_len - start);
    const long kv_stride = static_cast<long>(kv_heads) * HD;
    const long key_row0 = static_cast<long>(seq0 + start) * kv_heads + hk;

    static_assert(Cfg::kBlockM == KeyTileWork::kRows, "the consumers' tiles are KeyTileWork's");
    KeyTileWork work = KeyTileWork::of(start, seq_len, hk, heads, kv_heads, chunk_size, width, dense, num_full_chunks,
                                       chunk_base[block.x], bucket_row0);

    const uint32_t base = (smem_address(smem) + 1023) & ~1023u;
    const uint32_t k_block = base, v_block = k_block + Cfg::kKVBytes;
    const uint32_t ds_tiles = v_block + Cfg::kKVBytes;              // two buffers of kDsBytes
    const uint32_t stages = ds_tiles + 2 * Cfg::kDsBytes;           // stage s: Q, dO
    const uint32_t stats = stages + Cfg::kQStages * Cfg::kStageBytes;  // stage s: lse[64], delta[64]
    const uint32_t bars = stats + Cfg::kQStages * Cfg::kStatsBytes;
    const StagedBarriers<Cfg::kQStages> barriers{bars};  // once: the block's K and V; stages: query tiles
    const uint32_t kv_full = barriers.once();
    auto q_full = [&](int s) { return barriers.full(s); };
    auto q_empty = [&](int s) { return barriers.empty(s); };
    auto stage_tile = [&](int s) { return stages + s * Cfg::kStageBytes; };
    auto stage_stats = [&](int s) { return stats + s * Cfg::kStatsBytes; };
    const unsigned char* smem_generic = smem + (base - smem_address(smem));  // `base` as a generic pointer

    const int group = threadIdx.x / 128, thread_in_group = threadIdx.x % 128;
    barriers.init(Cfg::kConsumers);

    if (group == 0) {
        // ---------------------------------------------------------------- producer
        setmaxnreg_dec<Cfg::kProducerRegisters>();
        AsyncProducer producer;
        load_sw128_tile_async<Cfg::kBlockN, HD, 128>(k_block, k + key_row0 * HD, kv_stride, keys_valid,
                                                     thread_in_group);
        load_sw128_tile_async<Cfg::kBlockN, HD, 128>(v_block, v + key_row0 * HD, kv_stride, keys_valid,
                                                     thread_in_group);
        producer.commit(kv_full);
        // Tile rows: a quad of threads per row, rows thread / 4 and + 32; lse and delta by the quad's first two.
        constexpr int kVectorsPerLane = HD / 32;
        QueryTile t;
        for (int n = 0; work.next(t); ++n) {
            const int s = n % Cfg::kQStages;
            if (n >= Cfg::kQStages) producer.acquire(q_empty(s), ((n / Cfg::kQStages) & 1) ^ 1);
            const uint32_t q_tile = stage_tile(s), do_tile = q_tile + Cfg::kRowTileBytes;
            const uint32_t row_stats = stage_stats(s);
            long row[2];  // (token * H + h) of this thread's two rows
#pragma unroll
            for (int pass = 0; pass < 2; ++pass) {
                const int r = pass * 32 + thread_in_group / 4;
                row[pass] = r >= t.count ? 0
                          : t.own        ? static_cast<long>(seq0 + t.first + r) * heads + t.h
                                         : rows_of_buckets[t.first + r] / width;
            }
#pragma unroll
            for (int pass = 0; pass < 2; ++pass) {
                const int r = pass * 32 + thread_in_group / 4;
                const bool valid = r < t.count;
#pragma unroll
                for (int j = 0; j < kVectorsPerLane; ++j) {
                    const int vec = (thread_in_group & 3) + 4 * j;
                    const uint32_t at = sw128_offset<Cfg::kBlockM>(r, vec * 8);
                    cp_async_16(q_tile + at, q + row[pass] * HD + vec * 8, valid);
                    cp_async_16(do_tile + at, dout + row[pass] * HD + vec * 8, valid);
                }
                if ((thread_in_group & 3) < 2) {  // lse at stats[r], delta at stats[64 + r]
                    const int which = thread_in_group & 3;
                    cp_async_4(row_stats + (which * Cfg::kBlockM + r) * 4, (which == 0 ? lse : delta) + row[pass], valid);
                }
            }
            producer.commit(q_full(s));
        }
        producer.flush();
    } else {
        // ---------------------------------------------------------------- consumers
        setmaxnreg_inc<Cfg::kConsumerRegisters>();
        const int consumer = group - 1, warp = thread_in_group / 32, lane = threadIdx.x & 31;
        const uint32_t k_rows = k_block + consumer * 64 * 128, v_rows = v_block + consumer * 64 * 128;
        // This thread's keys (accumulator rows), local to the block, and its query columns within a tile.
        const int key_local[2] = {consumer * 64 + warp * 16 + (lane >> 2), consumer * 64 + warp * 16 + (lane >> 2) + 8};
        const float scale_log2 = scale * kLog2e;
        float acc_dk[HD / 8][4] = {}, acc_dv[HD / 8][4] = {};
        mbarrier_wait(kv_full, 0);
        // Whether bucket tiles also give their rows' partial dQ (the chunk is this block) or only dK and dV.
        const bool bucket_dq = !dense && chunk_size == Cfg::kBlockN;
        QueryTile t;
        int bucket_tiles = 0;
        for (int n = 0; work.next(t); ++n) {
            const int s = n % Cfg::kQStages;
            const uint32_t q_tile = stage_tile(s), do_tile = q_tile + Cfg::kRowTileBytes;
            const float* row_stats = reinterpret_cast<const float*>(smem_generic + (stage_stats(s) - base));
            // The rows' entries, read before the wait so that the partial's stores never wait on them.
            int entry[2] = {-1, -1};
            if (!t.own && bucket_dq) {
#pragma unroll
                for (int i = 0; i < 2; ++i) {
                    const int r = warp * 16 + (lane >> 2) + 8 * i;
                    entry[i] = r < t.count ? rows_of_buckets[t.first + r] : -1;
                }
            }
            // An own tile whose last row lies before this warpgroup's first key sees none of its keys.
            const bool sees = !t.own || t.first + Cfg::kBlockM - 1 >= start + consumer * 64;
            const bool diagonal = t.own && t.first < start + Cfg::kBlockN;  // query j sees key i iff j >= i
            mbarrier_wait(q_full(s), (n / Cfg::kQStages) & 1);
            float st[8][4], dpt[8][4];
            uint32_t pt_frag[4][4], dst_frag[4][4];
            if (sees) {
                wgmma_fence();
                wgmma_issue_nt<DT, HD, 64, Cfg::kBlockN>(st, k_rows, q_tile);
                wgmma_issue_nt<DT, HD, 64, Cfg::kBlockN>(dpt, v_rows, do_tile);
                wgmma_wait<1>();
                fence_registers(st);
                // P^T from each query's lse (log2 units), masked on the diagonal.
#pragma unroll
                for (int nt = 0; nt < 8; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int col = nt * 8 + (lane & 3) * 2 + (e & 1);
                        const bool hidden = diagonal && t.first + col - start < key_local[e >> 1];
                        st[nt][e] = hidden ? 0.f : fast_exp2(fmaf(st[nt][e], scale_log2, -row_stats[col] * kLog2e));
                    }
                wgmma_wait<0>();
                fence_registers(dpt);
#pragma unroll
                for (int nt = 0; nt < 8; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int col = nt * 8 + (lane & 3) * 2 + (e & 1);
                        dpt[nt][e] = st[nt][e] * (dpt[nt][e] - row_stats[Cfg::kBlockM + col]);
                    }
                pack_a_fragments<DT, 4>(pt_frag, st);
                pack_a_fragments<DT, 4>(dst_frag, dpt);
                wgmma_fence();
                wgmma_issue_rs<DT, HD, 4, Cfg::kBlockM>(acc_dv, pt_frag, do_tile);
                wgmma_issue_rs<DT, HD, 4, Cfg::kBlockM>(acc_dk, dst_frag, q_tile);
                wgmma_commit();
            }
            if (t.own || !bucket_dq) {
                wgmma_wait<0>();
                fence_registers(acc_dv);
                fence_registers(acc_dk);
                mbarrier_arrive(q_empty(s));
                continue;
            }
            // Bucket tile: dS^T (this warpgroup's 64 keys x the tile's 64 rows) into column block `consumer` of the
            // dS tile (rows = queries, columns = the block's keys). dst_frag[kt] holds accumulator tiles 2kt, 2kt+1:
            // [0] rows 0-7 / [1] rows 8-15 of tile 2kt, [2] / [3] of tile 2kt + 1; lane l addresses row l % 8 of
            // matrix l / 8, i.e. query (2kt + l / 16) * 8 + l % 8, keys + (l / 8 % 2) * 8.
            const uint32_t ds_tile = ds_tiles + (bucket_tiles & 1) * Cfg::kDsBytes;
            ++bucket_tiles;
#pragma unroll
            for (int kt = 0; kt < 4; ++kt) {
                const int query = (2 * kt + lane / 16) * 8 + lane % 8;
                const int key = consumer * 64 + warp * 16 + (lane / 8 % 2) * 8;
                stmatrix_x4_trans(ds_tile + sw128_offset<Cfg::kBlockM>(query, key), dst_frag[kt][0],
                                  dst_frag[kt][1], dst_frag[kt][2], dst_frag[kt][3]);
            }
            fence_proxy_async_shared();
            named_barrier_sync(1, 128 * Cfg::kConsumers);  // both halves of dS written
            // dQ[:, 64 consumer ..] = dS K over the block's 128 keys: K's column block `consumer` read MN-major.
            float dq[8][4];
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < Cfg::kBlockN / 16; ++kk) {
                const uint32_t col = kk / 4, within = (kk % 4) * 32;
                WgmmaMn64<DT>::ss(dq, sw128_descriptor(ds_tile + col * Cfg::kBlockM * 128 + within, 16, 1024),
                                  sw128_descriptor(k_block + consumer * Cfg::kBlockN * 128 + kk * 16 * 128,
                                                   Cfg::kBlockN * 128, 1024),
                                  kk > 0);
            }
            wgmma_commit();
            wgmma_wait<0>();
            fence_registers(dq);
            fence_registers(acc_dv);
            fence_registers(acc_dk);
            mbarrier_arrive(q_empty(s));
            // This warpgroup's 64 columns of each row's partial, in 16-byte segments.
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                float seg[2][8];
                scaled_segments<64>(dq, i, scale, seg);
                if (entry[i] >= 0) store_segments<DT, 64>(partial_dq + static_cast<long>(entry[i]) * HD + consumer * 64, seg);
            }
        }
        // dK = scale * dS^T Q, dV = P^T dO, per key row of this thread, in 16-byte segments.
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const long row = key_local[i] < keys_valid ? key_row0 + static_cast<long>(key_local[i]) * kv_heads : -1;
            float seg[HD / 32][8];
            scaled_segments<HD>(acc_dk, i, scale, seg);
            if (row >= 0) store_segments<DT, HD>(dk + row * HD, seg);
            scaled_segments<HD>(acc_dv, i, 1.f, seg);
            if (row >= 0) store_segments<DT, HD>(dv + row * HD, seg);
        }
    }
#else
    __trap();  // launched only on sm_90a devices
#endif
}

template <int HD>
struct HopperDqConfig {
    static constexpr int kConsumers = 2;                    // consumer warpgroups, 64 query rows each
    static constexpr int kThreads = 128 * (1 + kConsumers);
    static constexpr int kBlockM = 64 * kConsumers;         // query rows per tile: the forward's wide tiles
    static constexpr int kBlockN = 128;                     // keys per step
    static constexpr int kKVStages = 2;
    static constexpr int kRowTileBytes = kBlockM * HD * 2;  // Q or dO of the tile
    static constexpr int kKVBytes = kBlockN * HD * 2;       // K or V of one step
    // Barriers: Q/dO full, then a full/empty pair per K/V stage.
    static constexpr int kBarrierBytes = 8 * (1 + 2 * kKVStages);
    static constexpr int kSmemBytes = 1024 + 2 * kRowTileBytes + kKVStages * 2 * kKVBytes + kBarrierBytes;
    static constexpr int kProducerRegisters = 40;
    static constexpr int kConsumerRegisters = 232;
    static_assert(HD % 64 == 0, "the head dim is a whole number of 128-byte swizzle atoms");
    static_assert(kRowTileBytes % 1024 == 0 && kKVBytes % 1024 == 0, "swizzled tiles stay 1024-byte aligned");
    static_assert(kSmemBytes <= 227 * 1024, "fits an H100 block's shared memory");
    static_assert(128 * kProducerRegisters + 128 * kConsumers * kConsumerRegisters <= kThreads * 168,
                  "registers of the block at launch");
};

template <class DT, int HD>
__device__ __forceinline__ void bwd_dq_hopper(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                                              const uint16_t* __restrict__ v, const uint16_t* __restrict__ dout,
                                              const float* __restrict__ lse, const float* __restrict__ delta,
                                              uint16_t* __restrict__ dq, const int* __restrict__ cu_seqlens,
                                              const int* __restrict__ sel, int width, const int2* __restrict__ tiles,
                                              int heads, int kv_heads, int chunk_size, float scale, int dense,
                                              const uint16_t* __restrict__ partial_dq) {
#ifdef MOBA_SM90A
    using Cfg = HopperDqConfig<HD>;
    using Rows = FlashRows<DT, HD, Cfg::kBlockN>;
    extern __shared__ __align__(128) unsigned char smem[];  // re-aligned to 1024 below (swizzled tiles)

    const QueryTileCoords tile = QueryTileCoords::of_block<Cfg::kBlockM>(tiles, cu_seqlens, heads, kv_heads);
    const int h = tile.h, hk = tile.hk, seq0 = tile.seq0, seq_len = tile.seq_len, start = tile.start;
    const int rows_valid = tile.rows_valid;
    const int last_row = start + rows_valid - 1;
    // Keys of row p: [first_key(p), p]; with C = 64 a tile's two consumers lie in different chunks.
    auto first_key = [&](int p) { return dense ? 0 : (p / chunk_size) * chunk_size; };
    const int walk0 = first_key(start);
    const int steps = (last_row - walk0) / Cfg::kBlockN + 1;
    const long q_row0 = static_cast<long>(seq0 + start) * heads + h;  // t * H + h of the tile's first row

    const uint32_t base = (smem_address(smem) + 1023) & ~1023u;
    const uint32_t q_tile = base, do_tile = q_tile + Cfg::kRowTileBytes;
    const uint32_t kv_stages = do_tile + Cfg::kRowTileBytes;  // stage s: K, then V
    const uint32_t bars = kv_stages + Cfg::kKVStages * 2 * Cfg::kKVBytes;
    const StagedBarriers<Cfg::kKVStages> barriers{bars};  // once: the tile's Q and dO; stages: K/V steps
    const uint32_t rows_full = barriers.once();
    auto kv_full = [&](int s) { return barriers.full(s); };
    auto kv_empty = [&](int s) { return barriers.empty(s); };

    const int group = threadIdx.x / 128, thread_in_group = threadIdx.x % 128;
    barriers.init(Cfg::kConsumers);

    if (group == 0) {
        // ---------------------------------------------------------------- producer
        setmaxnreg_dec<Cfg::kProducerRegisters>();
        const long q_stride = static_cast<long>(heads) * HD, kv_stride = static_cast<long>(kv_heads) * HD;
        AsyncProducer producer;
        load_sw128_tile_async<Cfg::kBlockM, HD, 128>(q_tile, q + q_row0 * HD, q_stride, rows_valid, thread_in_group);
        load_sw128_tile_async<Cfg::kBlockM, HD, 128>(do_tile, dout + q_row0 * HD, q_stride, rows_valid,
                                                     thread_in_group);
        producer.commit(rows_full);
        const long kv_head0 = (static_cast<long>(seq0) * kv_heads + hk) * HD;
        static_assert(Cfg::kBlockM == 128, "one producer thread per tile row prefetches its partials");
        for (int j = 0; j < steps; ++j) {
            const int s = j % Cfg::kKVStages, key0 = walk0 + j * Cfg::kBlockN;
            if (j >= Cfg::kKVStages) producer.acquire(kv_empty(s), ((j / Cfg::kKVStages) & 1) ^ 1);
            const uint32_t k_tile = kv_stages + s * 2 * Cfg::kKVBytes;
            const int valid = seq_len - key0;  // only the last step can run past the sequence end
            load_sw128_tile_async<Cfg::kBlockN, HD, 128>(k_tile, k + kv_head0 + key0 * kv_stride, kv_stride, valid,
                                                         thread_in_group);
            load_sw128_tile_async<Cfg::kBlockN, HD, 128>(k_tile + Cfg::kKVBytes, v + kv_head0 + key0 * kv_stride,
                                                         kv_stride, valid, thread_in_group);
            producer.commit(kv_full(s));
            if (j == 0 && !dense && width > 0 && thread_in_group < rows_valid) {
                // The partials the epilogue adds (all of a row's slots are contiguous) start towards L2 now, so
                // that their DRAM reads overlap this tile's GEMMs instead of following them.
                const long row = q_row0 + static_cast<long>(thread_in_group) * heads;
                prefetch_l2_bulk(partial_dq + row * width * HD, static_cast<uint32_t>(width) * HD * 2);
            }
        }
        producer.flush();
    } else {
        // ---------------------------------------------------------------- consumers
        setmaxnreg_inc<Cfg::kConsumerRegisters>();
        const int consumer = group - 1, warp = thread_in_group / 32, lane = threadIdx.x & 31;
        const int row_in_tile[2] = {consumer * 64 + warp * 16 + (lane >> 2),
                                    consumer * 64 + warp * 16 + (lane >> 2) + 8};
        int row_first[2], row_last[2];  // keys each of this thread's rows sees, local to the sequence
        float lse2[2], row_delta[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            row_last[i] = start + row_in_tile[i];
            row_first[i] = first_key(row_last[i]);
            const bool valid = row_in_tile[i] < rows_valid;
            const long row = q_row0 + static_cast<long>(row_in_tile[i]) * heads;
            lse2[i] = valid ? lse[row] * kLog2e : 0.f;
            row_delta[i] = valid ? delta[row] : 0.f;
        }
        const int first_key_of_last_row = first_key(last_row);
        const float scale_log2 = scale * kLog2e;
        const uint32_t q_rows = q_tile + consumer * 64 * 128, do_rows = do_tile + consumer * 64 * 128;
        float acc_dq[HD / 8][4] = {};
        mbarrier_wait(rows_full, 0);
        for (int j = 0; j < steps; ++j) {
            const int s = j % Cfg::kKVStages, key0 = walk0 + j * Cfg::kBlockN;
            const uint32_t k_tile = kv_stages + s * 2 * Cfg::kKVBytes, v_tile = k_tile + Cfg::kKVBytes;
            mbarrier_wait(kv_full(s), (j / Cfg::kKVStages) & 1);
            float sc[Cfg::kBlockN / 8][4], dp[Cfg::kBlockN / 8][4];
            wgmma_fence();
            wgmma_issue_nt<DT, HD, Cfg::kBlockN, Cfg::kBlockM>(sc, q_rows, k_tile);
            wgmma_issue_nt<DT, HD, Cfg::kBlockN, Cfg::kBlockM>(dp, do_rows, v_tile);
            wgmma_wait<1>();
            fence_registers(sc);
            if (key0 + Cfg::kBlockN - 1 > start || key0 < first_key_of_last_row) {
                // Masking only where some row's range starts or ends inside this step.
                const int key_first[2] = {row_first[0] - key0, row_first[1] - key0};
                const int key_last[2] = {row_last[0] - key0, row_last[1] - key0};
                Rows::mask(sc, key_first, key_last);
            }
            wgmma_wait<0>();
            fence_registers(dp);
            // dS = P (dP - delta), P from the forward's lse (hidden keys: S = -inf, P = 0).
#pragma unroll
            for (int nt = 0; nt < Cfg::kBlockN / 8; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int i = e >> 1;
                    dp[nt][e] = fast_exp2(fmaf(sc[nt][e], scale_log2, -lse2[i])) * (dp[nt][e] - row_delta[i]);
                }
            uint32_t ds_frag[Cfg::kBlockN / 16][4];
            pack_a_fragments<DT, Cfg::kBlockN / 16>(ds_frag, dp);
            wgmma_fence();
            wgmma_issue_rs<DT, HD, Cfg::kBlockN / 16, Cfg::kBlockN>(acc_dq, ds_frag, k_tile);
            wgmma_commit();
            wgmma_wait<0>();
            fence_registers(acc_dq);
            mbarrier_arrive(kv_empty(s));
        }
#pragma unroll
        for (int i = 0; i < 2; ++i)
            store_dq_row<DT, HD>(acc_dq, i,
                                 row_in_tile[i] < rows_valid ? q_row0 + static_cast<long>(row_in_tile[i]) * heads : -1,
                                 scale, dense ? 0 : width, sel, partial_dq, dq);
    }
#else
    __trap();  // launched only on sm_90a devices
#endif
}

}  // namespace moba
