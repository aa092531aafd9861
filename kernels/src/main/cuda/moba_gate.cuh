// The MoBA gate: for every (query token, head) the top-W past full chunks of its own sequence by
// the fp32 score q . mu, ties to the lower chunk index (docs/semantics.md "Chunks and the gate").
//
// Scores run on the tensor cores without losing fp32 accuracy: q is exact in its own 16-bit type,
// and mu (scaled by a power of two) is the exact sum of three 16-bit planes, so
//   q . mu = unscale * (q . lo + q . mid + q . hi),
// three MMAs with exact products and fp32 accumulation. No [chunks x tokens] score matrix exists.
//
// Rows are owned by warps: a block scores a 128-row query tile (four warps of 32 rows) against
// 32-chunk tiles of the means, streamed through three shared-memory stages with one block-wide
// barrier per step. A warp's MMAs leave each row's 32 scores spread over four lanes; the warp
// writes them to its own score buffer in shared memory, and lane r, which owns row r's ranked list
// in registers, merges the scores that reach the row's bar (its current kth best). No atomics and
// no barrier other than the stage barrier: the merge ranks by the total order (score, index), so
// the result does not depend on the order candidates arrive in.
//
// One pass finds up to kMaxSlotsPerPass ranks. W <= 16 takes one pass that writes `sel` sorted.
// Larger W takes ceil(W/16) passes: pass p ranks only candidates below the last one pass p-1
// found (its (score, index) is read back from sel/sel_score), writes ranks 16p.. in rank order,
// and moba_sel_sort then sorts each row. Scores are recomputed bit-identically in every pass.
#pragma once

#include "moba_device.cuh"

namespace moba {

template <int HD>
struct GateConfig {
    static constexpr int kWarps = 4;
    static constexpr int kThreads = 32 * kWarps;
    static constexpr int kRowsPerWarp = 32;               // two m16 row groups; lane r owns row r
    static constexpr int kBlockM = kWarps * kRowsPerWarp;  // query rows per block = one 128-row tile
    static constexpr int kChunkTile = 32;                  // chunk means scored per step
    static constexpr int kStages = 3;
    static constexpr int kMaxSlotsPerPass = 16;            // ranks found per pass (register list length)
    // A warp's score buffer: 32 rows of kChunkTile floats, padded so that both the MMA-layout
    // writes (float2) and the owner's row reads (float4) take the minimum number of wavefronts.
    static constexpr int kScoreStride = kChunkTile + 8;
    // Shared memory: the warps' score buffers, then kStages stages of a chunk tile: its three mu
    // planes and its power-of-two unscale factors. The query tile passes through the stages before
    // the first chunk tile lands (its fragments then live in registers), so that the gate fits the
    // 99 KB per block of sm_86 / sm_89 at D = 128.
    static constexpr int kQBytes = kBlockM * HD * 2;
    static constexpr int kScoreBytes = kBlockM * kScoreStride * 4;
    static constexpr int kPlaneBytes = kChunkTile * HD * 2;
    static constexpr int kStageBytes = 3 * kPlaneBytes + kChunkTile * 4;
    static constexpr int kStage0 = kScoreBytes;
    static constexpr int kSmemBytes = kStage0 + kStages * kStageBytes;
    static_assert(kQBytes <= kStages * kStageBytes, "the query tile is staged in the chunk stages");
    static_assert(kSmemBytes <= 99 * 1024, "sm_86 / sm_89 allow at most 99 KB of shared memory per block");
    static_assert(kThreads >= kChunkTile, "the unscale factors are loaded one per thread");
    static_assert(kStageBytes % 128 == 0 && kStage0 % 128 == 0, "stages hold 128-byte aligned swizzled tiles");
};

// Rank order of gate candidates: higher score first, ties to the lower chunk index.
__device__ __forceinline__ bool ranks_above(float s, int j, float t, int u) { return s > t || (s == t && j < u); }

// A ranked list of N (score, chunk) entries in registers, best first; empty entries are
// (-inf, -1) and rank below every real candidate.
template <int N>
struct RankedList {
    float s[N];
    int j[N];
    __device__ __forceinline__ void clear() {
#pragma unroll
        for (int n = 0; n < N; ++n) { s[n] = kNegInf; j[n] = -1; }
    }
    // Inserts (x, c) in rank order; the last entry drops out. Branch-free (selects only).
    __device__ __forceinline__ void insert(float x, int c) {
#pragma unroll
        for (int n = N - 1; n >= 0; --n) {
            const bool above_n = ranks_above(x, c, s[n], j[n]);
            const bool above_prev = n > 0 && ranks_above(x, c, s[n > 0 ? n - 1 : 0], j[n > 0 ? n - 1 : 0]);
            if (above_n) {
                s[n] = above_prev ? s[n > 0 ? n - 1 : 0] : x;
                j[n] = above_prev ? j[n > 0 ? n - 1 : 0] : c;
            }
        }
    }
    // Entry `at` (a run-time index, resolved with selects so the list stays in registers).
    __device__ __forceinline__ float2 entry(int at) const {
        float2 e = make_float2(s[0], __int_as_float(j[0]));
#pragma unroll
        for (int n = 1; n < N; ++n)
            if (n == at) e = make_float2(s[n], __int_as_float(j[n]));
        return e;
    }
    // The chunk indices of the first `count` entries, ascending, then -1s (a sorting network).
    __device__ __forceinline__ void ascending_indices(int count, int (&out)[N]) const {
#pragma unroll
        for (int n = 0; n < N; ++n) out[n] = (n < count && j[n] >= 0) ? j[n] : 0x7fffffff;
#pragma unroll
        for (int round = 0; round < N; ++round)
#pragma unroll
            for (int n = round & 1; n + 1 < N; n += 2) {
                const int lo = min(out[n], out[n + 1]), hi = max(out[n], out[n + 1]);
                out[n] = lo;
                out[n + 1] = hi;
            }
#pragma unroll
        for (int n = 0; n < N; ++n) out[n] = out[n] == 0x7fffffff ? -1 : out[n];
    }
};

// One pass of the gate with a ranked list of kSlots entries per row (`slots` <= kSlots of them are
// this pass's ranks).
template <class DT, int HD, int kSlots>
__device__ __forceinline__ void gate_pass(const uint16_t* __restrict__ q, const uint16_t* __restrict__ mu_planes,
                                          const float* __restrict__ mu_unscale, const int* __restrict__ cu_seqlens,
                                          const int* __restrict__ chunk_base, const int2* __restrict__ tiles,
                                          int* __restrict__ sel, float* __restrict__ sel_score, int width,
                                          int slot_begin, int slots, int heads, int kv_heads, int chunk_size,
                                          int num_full_chunks) {
    using Cfg = GateConfig<HD>;
    constexpr int kTile = Cfg::kChunkTile;
    extern __shared__ __align__(128) unsigned char smem[];

    const int2 tile = tiles[blockIdx.x];
    const int h = blockIdx.y, hk = h / (heads / kv_heads);
    const int seq0 = cu_seqlens[tile.x], start = tile.y;
    const int rows_valid = min(Cfg::kBlockM, cu_seqlens[tile.x + 1] - seq0 - start);
    // Candidates of the tile's last row: full chunks 0 .. last_own - 1 (rows of a 128-row tile lie in
    // one chunk, or in two when C = 64).
    const int last_own = (start + rows_valid - 1) / chunk_size;
    const int chunk0 = chunk_base[tile.x];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, quad = lane & 3;
    const long row_stride = static_cast<long>(heads) * HD;

    // Query tile -> A fragments (two 16-row groups per warp) in registers for the whole chunk loop.
    const uint32_t q_tile = smem_address(smem) + Cfg::kStage0;
    load_tile_async<Cfg::kBlockM, HD, Cfg::kThreads>(q_tile, q + (static_cast<long>(seq0 + start) * heads + h) * HD,
                                                     row_stride, rows_valid);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    uint32_t qf[2][HD / 16][4];
#pragma unroll
    for (int g = 0; g < 2; ++g)
#pragma unroll
        for (int ks = 0; ks < HD / 16; ++ks)
            load_a_fragment<HD>(qf[g][ks], q_tile, warp * Cfg::kRowsPerWarp + g * 16, ks * 16);

    // Lane r owns row warp * 32 + r: its candidates are j < own, its list lives in registers. In
    // passes after the first a score must also rank below the stop (the previous pass's last pick).
    const int row = warp * Cfg::kRowsPerWarp + lane;
    const bool row_valid = row < rows_valid;
    const int own = row_valid ? (start + row) / chunk_size : 0;
    RankedList<kSlots> list;
    list.clear();
    float stop_s = __builtin_huge_valf();
    int stop_j = -1;
    if (slot_begin > 0 && row_valid) {
        const long at = (static_cast<long>(seq0 + start + row) * heads + h) * width + slot_begin - 1;
        stop_j = sel[at];
        stop_s = stop_j < 0 ? kNegInf : sel_score[at];  // exhausted row: nothing ranks below
    }
    __syncthreads();  // every warp holds its query fragments; the stages take chunk tiles from here on
    float* scores = reinterpret_cast<float*>(smem) + warp * Cfg::kRowsPerWarp * Cfg::kScoreStride;

    const long plane_stride = static_cast<long>(num_full_chunks) * kv_heads * HD;
    // Chunk tile `step` -> its stage: three planes by cp.async; the unscale factors by plain stores
    // (visible after the barrier that precedes their use, two steps later at the earliest).
    auto load_chunk_tile = [&](int step) {
        const int j0 = step * kTile, stage = step % Cfg::kStages;
        const int n_valid = min(kTile, last_own - j0);
        const uint32_t planes = smem_address(smem) + Cfg::kStage0 + stage * Cfg::kStageBytes;
        const uint16_t* src = mu_planes + (static_cast<long>(chunk0 + j0) * kv_heads + hk) * HD;
#pragma unroll
        for (int p = 0; p < 3; ++p)
            load_tile_async<kTile, HD, Cfg::kThreads>(planes + p * Cfg::kPlaneBytes, src + p * plane_stride,
                                                      static_cast<long>(kv_heads) * HD, n_valid);
        float* unscale = reinterpret_cast<float*>(smem + Cfg::kStage0 + stage * Cfg::kStageBytes + 3 * Cfg::kPlaneBytes);
        if (threadIdx.x < kTile)
            unscale[threadIdx.x] =
                threadIdx.x < n_valid ? mu_unscale[static_cast<long>(chunk0 + j0 + threadIdx.x) * kv_heads + hk] : 0.f;
    };
    const int steps = (last_own + kTile - 1) / kTile;
#pragma unroll
    for (int s = 0; s < Cfg::kStages - 1; ++s) {
        if (s < steps) load_chunk_tile(s);
        cp_async_commit();
    }

    for (int step = 0; step < steps; ++step) {
        cp_async_wait<Cfg::kStages - 2>();
        __syncthreads();  // stage `step` is visible; every warp is done with the stage refilled next
        if (step + Cfg::kStages - 1 < steps) load_chunk_tile(step + Cfg::kStages - 1);
        cp_async_commit();

        const int stage = step % Cfg::kStages, j0 = step * kTile;
        const uint32_t planes = smem_address(smem) + Cfg::kStage0 + stage * Cfg::kStageBytes;
        const float* unscale = reinterpret_cast<const float*>(smem + Cfg::kStage0 + stage * Cfg::kStageBytes + 3 * Cfg::kPlaneBytes);
        float acc[2][kTile / 8][4] = {};
#pragma unroll
        for (int p = 2; p >= 0; --p) {  // lo, mid, hi: the small terms accumulate first
#pragma unroll
            for (int ks = 0; ks < HD / 16; ++ks) {
#pragma unroll
                for (int np = 0; np < kTile / 16; ++np) {
                    uint32_t b[4];
                    load_b_fragments_nk<HD>(b, planes + p * Cfg::kPlaneBytes, np * 16, ks * 16);
#pragma unroll
                    for (int g = 0; g < 2; ++g) {
                        DT::mma(acc[g][2 * np], qf[g][ks], b[0], b[1]);
                        DT::mma(acc[g][2 * np + 1], qf[g][ks], b[2], b[3]);
                    }
                }
            }
        }

        // MMA layout -> the warp's score buffer: lane holds rows g*16 + lane/4 (+8), columns
        // nt*8 + quad*2 (+1).
#pragma unroll
        for (int nt = 0; nt < kTile / 8; ++nt) {
            const int col = nt * 8 + quad * 2;
            const float2 u = *reinterpret_cast<const float2*>(unscale + col);
#pragma unroll
            for (int g = 0; g < 2; ++g) {
                const int r = g * 16 + (lane >> 2);
                *reinterpret_cast<float2*>(scores + r * Cfg::kScoreStride + col) =
                    make_float2(acc[g][nt][0] * u.x, acc[g][nt][1] * u.y);
                *reinterpret_cast<float2*>(scores + (r + 8) * Cfg::kScoreStride + col) =
                    make_float2(acc[g][nt][2] * u.x, acc[g][nt][3] * u.y);
            }
        }
        __syncwarp();

        // The owner merges the scores of its row that reach the bar.
        const float* mine = scores + lane * Cfg::kScoreStride;
        const float2 bar = list.entry(slots - 1);
        const int bar_j = __float_as_int(bar.y);
        uint32_t reaching = 0;
#pragma unroll
        for (int c4 = 0; c4 < kTile; c4 += 4) {
            const float4 v = *reinterpret_cast<const float4*>(mine + c4);
            const float vs[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int j = j0 + c4 + e;
                const bool reaches = j < own && ranks_above(vs[e], j, bar.x, bar_j) &&
                                     (slot_begin == 0 || ranks_above(stop_s, stop_j, vs[e], j));
                reaching |= static_cast<uint32_t>(reaches) << (c4 + e);
            }
        }
        while (reaching != 0) {
            const int c = __ffs(reaching) - 1;
            reaching &= reaching - 1;
            list.insert(mine[c], j0 + c);
        }
        __syncwarp();  // the buffer is rewritten next step
    }
    cp_async_wait<0>();

    if (!row_valid) return;
    int* out = sel + (static_cast<long>(seq0 + start + row) * heads + h) * width;
    if (slot_begin == 0 && width <= Cfg::kMaxSlotsPerPass) {
        // Single pass: ascending chunk indices, -1 padding.
        int ascending[kSlots];
        list.ascending_indices(slots, ascending);
#pragma unroll
        for (int n = 0; n < kSlots; ++n)
            if (n < width) out[n] = ascending[n];
    } else {
        float* out_score = sel_score + (static_cast<long>(seq0 + start + row) * heads + h) * width;
#pragma unroll
        for (int n = 0; n < kSlots; ++n)
            if (n < slots) {
                out[slot_begin + n] = list.j[n];
                out_score[slot_begin + n] = list.s[n];
            }
    }
}

// The gate pass for slots slot_begin .. slot_begin + 15 (fewer in the last pass): a list of 8
// entries when at most 8 ranks are left (topk <= 9, the common case: half the merge work), else 16.
template <class DT, int HD>
__device__ __forceinline__ void gate_topk(const uint16_t* __restrict__ q, const uint16_t* __restrict__ mu_planes,
                                          const float* __restrict__ mu_unscale, const int* __restrict__ cu_seqlens,
                                          const int* __restrict__ chunk_base, const int2* __restrict__ tiles,
                                          int* __restrict__ sel, float* __restrict__ sel_score, int width,
                                          int slot_begin, int heads, int kv_heads, int chunk_size,
                                          int num_full_chunks) {
    const int slots = min(GateConfig<HD>::kMaxSlotsPerPass, width - slot_begin);
    if (slots <= 8)
        gate_pass<DT, HD, 8>(q, mu_planes, mu_unscale, cu_seqlens, chunk_base, tiles, sel, sel_score, width,
                             slot_begin, slots, heads, kv_heads, chunk_size, num_full_chunks);
    else
        gate_pass<DT, HD, 16>(q, mu_planes, mu_unscale, cu_seqlens, chunk_base, tiles, sel, sel_score, width,
                              slot_begin, slots, heads, kv_heads, chunk_size, num_full_chunks);
}

// The selection of a 128-row gate tile whose rows all select every past chunk (the tile's last row has own chunk
// c <= W, so every row ranks all of its c candidates: MOBA semantics' min(topk - 1, c) = c): row r writes
// 0 .. c_r - 1 ascending, then -1, the list the gate would rank, without loading or scoring anything. These are
// the first chunks of every sequence, and most of the tiles of short sequences. The host cuts them from the end
// of the gate's tile list (ordered by descending candidates), so the gate kernel itself has no such branch: a
// branch there measured 8% slower on long sequences (docs/perf.md, "wgmma union walk").
template <int HD>
__device__ __forceinline__ void select_all_past(const int* __restrict__ cu_seqlens, const int2* __restrict__ tiles,
                                                int* __restrict__ sel, int width, int heads, int chunk_size) {
    using Cfg = GateConfig<HD>;
    const int2 tile = tiles[blockIdx.x];
    const int h = blockIdx.y, seq0 = cu_seqlens[tile.x];
    const int rows_valid = min(Cfg::kBlockM, cu_seqlens[tile.x + 1] - seq0 - tile.y);
    for (int r = threadIdx.x; r < rows_valid; r += Cfg::kThreads) {
        const int own = (tile.y + r) / chunk_size;
        int* out = sel + (static_cast<long>(seq0 + tile.y + r) * heads + h) * width;
        for (int n = 0; n < width; ++n) out[n] = n < own ? n : -1;
    }
}

struct SortConfig {
    static constexpr int kThreads = 128;
};

// Sorts each row of `sel` ([rows, width], valid chunk indices first in any order, then -1) into
// ascending order with the -1 padding last. One block per row; the row is ranked in shared memory.
__device__ __forceinline__ void sort_selection(int* __restrict__ sel, int width) {
    extern __shared__ int row_copy[];
    int* row = sel + static_cast<long>(blockIdx.x) * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) row_copy[i] = row[i] < 0 ? 0x7fffffff : row[i];
    __syncthreads();
    int valid = 0;
    for (int i = 0; i < width; ++i) valid += row_copy[i] != 0x7fffffff;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const int x = row_copy[i];
        if (x != 0x7fffffff) {
            int rank = 0;
            for (int m = 0; m < width; ++m) rank += row_copy[m] < x;
            row[rank] = x;
        }
        if (i >= valid) row[i] = -1;
    }
}

}  // namespace moba
