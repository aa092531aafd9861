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
// kUnion (MoBA with a selection, no routing): the tile walks the union of its rows' selected chunks, ascending,
// then its own chunk's causal prefix, each row masked to what it selected. The producer warpgroup merges the
// rows' sorted selection lists (thread r follows row r; a named barrier combines the four warps' minima) and
// publishes each step's key0 and 128-bit row mask in a small per-stage slot next to its K/V stage; a consumer
// warpgroup none of whose 64 rows selected a step's chunk skips its GEMMs. Needs chunk % 128 == 0, so that a
// chunk is whole steps and a 128-row tile lies in one chunk.
//
// The producer waits for its own cp.async groups, fences the generic proxy against the async proxy
// (wgmma reads shared memory through the latter) and only then arrives on a stage's `full` barrier
// (AsyncProducer).
//
// attn_selected_hopper is the gathered kernel of moba_attn_selected.cuh on the same engine: one block
// = one group of a (head, chunk) bucket's rows, gathered into 128-row query tiles (three stages) that
// stream against the chunk's keys in 128-key steps (two stages; resident for the whole group when the
// chunk fits them).
#pragma once

#include "moba_flash.cuh"
#include "moba_hopper.cuh"
#include "moba_route.cuh"

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
    static constexpr int kBarrierBytes = 8 * (1 + 2 * kStages);  // StagedBarriers<kStages>: Q once, K/V stages
    // kUnion: per stage a StepSlot, then two rounds of the producer warps' minima (double-buffered).
    static constexpr int kScheduleBytes = kStages * 24 + 2 * 4 * 4;
    // 1024 bytes of slack: dynamic shared memory is only 16-byte aligned, swizzled tiles need 1024.
    static constexpr int kSmemBytes = 1024 + kQBytes + kStages * kStageBytes + kBarrierBytes + kScheduleBytes;
    static constexpr int kProducerRegisters = 56;
    static constexpr int kConsumerRegisters = 224;
    static_assert(HD % 64 == 0, "the head dim is a whole number of 128-byte swizzle atoms");
    static_assert(kQBytes % 1024 == 0 && kKVBytes % 1024 == 0, "tiles stay 1024-byte aligned");
    static_assert(kSmemBytes <= 227 * 1024, "fits an H100 block's shared memory");
    static_assert(128 * kProducerRegisters + 128 * kConsumers * kConsumerRegisters <= 65536, "register file");
};

// What the union walk's producer publishes with each stage (kUnion): the step's kind, first key (local to the
// sequence) and which of the tile's 128 rows see it (bit r of rows[r / 32]).
struct StepSlot {
    static constexpr int kSelected = 0, kOwn = 1, kEnd = 2;
    int kind;
    int key0;
    uint32_t rows[4];
};
static_assert(sizeof(StepSlot) == 24, "HopperFwdConfig::kScheduleBytes counts 24 bytes per slot");

#ifdef MOBA_SM90A
// The wgmma building blocks of the sm_90a kernels (this file's and moba_bwd_hopper.cuh's).

// Issues (without waiting) d (64 x BN) (+)= A B^T over HD: A the 64 rows at a_rows of an sw128 tile of A_TILE_ROWS
// rows, B an sw128 tile of BN rows; K-major both. One commit group.
template <class DT, int HD, int BN, int A_TILE_ROWS>
__device__ __forceinline__ void wgmma_issue_nt(float (&d)[BN / 8][4], uint32_t a_rows, uint32_t b_tile) {
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {  // column block kk / 4 of 64 columns, 32 bytes per k-step inside it
        const uint32_t col = kk / 4, within = (kk % 4) * 32;
        Wgmma<DT, BN>::ss(d, sw128_descriptor(a_rows + col * A_TILE_ROWS * 128 + within, 16, 1024),
                          sw128_descriptor(b_tile + col * BN * 128 + within, 16, 1024), kk > 0);
    }
    wgmma_commit();
}

// Packs an m64nK accumulator (K = 16 * KT columns) into wgmma A fragments, rounded to DT.
template <class DT, int KT>
__device__ __forceinline__ void pack_a_fragments(uint32_t (&a)[KT][4], const float (&s)[2 * KT][4]) {
#pragma unroll
    for (int kt = 0; kt < KT; ++kt) {
        a[kt][0] = DT::pack(s[2 * kt][0], s[2 * kt][1]);
        a[kt][1] = DT::pack(s[2 * kt][2], s[2 * kt][3]);
        a[kt][2] = DT::pack(s[2 * kt + 1][0], s[2 * kt + 1][1]);
        a[kt][3] = DT::pack(s[2 * kt + 1][2], s[2 * kt + 1][3]);
    }
}

// Issues (without waiting) d (64 x HD) += A B: A fragments over KT * 16 rows of B, B an sw128 tile of B_ROWS rows
// read transposed (MN-major). No commit.
template <class DT, int HD, int KT, int B_ROWS>
__device__ __forceinline__ void wgmma_issue_rs(float (&d)[HD / 8][4], const uint32_t (&a)[KT][4], uint32_t b_tile) {
#pragma unroll
    for (int kt = 0; kt < KT; ++kt)
        Wgmma<DT, HD>::rs(d, a[kt], sw128_descriptor(b_tile + kt * 16 * 128, B_ROWS * 128, 1024), 1);
}

// S (64 x BN) = Q K^T for one consumer warpgroup: Q rows at q_rows (an sw128 tile of Q_TILE_ROWS rows, this
// warpgroup's 64 of them), K an sw128 tile of BN rows. Waits for the result.
template <class DT, int HD, int BN, int Q_TILE_ROWS>
__device__ __forceinline__ void wgmma_scores(float (&s)[BN / 8][4], uint32_t q_rows, uint32_t k_tile) {
    wgmma_fence();
    wgmma_issue_nt<DT, HD, BN, Q_TILE_ROWS>(s, q_rows, k_tile);
    wgmma_wait<0>();
    fence_registers(s);
}

// O (64 x HD) += P V: P the softmax numerators in s (rounded to DT, A fragments from registers), V an sw128 tile
// of BN key rows read transposed. Waits for the result.
template <class DT, int HD, int BN>
__device__ __forceinline__ void wgmma_pv(float (&o)[HD / 8][4], const float (&s)[BN / 8][4], uint32_t v_tile) {
    uint32_t p[BN / 16][4];  // packed first, so that one fence covers every A fragment
    pack_a_fragments<DT, BN / 16>(p, s);
    wgmma_fence();
    wgmma_issue_rs<DT, HD, BN / 16, BN>(o, p, v_tile);
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(o);
}
#endif  // MOBA_SM90A

template <class DT, int HD, bool kCombine, bool kUnion = false>
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
    extern __shared__ __align__(128) unsigned char smem[];  // re-aligned to 1024 below (swizzled tiles)

    const QueryTileCoords tile = QueryTileCoords::of_block<Cfg::kBlockM>(tiles, cu_seqlens, heads, kv_heads);
    const int h = tile.h, hk = tile.hk, seq0 = tile.seq0, seq_len = tile.seq_len, start = tile.start;
    const int rows_valid = tile.rows_valid;
    const int last_row = start + rows_valid - 1;
    // Combine mode: rows that selected every past chunk were not routed; they walk their causal prefix
    // like dense attention and have no partials to merge. Decided per row: with C = 64 one 128-row
    // tile spans two chunks, but each consumer's 64 rows lie in one.
    auto walks_prefix = [&](int p) { return kCombine && all_past_selected(p, chunk_size, width); };
    // Keys of row p: [first_key(p), p]; the tile walks 128-key steps from its first row's first key.
    auto first_key = [&](int p) { return dense || walks_prefix(p) ? 0 : (p / chunk_size) * chunk_size; };
    const int walk0 = first_key(start);
    const int steps = (last_row - walk0) / Cfg::kBlockN + 1;

    const uint32_t base = (smem_address(smem) + 1023) & ~1023u;
    const uint32_t q_tile = base;
    const uint32_t stages = q_tile + Cfg::kQBytes;
    const StagedBarriers<Cfg::kStages> barriers{stages + Cfg::kStages * Cfg::kStageBytes};
    const uint32_t q_full = barriers.once();
    auto full = [&](int s) { return barriers.full(s); };
    auto empty = [&](int s) { return barriers.empty(s); };
    // kUnion: the step slots and the producer warps' minima, after the barriers (generic-proxy addresses).
    unsigned char* schedule = smem + (q_full + Cfg::kBarrierBytes - smem_address(smem));
    StepSlot* slots = reinterpret_cast<StepSlot*>(schedule);
    unsigned* minima = reinterpret_cast<unsigned*>(schedule + Cfg::kStages * sizeof(StepSlot));  // [2][4]

    const int group = threadIdx.x / 128, thread_in_group = threadIdx.x % 128;
    barriers.init(Cfg::kConsumers);

    if (group == 0) {
        // ---------------------------------------------------------------- producer
        setmaxnreg_dec<Cfg::kProducerRegisters>();
        const long kv_stride = static_cast<long>(kv_heads) * HD;
        const uint16_t* k_head = k + (static_cast<long>(seq0) * kv_heads + hk) * HD;
        const uint16_t* v_head = v + (static_cast<long>(seq0) * kv_heads + hk) * HD;
        AsyncProducer producer;
        load_sw128_tile_async<Cfg::kBlockM, HD, 128>(q_tile, q + (static_cast<long>(seq0 + start) * heads + h) * HD,
                                                     static_cast<long>(heads) * HD, rows_valid, thread_in_group);
        producer.commit(q_full);
        // Step j: waits for its stage, publishes its slot (kUnion) and queues its K/V.
        auto load_step = [&](int j, int kind, int key0, uint32_t rows) {
            const int s = j % Cfg::kStages;
            if (j >= Cfg::kStages) producer.acquire(empty(s), ((j / Cfg::kStages) & 1) ^ 1);
            if constexpr (kUnion) {
                if (thread_in_group % 32 == 0) slots[s].rows[thread_in_group / 32] = rows;
                if (thread_in_group == 0) { slots[s].kind = kind; slots[s].key0 = key0; }
            }
            const int valid = seq_len - key0;  // only the last step can run past the sequence end
            const uint32_t k_tile = stages + s * Cfg::kStageBytes;
            load_sw128_tile_async<Cfg::kBlockN, HD, 128>(k_tile, k_head + key0 * kv_stride, kv_stride, valid,
                                                         thread_in_group);
            load_sw128_tile_async<Cfg::kBlockN, HD, 128>(k_tile + Cfg::kKVBytes, v_head + key0 * kv_stride,
                                                         kv_stride, valid, thread_in_group);
            producer.commit(full(s));
        };
        int j = 0;
        if constexpr (kUnion) {
            // Thread r follows row r's selection (ascending, -1 padded); each round takes the smallest chunk any
            // row still has, with the rows that selected it.
            constexpr int kDone = 0x7fffffff;
            const int* row_sel = thread_in_group < rows_valid
                    ? sel + (static_cast<long>(seq0 + start + thread_in_group) * heads + h) * width : nullptr;
            int cursor = 0;
            auto head_of = [&]() {
                if (row_sel == nullptr || cursor >= width) return kDone;
                const int c = row_sel[cursor];
                return c < 0 ? kDone : c;
            };
            int head = head_of();
            const int warp = thread_in_group / 32;
            for (int round = 0;; ++round) {
                const unsigned warp_min = __reduce_min_sync(0xffffffffu, static_cast<unsigned>(head));
                unsigned* m = minima + 4 * (round & 1);  // two buffers: a fast warp never overwrites unread minima
                if (thread_in_group % 32 == 0) m[warp] = warp_min;
                named_barrier_sync(1, 128);
                const unsigned chunk = min(min(m[0], m[1]), min(m[2], m[3]));
                if (chunk == static_cast<unsigned>(kDone)) break;
                const uint32_t rows = __ballot_sync(0xffffffffu, head == static_cast<int>(chunk));
                if (head == static_cast<int>(chunk)) { ++cursor; head = head_of(); }
                const int chunk0 = static_cast<int>(chunk) * chunk_size;
                for (int key0 = chunk0; key0 < chunk0 + chunk_size; key0 += Cfg::kBlockN)
                    load_step(j++, StepSlot::kSelected, key0, rows);
            }
        }
        for (int key0 = walk0; key0 <= last_row; key0 += Cfg::kBlockN) load_step(j++, StepSlot::kOwn, key0, ~0u);
        if constexpr (kUnion) {  // an empty slot that tells the consumers the walk is over
            const int s = j % Cfg::kStages;
            if (j >= Cfg::kStages) producer.acquire(empty(s), ((j / Cfg::kStages) & 1) ^ 1);
            if (thread_in_group == 0) slots[s].kind = StepSlot::kEnd;
            producer.flush();
            mbarrier_arrive(full(s));
        }
        producer.flush();
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
        const uint32_t q_rows = q_tile + consumer * 64 * 128;
        mbarrier_wait(q_full, 0);
        for (int j = 0; kUnion || j < steps; ++j) {
            const int s = j % Cfg::kStages;
            const uint32_t k_tile = stages + s * Cfg::kStageBytes, v_tile = k_tile + Cfg::kKVBytes;
            mbarrier_wait(full(s), (j / Cfg::kStages) & 1);
            int key0 = walk0 + j * Cfg::kBlockN;
            bool selected_step = false;
            uint64_t seen = ~0ull;  // this warpgroup's 64 rows that see the step (bit = row - consumer * 64)
            if constexpr (kUnion) {
                const int kind = slots[s].kind;
                if (kind == StepSlot::kEnd) break;
                key0 = slots[s].key0;
                selected_step = kind == StepSlot::kSelected;
                seen = static_cast<uint64_t>(slots[s].rows[2 * consumer + 1]) << 32 | slots[s].rows[2 * consumer];
                if (seen == 0) {  // none of this warpgroup's rows selected the chunk
                    mbarrier_arrive(empty(s));
                    continue;
                }
            }
            float sacc[Cfg::kBlockN / 8][4];
            wgmma_scores<DT, HD, Cfg::kBlockN, Cfg::kBlockM>(sacc, q_rows, k_tile);
            if (selected_step) {
                // A selected chunk lies wholly in the past: a row sees all of this step or none of it.
                if (seen != ~0ull) {
                    int key_first[2], key_last[2];
#pragma unroll
                    for (int i = 0; i < 2; ++i) {
                        const bool sees = (seen >> (row_in_tile[i] - consumer * 64)) & 1;
                        key_first[i] = sees ? 0 : Cfg::kBlockN;
                        key_last[i] = sees ? Cfg::kBlockN - 1 : -1;
                    }
                    Rows::mask(sacc, key_first, key_last);
                }
            } else if (key0 + Cfg::kBlockN - 1 > start || key0 < first_key_of_last_row) {
                // Masking only where some row's range starts or ends inside this step.
                const int key_first[2] = {row_first[0] - key0, row_first[1] - key0};
                const int key_last[2] = {row_last[0] - key0, row_last[1] - key0};
                Rows::mask(sacc, key_first, key_last);
            }
            rows.softmax_step(sacc, scale_log2);
            wgmma_pv<DT, HD, Cfg::kBlockN>(rows.acc_o, sacc, v_tile);
            mbarrier_arrive(empty(s));
        }

        long row_token[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) row_token[i] = row_in_tile[i] < rows_valid ? seq0 + start + row_in_tile[i] : -1;
        const int merged_width = walks_prefix(start + consumer * 64) ? 0 : width;
        write_rows<DT, HD, kCombine>(rows, row_token, h, heads, merged_width, sel, partial_o, partial_lse, out, lse);
    }
#else
    __trap();  // launched only on sm_90a devices
#endif
}

// Shared-memory bytes of GatheredBarriers<q_stages, kv_stages>: 8 per mbarrier, a full/empty pair per stage.
constexpr int gathered_barrier_bytes(int q_stages, int kv_stages) { return 8 * 2 * (q_stages + kv_stages); }

#ifdef MOBA_SM90A
// The mbarriers of the gathered sm_90a kernels, 8 bytes each from `base`: a full/empty pair per query stage, then
// per key stage. The producer warpgroup's 128 threads publish a stage (full); the consumers release it (empty, 128
// arrivals per consumer warpgroup).
template <int Q_STAGES, int KV_STAGES>
struct GatheredBarriers {
    uint32_t base;
    __device__ __forceinline__ uint32_t q_full(int s) const { return base + 8 * s; }
    __device__ __forceinline__ uint32_t q_empty(int s) const { return base + 8 * (Q_STAGES + s); }
    __device__ __forceinline__ uint32_t kv_full(int s) const { return base + 8 * (2 * Q_STAGES + s); }
    __device__ __forceinline__ uint32_t kv_empty(int s) const { return base + 8 * (2 * Q_STAGES + KV_STAGES + s); }
    // Thread 0 initialises them, then the block syncs.
    __device__ __forceinline__ void init(int consumers) const {
        if (threadIdx.x == 0) {
            for (int s = 0; s < Q_STAGES; ++s) {
                mbarrier_init(q_full(s), 128);
                mbarrier_init(q_empty(s), 128 * consumers);
            }
            for (int s = 0; s < KV_STAGES; ++s) {
                mbarrier_init(kv_full(s), 128);
                mbarrier_init(kv_empty(s), 128 * consumers);
            }
        }
        __syncthreads();
    }
};
#endif  // MOBA_SM90A

// Gathers query rows into an sw128 tile of ROWS rows with cp.async: tile row r is the query (head h) of entry
// entries[r] (token = entry / entries_per_token), rows at or past tile_rows zero-filled. The 128 threads of a producer
// warpgroup take a quad per row and ROWS / 32 rows each: each row's entry is read and divided once (32 bits), and a
// warp's cp.async covers 8 rows x 64 contiguous bytes.
template <int HD, int ROWS>
__device__ __forceinline__ void gather_query_tile_async(uint32_t tile, const uint16_t* __restrict__ q,
                                                        const int* __restrict__ entries, int tile_rows,
                                                        unsigned entries_per_token, int heads, int h, int thread) {
    constexpr int kPasses = ROWS / 32, kVectorsPerLane = HD / 32;
    const uint16_t* src[kPasses];
#pragma unroll
    for (int pass = 0; pass < kPasses; ++pass) {  // every entry read before the first copy
        const int r = pass * 32 + thread / 4;
        const unsigned token = r < tile_rows ? static_cast<unsigned>(entries[r]) / entries_per_token : 0u;
        src[pass] = q + (static_cast<long>(token) * heads + h) * HD;
    }
#pragma unroll
    for (int pass = 0; pass < kPasses; ++pass) {
        const int r = pass * 32 + thread / 4;
#pragma unroll
        for (int j = 0; j < kVectorsPerLane; ++j) {
            const int vec = (thread & 3) + 4 * j;
            cp_async_16(tile + sw128_offset<ROWS>(r, vec * 8), src[pass] + vec * 8, r < tile_rows);
        }
    }
}

template <int HD>
struct HopperSelectedConfig {
    using Fwd = HopperFwdConfig<HD>;
    static constexpr int kQStages = 3;
    static constexpr int kKVStages = 2;
    static constexpr int kBarrierBytes = gathered_barrier_bytes(kQStages, kKVStages);
    static constexpr int kSmemBytes = 1024 + kQStages * Fwd::kQBytes + kKVStages * Fwd::kStageBytes + kBarrierBytes;
    static_assert(kSmemBytes <= 227 * 1024, "fits an H100 block's shared memory");
};

template <class DT, int HD>
__device__ __forceinline__ void attn_selected_hopper(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                                                     const uint16_t* __restrict__ v, const int* __restrict__ cu_seqlens,
                                                     const int* __restrict__ chunk_base, int num_sequences,
                                                     const int* __restrict__ bucket_row0,
                                                     const int* __restrict__ bucket_group0,
                                                     const int* __restrict__ rows_of_buckets, int rows_per_group,
                                                     uint16_t* __restrict__ partial_o, float* __restrict__ partial_lse,
                                                     int heads, int kv_heads, int width, int chunk_size,
                                                     int num_full_chunks, float scale) {
#ifdef MOBA_SM90A
    using Fwd = HopperFwdConfig<HD>;
    using Cfg = HopperSelectedConfig<HD>;
    using Rows = FlashRows<DT, HD, Fwd::kBlockN>;
    extern __shared__ __align__(128) unsigned char smem[];  // re-aligned to 1024 below (swizzled tiles)

    const BucketGroup grp = BucketGroup::of_block(bucket_row0, bucket_group0, chunk_base, cu_seqlens, num_sequences,
                                                  heads, kv_heads, num_full_chunks, chunk_size, rows_per_group);
    if (!grp.valid) return;
    const int h = grp.h, hk = grp.hk, group_rows = grp.rows;
    const int* entries = rows_of_buckets + grp.first;  // entry e = (t * H + h) * W + slot
    const unsigned entries_per_token = static_cast<unsigned>(heads * width);
    const int q_tiles = (group_rows + Fwd::kBlockM - 1) / Fwd::kBlockM;
    const int blocks = (chunk_size + Fwd::kBlockN - 1) / Fwd::kBlockN;  // key steps; the last may be half (C % 128 = 64)
    const bool resident = blocks <= Cfg::kKVStages;

    const uint32_t base = (smem_address(smem) + 1023) & ~1023u;
    const uint32_t q_stages = base, kv_stages = q_stages + Cfg::kQStages * Fwd::kQBytes;
    const uint32_t bars = kv_stages + Cfg::kKVStages * Fwd::kStageBytes;
    const GatheredBarriers<Cfg::kQStages, Cfg::kKVStages> barriers{bars};
    // Key step n of the flat (tile, block) sequence: its stage and the phase parity of that stage's barriers.
    auto kv_stage = [&](int n) { return resident ? n % blocks : n % Cfg::kKVStages; };
    auto kv_parity = [&](int n) { return resident ? 0 : (n / Cfg::kKVStages) & 1; };

    const int group = threadIdx.x / 128, thread_in_group = threadIdx.x % 128;
    barriers.init(Fwd::kConsumers);

    if (group == 0) {
        // ---------------------------------------------------------------- producer
        setmaxnreg_dec<Fwd::kProducerRegisters>();
        const long kv_stride = static_cast<long>(kv_heads) * HD;
        const uint16_t* k_chunk = k + (grp.key0 * kv_heads + hk) * HD;
        const uint16_t* v_chunk = v + (grp.key0 * kv_heads + hk) * HD;
        AsyncProducer producer;
        auto load_keys = [&](int block, int stage) {
            const uint32_t kt = kv_stages + stage * Fwd::kStageBytes;
            const long offset = static_cast<long>(block) * Fwd::kBlockN * kv_stride;
            const int valid = min(Fwd::kBlockN, chunk_size - block * Fwd::kBlockN);
            load_sw128_tile_async<Fwd::kBlockN, HD, 128>(kt, k_chunk + offset, kv_stride, valid, thread_in_group);
            load_sw128_tile_async<Fwd::kBlockN, HD, 128>(kt + Fwd::kKVBytes, v_chunk + offset, kv_stride, valid,
                                                         thread_in_group);
            producer.commit(barriers.kv_full(stage));
        };
        if (resident)
            for (int b = 0; b < blocks; ++b) load_keys(b, b);
        for (int t = 0; t < q_tiles; ++t) {
            const int qs = t % Cfg::kQStages;
            if (t >= Cfg::kQStages) producer.acquire(barriers.q_empty(qs), ((t / Cfg::kQStages) & 1) ^ 1);
            gather_query_tile_async<HD, Fwd::kBlockM>(q_stages + qs * Fwd::kQBytes, q, entries + t * Fwd::kBlockM,
                                                      min(Fwd::kBlockM, group_rows - t * Fwd::kBlockM),
                                                      entries_per_token, heads, h, thread_in_group);
            producer.commit(barriers.q_full(qs));
            if (!resident) {
                for (int b = 0; b < blocks; ++b) {
                    const int n = t * blocks + b, ks = kv_stage(n);
                    if (n >= Cfg::kKVStages) producer.acquire(barriers.kv_empty(ks), kv_parity(n) ^ 1);
                    load_keys(b, ks);
                }
            }
        }
        producer.flush();
    } else {
        // ---------------------------------------------------------------- consumers
        setmaxnreg_inc<Fwd::kConsumerRegisters>();
        const int consumer = group - 1, warp = thread_in_group / 32, lane = threadIdx.x & 31;
        const float scale_log2 = scale * kLog2e;
        for (int t = 0; t < q_tiles; ++t) {
            const int qs = t % Cfg::kQStages;
            mbarrier_wait(barriers.q_full(qs), (t / Cfg::kQStages) & 1);
            const uint32_t q_rows = q_stages + qs * Fwd::kQBytes + consumer * 64 * 128;
            Rows rows;
            for (int b = 0; b < blocks; ++b) {
                const int n = t * blocks + b, ks = kv_stage(n);
                const uint32_t k_tile = kv_stages + ks * Fwd::kStageBytes, v_tile = k_tile + Fwd::kKVBytes;
                mbarrier_wait(barriers.kv_full(ks), kv_parity(n));
                float sacc[Fwd::kBlockN / 8][4];
                wgmma_scores<DT, HD, Fwd::kBlockN, Fwd::kBlockM>(sacc, q_rows, k_tile);
                const int keys = chunk_size - b * Fwd::kBlockN;  // a selected chunk lies wholly in the past: no causal mask
                if (keys < Fwd::kBlockN) {
                    const int key_first[2] = {0, 0}, key_last[2] = {keys - 1, keys - 1};
                    Rows::mask(sacc, key_first, key_last);
                }
                rows.softmax_step(sacc, scale_log2);
                wgmma_pv<DT, HD, Fwd::kBlockN>(rows.acc_o, sacc, v_tile);
                if (!resident) mbarrier_arrive(barriers.kv_empty(ks));
            }
            mbarrier_arrive(barriers.q_empty(qs));
            const int row0 = t * Fwd::kBlockM + consumer * 64 + warp * 16 + (lane >> 2);
            const int entry[2] = {row0 < group_rows ? entries[row0] : -1, row0 + 8 < group_rows ? entries[row0 + 8] : -1};
            write_partial_rows<DT, HD>(rows, entry, partial_o, partial_lse);
        }
    }
#else
    __trap();  // launched only on sm_90a devices
#endif
}

// The gathered kernel for chunks that fit one 128-key stage (C <= 128), persistent: block b takes the groups b,
// b + gridDim.x, ... in turn. Each group's chunk is loaded once into one of two K/V stages, so the next group's keys
// land while this group's query tiles run, and the query tiles of all the block's groups stream through three
// stages without a break between groups. The producer looks each group up (BucketGroup::of, warp searches) and
// hands the consumers its rows through a slot beside the chunk's stage; a slot with no rows ends the walk. A
// consumer warpgroup whose 64 rows all lie past the group's end skips the tile's GEMMs. Each row's result depends
// only on its query and the chunk, so the order of groups changes no bit of the output.
struct ResidentGroupSlot {
    int first;  // the group's first row in rows_of_buckets
    int rows;   // its rows; 0: no more groups
};

template <int HD>
struct HopperResidentConfig {
    using Fwd = HopperFwdConfig<HD>;
    static constexpr int kQStages = 3;
    static constexpr int kKVStages = 2;  // one chunk each: this group's and the next one's
    static constexpr int kBarrierBytes = gathered_barrier_bytes(kQStages, kKVStages);
    static constexpr int kSlotBytes =
            kKVStages * static_cast<int>(sizeof(ResidentGroupSlot)) + 4 * static_cast<int>(sizeof(BucketGroup));
    static constexpr int kSmemBytes =
            1024 + kQStages * Fwd::kQBytes + kKVStages * Fwd::kStageBytes + kBarrierBytes + kSlotBytes;
    static_assert(kSmemBytes <= 227 * 1024, "fits an H100 block's shared memory");
};

template <class DT, int HD>
__device__ __forceinline__ void attn_selected_resident_hopper(
        const uint16_t* __restrict__ q, const uint16_t* __restrict__ k, const uint16_t* __restrict__ v,
        const int* __restrict__ cu_seqlens, const int* __restrict__ chunk_base, int num_sequences,
        const int* __restrict__ bucket_row0, const int* __restrict__ bucket_group0,
        const int* __restrict__ rows_of_buckets, int rows_per_group, uint16_t* __restrict__ partial_o,
        float* __restrict__ partial_lse, int heads, int kv_heads, int width, int chunk_size, int num_full_chunks,
        float scale) {
#ifdef MOBA_SM90A
    using Fwd = HopperFwdConfig<HD>;
    using Cfg = HopperResidentConfig<HD>;
    using Rows = FlashRows<DT, HD, Fwd::kBlockN>;
    extern __shared__ __align__(128) unsigned char smem[];  // re-aligned to 1024 below (swizzled tiles)

    const uint32_t base = (smem_address(smem) + 1023) & ~1023u;
    const uint32_t q_stages = base, kv_stages = q_stages + Cfg::kQStages * Fwd::kQBytes;
    const uint32_t bars = kv_stages + Cfg::kKVStages * Fwd::kStageBytes;
    const GatheredBarriers<Cfg::kQStages, Cfg::kKVStages> barriers{bars};
    ResidentGroupSlot* slots =
            reinterpret_cast<ResidentGroupSlot*>(smem + (bars + Cfg::kBarrierBytes - smem_address(smem)));
    BucketGroup* lookups = reinterpret_cast<BucketGroup*>(slots + Cfg::kKVStages);  // [4], the producer's

    const int group = threadIdx.x / 128, thread_in_group = threadIdx.x % 128;
    barriers.init(Fwd::kConsumers);

    if (group == 0) {
        // ---------------------------------------------------------------- producer
        setmaxnreg_dec<Fwd::kProducerRegisters>();
        const long kv_stride = static_cast<long>(kv_heads) * HD;
        const unsigned entries_per_token = static_cast<unsigned>(heads * width);
        const int keys = min(chunk_size, Fwd::kBlockN);
        AsyncProducer producer;
        int t = 0;  // the block's query tiles so far
        for (int n = 0;; ++n) {
            // Every 4 groups, the producer's 4 warps look up the next 4 at once (one chain of dependent loads
            // instead of four) into a table that the producer alone reads.
            if (n % 4 == 0) {
                named_barrier_sync(1, 128);  // the last round's entries have been read
                const int w = thread_in_group / 32;
                const BucketGroup looked_up = BucketGroup::of<true>(
                        blockIdx.x + (n + w) * gridDim.x, bucket_row0, bucket_group0, chunk_base, cu_seqlens,
                        num_sequences, heads, kv_heads, num_full_chunks, chunk_size, rows_per_group);
                if (thread_in_group % 32 == 0) lookups[w] = looked_up;
                named_barrier_sync(1, 128);
            }
            const BucketGroup grp = lookups[n % 4];
            const int ks = n % Cfg::kKVStages;
            if (n >= Cfg::kKVStages) producer.acquire(barriers.kv_empty(ks), ((n / Cfg::kKVStages) & 1) ^ 1);
            if (thread_in_group == 0) slots[ks] = ResidentGroupSlot{grp.first, grp.valid ? grp.rows : 0};
            if (!grp.valid) {
                producer.flush();
                mbarrier_arrive(barriers.kv_full(ks));
                break;
            }
            const uint32_t kt = kv_stages + ks * Fwd::kStageBytes;
            const long chunk = (grp.key0 * kv_heads + grp.hk) * HD;
            load_sw128_tile_async<Fwd::kBlockN, HD, 128>(kt, k + chunk, kv_stride, keys, thread_in_group);
            load_sw128_tile_async<Fwd::kBlockN, HD, 128>(kt + Fwd::kKVBytes, v + chunk, kv_stride, keys,
                                                         thread_in_group);
            producer.commit(barriers.kv_full(ks));
            const int* entries = rows_of_buckets + grp.first;  // entry e = (t * H + h) * W + slot
            for (int row0 = 0; row0 < grp.rows; row0 += Fwd::kBlockM, ++t) {
                const int qs = t % Cfg::kQStages;
                if (t >= Cfg::kQStages) producer.acquire(barriers.q_empty(qs), ((t / Cfg::kQStages) & 1) ^ 1);
                gather_query_tile_async<HD, Fwd::kBlockM>(q_stages + qs * Fwd::kQBytes, q, entries + row0,
                                                          min(Fwd::kBlockM, grp.rows - row0), entries_per_token,
                                                          heads, grp.h, thread_in_group);
                producer.commit(barriers.q_full(qs));
            }
        }
        producer.flush();
    } else {
        // ---------------------------------------------------------------- consumers
        setmaxnreg_inc<Fwd::kConsumerRegisters>();
        const int consumer = group - 1, warp = thread_in_group / 32, lane = threadIdx.x & 31;
        const float scale_log2 = scale * kLog2e;
        const int keys = min(chunk_size, Fwd::kBlockN);
        int t = 0;
        for (int n = 0;; ++n) {
            const int ks = n % Cfg::kKVStages;
            mbarrier_wait(barriers.kv_full(ks), (n / Cfg::kKVStages) & 1);
            const ResidentGroupSlot slot = slots[ks];
            if (slot.rows == 0) break;
            const int* entries = rows_of_buckets + slot.first;
            const uint32_t k_tile = kv_stages + ks * Fwd::kStageBytes, v_tile = k_tile + Fwd::kKVBytes;
            for (int row0 = 0; row0 < slot.rows; row0 += Fwd::kBlockM, ++t) {
                const int qs = t % Cfg::kQStages;
                const int mine = row0 + consumer * 64 + warp * 16 + (lane >> 2);
                // Read before the wait, so that the epilogue's stores never wait on these loads.
                const int entry[2] = {mine < slot.rows ? entries[mine] : -1,
                                      mine + 8 < slot.rows ? entries[mine + 8] : -1};
                const bool active = row0 + consumer * 64 < slot.rows;  // uniform over the warpgroup
                mbarrier_wait(barriers.q_full(qs), (t / Cfg::kQStages) & 1);
                Rows rows;
                if (active) {
                    float sacc[Fwd::kBlockN / 8][4];
                    const uint32_t q_rows = q_stages + qs * Fwd::kQBytes + consumer * 64 * 128;
                    wgmma_scores<DT, HD, Fwd::kBlockN, Fwd::kBlockM>(sacc, q_rows, k_tile);
                    if (keys < Fwd::kBlockN) {  // C = 64: the stage's upper keys are zero-filled, not the chunk's
                        const int key_first[2] = {0, 0}, key_last[2] = {keys - 1, keys - 1};
                        Rows::mask(sacc, key_first, key_last);
                    }
                    rows.softmax_step(sacc, scale_log2);
                    wgmma_pv<DT, HD, Fwd::kBlockN>(rows.acc_o, sacc, v_tile);
                }
                mbarrier_arrive(barriers.q_empty(qs));
                if (active) write_partial_rows<DT, HD>(rows, entry, partial_o, partial_lse);
            }
            mbarrier_arrive(barriers.kv_empty(ks));
        }
    }
#else
    __trap();  // launched only on sm_90a devices
#endif
}

}  // namespace moba
