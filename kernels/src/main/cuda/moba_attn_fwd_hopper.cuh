// The sm_90a forward engine (ABI.md, "Hopper forward"): dense causal attention, the own chunk's
// causal prefix (MoBA with W == 0), and the own chunk plus the merge of the gathered kernel's
// partials (kCombine). Same math and epilogue as moba_attn_fwd.cuh; the engine differs:
//
// - one block = one 128-row query tile x one head, warp-specialized: warpgroup 0 is the producer
//   (cp.async into 128-byte-swizzled shared-memory stages, published through mbarriers), warpgroups
//   1 and 2 are consumers, each owning 64 query rows;
// - S = Q K^T is a wgmma with both operands in shared memory, O += P V a wgmma with P from
//   registers (the S accumulators rounded to the input type) and V read transposed;
// - each key step is 128 keys; the stages are released to the producer through `empty` mbarriers.
//
// The producer waits for its own cp.async groups, fences the generic proxy against the async proxy
// (wgmma reads shared memory through the latter) and only then arrives on a stage's `full` barrier.
#pragma once

#include "moba_flash.cuh"
#include "moba_hopper.cuh"

namespace moba {

template <int HD>
struct HopperFwdConfig {
    static constexpr int kConsumers = 2;                   // consumer warpgroups, 64 query rows each
    static constexpr int kThreads = 128 * (1 + kConsumers);
    static constexpr int kBlockM = 64 * kConsumers;        // query rows per tile
    static constexpr int kBlockN = 128;                    // keys per step
    // Three stages: the producer refills the stage of step j-3 while step j-1 is published and j-2 computed,
    // so publishing never waits for a consumer to free a stage.
    static constexpr int kStages = 3;
    static constexpr int kQBytes = kBlockM * HD * 2;
    static constexpr int kKVBytes = kBlockN * HD * 2;
    static constexpr int kStageBytes = 2 * kKVBytes;       // K then V
    static constexpr int kBarrierBytes = 8 * (1 + 2 * kStages);
    // 1024 bytes of slack: dynamic shared memory is only 16-byte aligned, swizzled tiles need 1024.
    static constexpr int kSmemBytes = 1024 + kQBytes + kStages * kStageBytes + kBarrierBytes;
    static constexpr int kProducerRegisters = 56;
    static constexpr int kConsumerRegisters = 224;
    static_assert(HD % 64 == 0, "the head dim is a whole number of 128-byte swizzle atoms");
    static_assert(kQBytes % 1024 == 0 && kKVBytes % 1024 == 0, "tiles stay 1024-byte aligned");
    static_assert(kSmemBytes <= 227 * 1024, "fits an H100 block's shared memory");
    static_assert(128 * kProducerRegisters + 128 * kConsumers * kConsumerRegisters <= 65536, "register file");
};

template <class DT, int HD, bool kCombine>
__device__ __forceinline__ void attn_fwd_hopper(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                                                const uint16_t* __restrict__ v, uint16_t* __restrict__ out,
                                                float* __restrict__ lse, const int* __restrict__ cu_seqlens,
                                                const int* __restrict__ sel, int width, const int2* __restrict__ tiles,
                                                int heads, int kv_heads, int chunk_size, float scale, int dense,
                                                const uint16_t* __restrict__ partial_o,
                                                const float* __restrict__ partial_lse) {
#ifdef MOBA_SM90A
    using Cfg = HopperFwdConfig<HD>;
    using Rows = FlashRows<DT, HD, Cfg::kBlockN>;
    extern __shared__ __align__(1024) unsigned char smem[];

    const int2 tile = tiles[blockIdx.x];
    const int h = blockIdx.y, hk = h / (heads / kv_heads);
    const int seq0 = cu_seqlens[tile.x], seq_len = cu_seqlens[tile.x + 1] - seq0, start = tile.y;
    const int rows_valid = min(Cfg::kBlockM, seq_len - start);
    const int last_row = start + rows_valid - 1;
    // Keys of row p: [first_key(p), p]; the tile walks 128-key steps from its first row's first key.
    auto first_key = [&](int p) { return dense ? 0 : (p / chunk_size) * chunk_size; };
    const int walk0 = first_key(start);
    const int steps = (last_row - walk0) / Cfg::kBlockN + 1;

    const uint32_t base = (smem_address(smem) + 1023) & ~1023u;
    const uint32_t q_tile = base;
    const uint32_t stages = q_tile + Cfg::kQBytes;
    const uint32_t q_full = stages + Cfg::kStages * Cfg::kStageBytes;  // then full[s], then empty[s]
    auto full = [&](int s) { return q_full + 8 * (1 + s); };
    auto empty = [&](int s) { return q_full + 8 * (1 + Cfg::kStages + s); };

    const int group = threadIdx.x / 128, thread_in_group = threadIdx.x % 128;
    if (threadIdx.x == 0) {
        mbarrier_init(q_full, 128);
        for (int s = 0; s < Cfg::kStages; ++s) {
            mbarrier_init(full(s), 128);
            mbarrier_init(empty(s), 128 * Cfg::kConsumers);
        }
    }
    __syncthreads();

    if (group == 0) {
        // ---------------------------------------------------------------- producer
        setmaxnreg_dec<Cfg::kProducerRegisters>();
        const long kv_stride = static_cast<long>(kv_heads) * HD;
        const uint16_t* k_head = k + (static_cast<long>(seq0) * kv_heads + hk) * HD;
        const uint16_t* v_head = v + (static_cast<long>(seq0) * kv_heads + hk) * HD;
        load_sw128_tile_async<Cfg::kBlockM, HD, 128>(q_tile, q + (static_cast<long>(seq0 + start) * heads + h) * HD,
                                                     static_cast<long>(heads) * HD, rows_valid, thread_in_group);
        cp_async_commit();
        for (int j = 0; j < steps; ++j) {
            const int s = j % Cfg::kStages;
            if (j >= Cfg::kStages) mbarrier_wait(empty(s), ((j / Cfg::kStages) & 1) ^ 1);
            const int key0 = walk0 + j * Cfg::kBlockN;
            const int valid = seq_len - key0;  // only the last step can run past the sequence end
            const uint32_t k_tile = stages + s * Cfg::kStageBytes;
            load_sw128_tile_async<Cfg::kBlockN, HD, 128>(k_tile, k_head + key0 * kv_stride, kv_stride, valid,
                                                         thread_in_group);
            load_sw128_tile_async<Cfg::kBlockN, HD, 128>(k_tile + Cfg::kKVBytes, v_head + key0 * kv_stride,
                                                         kv_stride, valid, thread_in_group);
            cp_async_commit();
            // The previous group (Q, or step j-1) has landed: publish it.
            cp_async_wait<1>();
            fence_proxy_async_shared();
            mbarrier_arrive(j == 0 ? q_full : full((j - 1) % Cfg::kStages));
        }
        cp_async_wait<0>();
        fence_proxy_async_shared();
        mbarrier_arrive(full((steps - 1) % Cfg::kStages));
    } else {
        // ---------------------------------------------------------------- consumers
        setmaxnreg_inc<Cfg::kConsumerRegisters>();
        const int consumer = group - 1, warp = thread_in_group / 32, lane = threadIdx.x & 31;
        const int row_in_tile[2] = {consumer * 64 + warp * 16 + (lane >> 2), consumer * 64 + warp * 16 + (lane >> 2) + 8};
        int row_first[2], row_last[2];  // keys each of this thread's rows sees, local to the sequence
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            row_last[i] = start + row_in_tile[i];
            row_first[i] = first_key(row_last[i]);
        }
        const int first_key_of_last_row = first_key(last_row);
        const float scale_log2 = scale * kLog2e;
        Rows rows;
        // Q rows of this consumer: column block cb, k-step kk within it at +32 bytes.
        const uint32_t q_rows = q_tile + consumer * 64 * 128;
        mbarrier_wait(q_full, 0);
        for (int j = 0; j < steps; ++j) {
            const int s = j % Cfg::kStages;
            const uint32_t k_tile = stages + s * Cfg::kStageBytes, v_tile = k_tile + Cfg::kKVBytes;
            const int key0 = walk0 + j * Cfg::kBlockN;
            mbarrier_wait(full(s), (j / Cfg::kStages) & 1);

            float sacc[Cfg::kBlockN / 8][4];
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < HD / 16; ++kk) {
                const uint32_t col = kk / 4, within = (kk % 4) * 32;
                Wgmma<DT, Cfg::kBlockN>::ss(sacc, sw128_descriptor(q_rows + col * Cfg::kBlockM * 128 + within, 16, 1024),
                                            sw128_descriptor(k_tile + col * Cfg::kBlockN * 128 + within, 16, 1024), kk > 0);
            }
            wgmma_commit();
            wgmma_wait<0>();
            fence_registers(sacc);

            // Masking only where some row's range starts or ends inside this step.
            if (key0 + Cfg::kBlockN - 1 > start || key0 < first_key_of_last_row) {
                const int key_first[2] = {row_first[0] - key0, row_first[1] - key0};
                const int key_last[2] = {row_last[0] - key0, row_last[1] - key0};
                Rows::mask(sacc, key_first, key_last);
            }
            rows.softmax_step(sacc, scale_log2);

            // O += P V, 16 keys per instruction; P packed first so that one fence covers every A fragment.
            uint32_t p[Cfg::kBlockN / 16][4];
#pragma unroll
            for (int kt = 0; kt < Cfg::kBlockN / 16; ++kt) {
                p[kt][0] = DT::pack(sacc[2 * kt][0], sacc[2 * kt][1]);
                p[kt][1] = DT::pack(sacc[2 * kt][2], sacc[2 * kt][3]);
                p[kt][2] = DT::pack(sacc[2 * kt + 1][0], sacc[2 * kt + 1][1]);
                p[kt][3] = DT::pack(sacc[2 * kt + 1][2], sacc[2 * kt + 1][3]);
            }
            wgmma_fence();
#pragma unroll
            for (int kt = 0; kt < Cfg::kBlockN / 16; ++kt)
                Wgmma<DT, HD>::rs(rows.acc_o, p[kt], sw128_descriptor(v_tile + kt * 16 * 128, Cfg::kBlockN * 128, 1024), 1);
            wgmma_commit();
            wgmma_wait<0>();
            fence_registers(rows.acc_o);
            mbarrier_arrive(empty(s));
        }

        long row_token[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) row_token[i] = row_in_tile[i] < rows_valid ? seq0 + start + row_in_tile[i] : -1;
        write_rows<DT, HD, kCombine>(rows, row_token, h, heads, width, sel, partial_o, partial_lse, out, lse);
    }
#else
    __trap();  // launched only on sm_90a devices
#endif
}

}  // namespace moba
