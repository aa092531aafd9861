// The exported MoBA kernels: one extern "C" entry point per (kernel family, dtype, head dim).
// Launch rules and parameter lists: ABI.md beside this file.
#include "moba_attn_fwd.cuh"
#include "moba_chunk_mean.cuh"
#include "moba_gate.cuh"

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
    extern "C" __global__ void __launch_bounds__(moba::AttnFwdConfig<HD>::kThreads, 2)                   \
        NAME(const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* out, float* lse,         \
             const int* cu_seqlens, const int* sel, int width, const int2* tiles, int num_tiles, int heads, \
             int kv_heads, int chunk_size, float scale, int dense) {                                     \
        (void)num_tiles; /* the grid's x extent; kept in the ABI for launch-side validation */           \
        moba::attn_fwd<DT, HD>(q, k, v, out, lse, cu_seqlens, sel, width, tiles, heads, kv_heads, chunk_size, \
                               scale, dense);                                                            \
    }

MOBA_CHUNK_MEAN(moba_chunk_mean_fp16, moba::Fp16)
MOBA_CHUNK_MEAN(moba_chunk_mean_bf16, moba::Bf16)

MOBA_GATE(moba_gate_topk_fp16_d64, moba::Fp16, 64)
MOBA_GATE(moba_gate_topk_fp16_d128, moba::Fp16, 128)
MOBA_GATE(moba_gate_topk_bf16_d64, moba::Bf16, 64)
MOBA_GATE(moba_gate_topk_bf16_d128, moba::Bf16, 128)

extern "C" __global__ void __launch_bounds__(128) moba_sel_sort(int* sel, int width) {
    moba::sort_selection(sel, width);
}

MOBA_ATTN_FWD(moba_attn_fwd_fp16_d64, moba::Fp16, 64)
MOBA_ATTN_FWD(moba_attn_fwd_fp16_d128, moba::Fp16, 128)
MOBA_ATTN_FWD(moba_attn_fwd_bf16_d64, moba::Bf16, 64)
MOBA_ATTN_FWD(moba_attn_fwd_bf16_d128, moba::Bf16, 128)
