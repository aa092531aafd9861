// The exported MoBA kernels: one extern "C" entry point per (kernel family, dtype, head dim).
// Launch rules and parameter lists: ABI.md beside this file.
#include "moba_attn_bwd.cuh"
#include "moba_attn_fwd.cuh"
#include "moba_attn_fwd_hopper.cuh"
#include "moba_attn_selected.cuh"
#include "moba_bwd_hopper.cuh"
#include "moba_chunk_mean.cuh"
#include "moba_gate.cuh"
#include "moba_route.cuh"

#define MOBA_CHUNK_MEAN(NAME, DT)                                                                        \
    extern "C" __global__ void __launch_bounds__(moba::ChunkMeanConfig::kThreads)                        \
        NAME(const uint16_t* k, const int* cu_seqlens, const int* chunk_base, int num_sequences,       \
             int kv_heads, int head_dim, int chunk_size, float* mu, uint16_t* mu_planes, float* mu_unscale) { \
        moba::chunk_mean<DT>(k, cu_seqlens, chunk_base, num_sequences, kv_heads, head_dim, chunk_size, mu,   \
                             mu_planes, mu_unscale);                                                     \
    }

#define MOBA_GATE(NAME, DT, HD)                                                                          \
    extern "C" __global__ void __launch_bounds__(moba::GateConfig<HD>::kThreads)                         \
        NAME(const uint16_t* q, const uint16_t* mu_planes, const float* mu_unscale, const int* cu_seqlens, \
             const int* chunk_base, const int2* tiles, int* sel, float* sel_score, int width, int slot_begin, \
             int heads, int kv_heads, int chunk_size, int num_full_chunks) {                             \
        moba::gate_topk<DT, HD>(q, mu_planes, mu_unscale, cu_seqlens, chunk_base, tiles, sel, sel_score, width, \
                                slot_begin, heads, kv_heads, chunk_size, num_full_chunks);               \
    }

#define MOBA_ATTN_FWD(NAME, DT, HD)                                                                      \
    extern "C" __global__ void __launch_bounds__(moba::FlashConfig<HD>::kThreads, 2)                     \
        NAME(const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* out, float* lse,         \
             const int* cu_seqlens, const int* sel, int width, const int2* tiles, int num_tiles, int heads, \
             int kv_heads, int chunk_size, float scale, int dense) {                                     \
        (void)num_tiles; /* the grid's x extent; kept in the ABI for launch-side validation */           \
        moba::attn_fwd<DT, HD, false>(q, k, v, out, lse, cu_seqlens, sel, width, tiles, heads, kv_heads, \
                                      chunk_size, scale, dense, nullptr, nullptr);                       \
    }

#define MOBA_ATTN_OWN_COMBINE(NAME, DT, HD)                                                              \
    extern "C" __global__ void __launch_bounds__(moba::FlashConfig<HD>::kThreads, 2)                     \
        NAME(const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* out, float* lse,         \
             const int* cu_seqlens, const int* sel, int width, const int2* tiles, int heads, int kv_heads, \
             int chunk_size, float scale, const uint16_t* partial_o, const float* partial_lse) {        \
        moba::attn_fwd<DT, HD, true>(q, k, v, out, lse, cu_seqlens, sel, width, tiles, heads, kv_heads,  \
                                     chunk_size, scale, 0, partial_o, partial_lse);                      \
    }

#define MOBA_ATTN_SELECTED(NAME, DT, HD)                                                                 \
    extern "C" __global__ void __launch_bounds__(moba::FlashConfig<HD>::kThreads, 2)                     \
        NAME(const uint16_t* q, const uint16_t* k, const uint16_t* v, const int* cu_seqlens,             \
             const int* chunk_base, int num_sequences, const int* bucket_row0, const int* bucket_group0, \
             const int* rows, int rows_per_group, uint16_t* partial_o, float* partial_lse, int heads,     \
             int kv_heads, int width, int chunk_size, int num_full_chunks, float scale) {                \
        moba::attn_selected<DT, HD>(q, k, v, cu_seqlens, chunk_base, num_sequences, bucket_row0, bucket_group0, \
                                    rows, rows_per_group, partial_o, partial_lse, heads, kv_heads, width, \
                                    chunk_size, num_full_chunks, scale);                                 \
    }

MOBA_CHUNK_MEAN(moba_chunk_mean_fp16, moba::Fp16)
MOBA_CHUNK_MEAN(moba_chunk_mean_bf16, moba::Bf16)

MOBA_GATE(moba_gate_topk_fp16_d64, moba::Fp16, 64)
MOBA_GATE(moba_gate_topk_fp16_d128, moba::Fp16, 128)
MOBA_GATE(moba_gate_topk_bf16_d64, moba::Bf16, 64)
MOBA_GATE(moba_gate_topk_bf16_d128, moba::Bf16, 128)

// The gate's geometry (tile rows, threads) does not depend on the head dim: one kernel for both.
static_assert(moba::GateConfig<64>::kBlockM == moba::GateConfig<128>::kBlockM &&
                  moba::GateConfig<64>::kThreads == moba::GateConfig<128>::kThreads,
              "moba_sel_all_past walks the gate's tiles for every head dim");
extern "C" __global__ void __launch_bounds__(moba::GateConfig<128>::kThreads)
    moba_sel_all_past(const int* cu_seqlens, const int2* tiles, int* sel, int width, int heads, int chunk_size) {
    moba::select_all_past<128>(cu_seqlens, tiles, sel, width, heads, chunk_size);
}

extern "C" __global__ void __launch_bounds__(moba::SortConfig::kThreads) moba_sel_sort(int* sel, int width) {
    moba::sort_selection(sel, width);
}

extern "C" __global__ void __launch_bounds__(moba::RouteConfig::kThreads)
    moba_route_count(const int* sel, const int* cu_seqlens, const int* chunk_base, int num_sequences, int heads,
                     int width, int num_full_chunks, int entries, int chunk_size, int* bucket_count) {
    moba::route_count(sel, cu_seqlens, chunk_base, num_sequences, heads, width, num_full_chunks, entries, chunk_size,
                      bucket_count);
}
extern "C" __global__ void __launch_bounds__(moba::RouteConfig::kScanThreads)
    moba_route_scan(const int* bucket_count, int num_buckets, int rows_per_group, int* bucket_row0, int* bucket_group0,
                    int* bucket_cursor) {
    moba::route_scan(bucket_count, num_buckets, rows_per_group, bucket_row0, bucket_group0, bucket_cursor);
}
extern "C" __global__ void __launch_bounds__(moba::RouteConfig::kThreads)
    moba_route_fill(const int* sel, const int* cu_seqlens, const int* chunk_base, int num_sequences, int heads,
                    int width, int num_full_chunks, int entries, int chunk_size, int* bucket_cursor, int* rows) {
    moba::route_fill(sel, cu_seqlens, chunk_base, num_sequences, heads, width, num_full_chunks, entries, chunk_size,
                     bucket_cursor, rows);
}

MOBA_ATTN_FWD(moba_attn_fwd_fp16_d64, moba::Fp16, 64)
MOBA_ATTN_FWD(moba_attn_fwd_fp16_d128, moba::Fp16, 128)
MOBA_ATTN_FWD(moba_attn_fwd_bf16_d64, moba::Bf16, 64)
MOBA_ATTN_FWD(moba_attn_fwd_bf16_d128, moba::Bf16, 128)

MOBA_ATTN_SELECTED(moba_attn_selected_fp16_d64, moba::Fp16, 64)
MOBA_ATTN_SELECTED(moba_attn_selected_fp16_d128, moba::Fp16, 128)
MOBA_ATTN_SELECTED(moba_attn_selected_bf16_d64, moba::Bf16, 64)
MOBA_ATTN_SELECTED(moba_attn_selected_bf16_d128, moba::Bf16, 128)

MOBA_ATTN_OWN_COMBINE(moba_attn_own_combine_fp16_d64, moba::Fp16, 64)
MOBA_ATTN_OWN_COMBINE(moba_attn_own_combine_fp16_d128, moba::Fp16, 128)
MOBA_ATTN_OWN_COMBINE(moba_attn_own_combine_bf16_d64, moba::Bf16, 64)
MOBA_ATTN_OWN_COMBINE(moba_attn_own_combine_bf16_d128, moba::Bf16, 128)

// ------------------------------------------------------------------------------------------ sm_90a forward
// 128-row query tiles (ABI.md, "Hopper forward"); empty on other targets.
#define MOBA_ATTN_FWD_HOPPER(NAME, DT, HD)                                                               \
    extern "C" __global__ void __launch_bounds__(moba::HopperFwdConfig<HD>::kThreads, 1)                 \
        NAME(const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* out, float* lse,         \
             const int* cu_seqlens, const int2* tiles, int heads, int kv_heads, int chunk_size, float scale, \
             int dense) {                                                                                \
        moba::attn_fwd_hopper<DT, HD, false>(q, k, v, out, lse, cu_seqlens, nullptr, 0, tiles, heads, kv_heads, \
                                             chunk_size, scale, dense, nullptr, nullptr);                \
    }

// MoBA without routing: each 128-row tile walks the union of its rows' selected chunks, then its own chunk
// (chunk_size % 128 == 0).
#define MOBA_ATTN_UNION_HOPPER(NAME, DT, HD)                                                             \
    extern "C" __global__ void __launch_bounds__(moba::HopperFwdConfig<HD>::kThreads, 1)                 \
        NAME(const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* out, float* lse,         \
             const int* cu_seqlens, const int* sel, int width, const int2* tiles, int heads, int kv_heads, \
             int chunk_size, float scale) {                                                              \
        moba::attn_fwd_hopper<DT, HD, false, true>(q, k, v, out, lse, cu_seqlens, sel, width, tiles, heads, \
                                                   kv_heads, chunk_size, scale, 0, nullptr, nullptr);    \
    }

#define MOBA_ATTN_OWN_COMBINE_HOPPER(NAME, DT, HD)                                                       \
    extern "C" __global__ void __launch_bounds__(moba::HopperFwdConfig<HD>::kThreads, 1)                 \
        NAME(const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* out, float* lse,         \
             const int* cu_seqlens, const int* sel, int width, const int2* tiles, int heads, int kv_heads, \
             int chunk_size, float scale, const uint16_t* partial_o, const float* partial_lse) {        \
        moba::attn_fwd_hopper<DT, HD, true>(q, k, v, out, lse, cu_seqlens, sel, width, tiles, heads, kv_heads, \
                                            chunk_size, scale, 0, partial_o, partial_lse);               \
    }

// The gathered kernels on sm_90a: one group per block (KERNEL = attn_selected_hopper, any chunk) or persistent over
// the groups with the chunk resident (attn_selected_resident_hopper, chunk_size <= 128; grid: at most one block per SM).
#define MOBA_ATTN_SELECTED_HOPPER(NAME, KERNEL, DT, HD)                                                  \
    extern "C" __global__ void __launch_bounds__(moba::HopperFwdConfig<HD>::kThreads, 1)                 \
        NAME(const uint16_t* q, const uint16_t* k, const uint16_t* v, const int* cu_seqlens,             \
             const int* chunk_base, int num_sequences, const int* bucket_row0, const int* bucket_group0, \
             const int* rows, int rows_per_group, uint16_t* partial_o, float* partial_lse, int heads,     \
             int kv_heads, int width, int chunk_size, int num_full_chunks, float scale) {                \
        moba::KERNEL<DT, HD>(q, k, v, cu_seqlens, chunk_base, num_sequences, bucket_row0, bucket_group0, rows, \
                             rows_per_group, partial_o, partial_lse, heads, kv_heads, width, chunk_size,  \
                             num_full_chunks, scale);                                                    \
    }

MOBA_ATTN_SELECTED_HOPPER(moba_attn_selected_h_fp16_d64, attn_selected_hopper, moba::Fp16, 64)
MOBA_ATTN_SELECTED_HOPPER(moba_attn_selected_h_fp16_d128, attn_selected_hopper, moba::Fp16, 128)
MOBA_ATTN_SELECTED_HOPPER(moba_attn_selected_h_bf16_d64, attn_selected_hopper, moba::Bf16, 64)
MOBA_ATTN_SELECTED_HOPPER(moba_attn_selected_h_bf16_d128, attn_selected_hopper, moba::Bf16, 128)
MOBA_ATTN_SELECTED_HOPPER(moba_attn_selected_resident_h_fp16_d64, attn_selected_resident_hopper, moba::Fp16, 64)
MOBA_ATTN_SELECTED_HOPPER(moba_attn_selected_resident_h_fp16_d128, attn_selected_resident_hopper, moba::Fp16, 128)
MOBA_ATTN_SELECTED_HOPPER(moba_attn_selected_resident_h_bf16_d64, attn_selected_resident_hopper, moba::Bf16, 64)
MOBA_ATTN_SELECTED_HOPPER(moba_attn_selected_resident_h_bf16_d128, attn_selected_resident_hopper, moba::Bf16, 128)

MOBA_ATTN_UNION_HOPPER(moba_attn_union_h_fp16_d64, moba::Fp16, 64)
MOBA_ATTN_UNION_HOPPER(moba_attn_union_h_fp16_d128, moba::Fp16, 128)
MOBA_ATTN_UNION_HOPPER(moba_attn_union_h_bf16_d64, moba::Bf16, 64)
MOBA_ATTN_UNION_HOPPER(moba_attn_union_h_bf16_d128, moba::Bf16, 128)

MOBA_ATTN_FWD_HOPPER(moba_attn_fwd_h_fp16_d64, moba::Fp16, 64)
MOBA_ATTN_FWD_HOPPER(moba_attn_fwd_h_fp16_d128, moba::Fp16, 128)
MOBA_ATTN_FWD_HOPPER(moba_attn_fwd_h_bf16_d64, moba::Bf16, 64)
MOBA_ATTN_FWD_HOPPER(moba_attn_fwd_h_bf16_d128, moba::Bf16, 128)

MOBA_ATTN_OWN_COMBINE_HOPPER(moba_attn_own_combine_h_fp16_d64, moba::Fp16, 64)
MOBA_ATTN_OWN_COMBINE_HOPPER(moba_attn_own_combine_h_fp16_d128, moba::Fp16, 128)
MOBA_ATTN_OWN_COMBINE_HOPPER(moba_attn_own_combine_h_bf16_d64, moba::Bf16, 64)
MOBA_ATTN_OWN_COMBINE_HOPPER(moba_attn_own_combine_h_bf16_d128, moba::Bf16, 128)

// ------------------------------------------------------------------------------------------ backward
#define MOBA_BWD_DELTA(NAME, DT)                                                                         \
    extern "C" __global__ void __launch_bounds__(moba::DeltaConfig::kThreads)                            \
        NAME(const uint16_t* out, const uint16_t* dout, float* delta, int rows, int head_dim) {          \
        moba::bwd_delta<DT>(out, dout, delta, rows, head_dim);                                           \
    }

#define MOBA_BWD_DQ_SELECTED(NAME, DT, HD)                                                               \
    extern "C" __global__ void __launch_bounds__(moba::BwdConfig<HD>::kThreads, 2)                       \
        NAME(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* dout, const float* lse, \
             const float* delta, const int* cu_seqlens, const int* chunk_base, int num_sequences,        \
             const int* bucket_row0, const int* bucket_group0, const int* rows, int rows_per_group,      \
             uint16_t* partial_dq, int heads, int kv_heads, int width, int chunk_size, int num_full_chunks, \
             float scale) {                                                                              \
        moba::bwd_dq_selected<DT, HD>(q, k, v, dout, lse, delta, cu_seqlens, chunk_base, num_sequences,  \
                                      bucket_row0, bucket_group0, rows, rows_per_group, partial_dq, heads, \
                                      kv_heads, width, chunk_size, num_full_chunks, scale);              \
    }

#define MOBA_BWD_DQ(NAME, DT, HD)                                                                        \
    extern "C" __global__ void __launch_bounds__(moba::BwdConfig<HD>::kThreads, 2)                       \
        NAME(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* dout, const float* lse, \
             const float* delta, uint16_t* dq, const int* cu_seqlens, const int* sel, int width,         \
             const int2* tiles, int heads, int kv_heads, int chunk_size, float scale, int dense,         \
             const uint16_t* partial_dq) {                                                               \
        moba::bwd_dq<DT, HD>(q, k, v, dout, lse, delta, dq, cu_seqlens, sel, width, tiles, heads, kv_heads, \
                             chunk_size, scale, dense, partial_dq);                                      \
    }

#define MOBA_BWD_DKDV(NAME, DT, HD)                                                                      \
    extern "C" __global__ void __launch_bounds__(moba::BwdConfig<HD>::kThreads, 2)                       \
        NAME(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* dout, const float* lse, \
             const float* delta, uint16_t* dk, uint16_t* dv, const int* cu_seqlens, const int* chunk_base, \
             const int2* tiles, const int* bucket_row0, const int* rows, int heads, int kv_heads, int width, \
             int chunk_size, int num_full_chunks, float scale, int dense) {                              \
        moba::bwd_dkdv<DT, HD>(q, k, v, dout, lse, delta, dk, dv, cu_seqlens, chunk_base, tiles, bucket_row0, \
                               rows, heads, kv_heads, width, chunk_size, num_full_chunks, scale, dense); \
    }

MOBA_BWD_DELTA(moba_bwd_delta_fp16, moba::Fp16)
MOBA_BWD_DELTA(moba_bwd_delta_bf16, moba::Bf16)

extern "C" __global__ void __launch_bounds__(moba::RouteConfig::kThreads)
    moba_bwd_route_count(const int* sel, const int* cu_seqlens, const int* chunk_base, int num_sequences, int heads,
                         int width, int num_full_chunks, int entries, int group_tokens, int num_groups,
                         int* group_count) {
    moba::bwd_route_count(sel, cu_seqlens, chunk_base, num_sequences, heads, width, num_full_chunks, entries,
                          group_tokens, num_groups, group_count);
}
extern "C" __global__ void __launch_bounds__(moba::BwdRouteConfig::kThreads)
    moba_bwd_route_totals(const int* group_count, int num_buckets, int num_groups, int* bucket_count) {
    moba::bwd_route_totals(group_count, num_buckets, num_groups, bucket_count);
}
extern "C" __global__ void __launch_bounds__(moba::BwdRouteConfig::kThreads)
    moba_bwd_route_place(int* group_count, const int* bucket_row0, int num_buckets, int num_groups) {
    moba::bwd_route_place(group_count, bucket_row0, num_buckets, num_groups);
}
extern "C" __global__ void __launch_bounds__(moba::BwdRouteConfig::kThreads)
    moba_bwd_route_fill(const int* sel, const int* cu_seqlens, const int* chunk_base, int num_sequences, int heads,
                        int width, int num_full_chunks, int num_tokens, int group_tokens, int num_groups,
                        int* group_count, int* rows) {
    moba::bwd_route_fill(sel, cu_seqlens, chunk_base, num_sequences, heads, width, num_full_chunks, num_tokens,
                         group_tokens, num_groups, group_count, rows);
}

MOBA_BWD_DQ_SELECTED(moba_bwd_dq_selected_fp16_d64, moba::Fp16, 64)
MOBA_BWD_DQ_SELECTED(moba_bwd_dq_selected_fp16_d128, moba::Fp16, 128)
MOBA_BWD_DQ_SELECTED(moba_bwd_dq_selected_bf16_d64, moba::Bf16, 64)
MOBA_BWD_DQ_SELECTED(moba_bwd_dq_selected_bf16_d128, moba::Bf16, 128)

MOBA_BWD_DQ(moba_bwd_dq_fp16_d64, moba::Fp16, 64)
MOBA_BWD_DQ(moba_bwd_dq_fp16_d128, moba::Fp16, 128)
MOBA_BWD_DQ(moba_bwd_dq_bf16_d64, moba::Bf16, 64)
MOBA_BWD_DQ(moba_bwd_dq_bf16_d128, moba::Bf16, 128)

MOBA_BWD_DKDV(moba_bwd_dkdv_fp16_d64, moba::Fp16, 64)
MOBA_BWD_DKDV(moba_bwd_dkdv_fp16_d128, moba::Fp16, 128)
MOBA_BWD_DKDV(moba_bwd_dkdv_bf16_d64, moba::Bf16, 64)
MOBA_BWD_DKDV(moba_bwd_dkdv_bf16_d128, moba::Bf16, 128)

// The sm_90a backward for chunk_size == 128 or dense attention (ABI.md, "Hopper backward"): one block per 128-key
// block (`blocks`: the forward's 128-row tiles) and kv head; dK, dV and the bucket rows' partial dQ. Empty elsewhere.
#define MOBA_BWD_FUSED_HOPPER(NAME, DT, HD)                                                              \
    extern "C" __global__ void __launch_bounds__(moba::HopperBwdConfig<HD>::kThreads, 1)                 \
        NAME(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* dout, const float* lse, \
             const float* delta, uint16_t* dk, uint16_t* dv, uint16_t* partial_dq, const int* cu_seqlens, \
             const int* chunk_base, const int2* blocks, const int* bucket_row0, const int* rows, int heads, \
             int kv_heads, int width, int chunk_size, int num_full_chunks, float scale, int dense) {    \
        moba::bwd_fused_hopper<DT, HD>(q, k, v, dout, lse, delta, dk, dv, partial_dq, cu_seqlens, chunk_base, \
                                       blocks, bucket_row0, rows, heads, kv_heads, width, chunk_size,     \
                                       num_full_chunks, scale, dense);                                   \
    }

// Step 9 on sm_90a: grid (num_wide_tiles, H) over the forward's 128-row tiles. Empty elsewhere.
#define MOBA_BWD_DQ_HOPPER(NAME, DT, HD)                                                                 \
    extern "C" __global__ void __launch_bounds__(moba::HopperDqConfig<HD>::kThreads, 1)                  \
        NAME(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* dout, const float* lse, \
             const float* delta, uint16_t* dq, const int* cu_seqlens, const int* sel, int width,         \
             const int2* tiles, int heads, int kv_heads, int chunk_size, float scale, int dense,         \
             const uint16_t* partial_dq) {                                                               \
        moba::bwd_dq_hopper<DT, HD>(q, k, v, dout, lse, delta, dq, cu_seqlens, sel, width, tiles, heads, kv_heads, \
                                    chunk_size, scale, dense, partial_dq);                              \
    }

MOBA_BWD_DQ_HOPPER(moba_bwd_dq_h_fp16_d64, moba::Fp16, 64)
MOBA_BWD_DQ_HOPPER(moba_bwd_dq_h_fp16_d128, moba::Fp16, 128)
MOBA_BWD_DQ_HOPPER(moba_bwd_dq_h_bf16_d64, moba::Bf16, 64)
MOBA_BWD_DQ_HOPPER(moba_bwd_dq_h_bf16_d128, moba::Bf16, 128)

MOBA_BWD_FUSED_HOPPER(moba_bwd_fused_h_fp16_d128, moba::Fp16, 128)
MOBA_BWD_FUSED_HOPPER(moba_bwd_fused_h_bf16_d128, moba::Bf16, 128)

// ------------------------------------------------------------------------------------------ score metrics
#include "moba_score.cuh"

#define MOBA_SCORE(NAME, DT, HD)                                                                         \
    extern "C" __global__ void __launch_bounds__(moba::ScoreConfig::kThreads)                            \
        NAME(const uint16_t* moba_out, const float* moba_lse, const uint16_t* dense_out, const float* dense_lse, \
             const int* cu_seqlens, int heads, double* sums) {                                           \
        moba::score_sums<DT, HD>(moba_out, moba_lse, dense_out, dense_lse, cu_seqlens, heads, sums);     \
    }

MOBA_SCORE(moba_score_fp16_d64, moba::Fp16, 64)
MOBA_SCORE(moba_score_fp16_d128, moba::Fp16, 128)
MOBA_SCORE(moba_score_bf16_d64, moba::Bf16, 64)
MOBA_SCORE(moba_score_bf16_d128, moba::Bf16, 128)
