// The MoBA gate: for every (query token, head) the top-W past full chunks of its own sequence by
// the fp32 score q . mu, ties to the lower chunk index (MOBA.md "Chunks and the gate").
//
// Scores run on the tensor cores without losing fp32 accuracy: q is exact in its own 16-bit type,
// and mu (scaled by a power of two) is the exact sum of three 16-bit planes, so
//   q . mu = unscale * (q . lo + q . mid + q . hi),
// three MMAs with exact products and fp32 accumulation. No [chunks x tokens] score matrix exists:
// each thread keeps a running top list in registers while the chunk tiles stream by.
//
// One pass finds up to kSlotsPerPass ranks. W <= 16 takes one pass that writes `sel` sorted.
// Larger W takes ceil(W/16) passes: pass p ranks only candidates below the last one pass p-1
// found (its (score, index) is read back from sel/sel_score), writes ranks 16p.. in rank order,
// and moba_sel_sort then sorts each row. Scores are recomputed bit-identically in every pass.
#pragma once

#include "moba_device.cuh"

namespace moba {

template <int HD>
struct GateConfig {
    static constexpr int kThreads = 128;
    static constexpr int kBlockM = 64;        // query rows per block = one tile; 16 per warp
    static constexpr int kChunkTile = 32;     // chunk means scored per step
    static constexpr int kSlotsPerPass = 16;  // ranks found per pass (register list length)
    static constexpr int kListStride = kSlotsPerPass + 1;  // float2 entries; +1 spreads lanes over banks
    // Shared memory: region A holds the query tile until its fragments are in registers, then the
    // ranked lists (one per row and lane of the quad); then two stages (double buffering) of a chunk
    // tile: its three mu planes and its power-of-two unscale factors. Stage 0 later holds each
    // row's merged picks.
    static constexpr int kQBytes = kBlockM * HD * 2;
    static constexpr int kListBytes = kBlockM * 4 * kListStride * 8;
    static constexpr int kRegionABytes = kQBytes > kListBytes ? kQBytes : kListBytes;
    static constexpr int kPlaneBytes = kChunkTile * HD * 2;
    static constexpr int kStageBytes = 3 * kPlaneBytes + kChunkTile * 4;
    static_assert(kStageBytes >= kBlockM * kSlotsPerPass * 8, "merged picks must fit stage 0");
    static constexpr int kSmemBytes = kRegionABytes + 2 * kStageBytes;
};

// Rank order of gate candidates: higher score first, ties to the lower chunk index.
__device__ __forceinline__ bool ranks_above(float s, int j, float t, int u) { return s > t || (s == t && j < u); }

// Inserts (s, j) into a ranked list of `len` entries that it ranks above the last of (which drops out).
__device__ __forceinline__ void insert_ranked(float2* list, int len, float s, int j) {
    int n = len - 1;
    while (n > 0 && ranks_above(s, j, list[n - 1].x, __float_as_int(list[n - 1].y))) {
        list[n] = list[n - 1];
        --n;
    }
    list[n] = make_float2(s, __int_as_float(j));
}

template <class DT, int HD>
__device__ __forceinline__ void gate_topk(const uint16_t* __restrict__ q, const uint16_t* __restrict__ mu_planes,
                                          const float* __restrict__ mu_unscale, const int* __restrict__ cu_seqlens,
                                          const int* __restrict__ chunk_base, const int2* __restrict__ tiles,
                                          int* __restrict__ sel, float* __restrict__ sel_score, int width,
                                          int slot_begin, int heads, int kv_heads, int chunk_size,
                                          int num_full_chunks) {
    using Cfg = GateConfig<HD>;
    constexpr int kSlots = Cfg::kSlotsPerPass;
    extern __shared__ __align__(128) unsigned char smem[];

    const int2 tile = tiles[blockIdx.x];
    const int h = blockIdx.y, hk = h / (heads / kv_heads);
    const int seq0 = cu_seqlens[tile.x], start = tile.y;
    const int rows_valid = min(Cfg::kBlockM, cu_seqlens[tile.x + 1] - seq0 - start);
    const int own_chunk = start / chunk_size;  // candidates: full chunks 0 .. own_chunk - 1
    const int chunk0 = chunk_base[tile.x];
    const int slots = min(kSlots, width - slot_begin);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, quad = lane & 3;
    const long row_stride = static_cast<long>(heads) * HD;

    // Query tile -> A fragments in registers for the whole chunk loop.
    const uint32_t q_tile = smem_address(smem);
    load_tile_async<Cfg::kBlockM, HD, Cfg::kThreads>(q_tile, q + (static_cast<long>(seq0 + start) * heads + h) * HD,
                                                     row_stride, rows_valid);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    uint32_t qf[HD / 16][4];
#pragma unroll
    for (int ks = 0; ks < HD / 16; ++ks) load_a_fragment<HD>(qf[ks], q_tile, warp * 16, ks * 16);

    // This thread scores rows r_i = warp*16 + lane/4 + 8i against columns quad*2 + {0,1} + 8n of
    // every chunk tile, and keeps its own ranked list per row in shared memory (region A, free
    // once the query fragments are loaded: the barrier in the first chunk step orders that).
    float2* lists = reinterpret_cast<float2*>(smem);
    float2* my_list[2];
    float bar_s[2], stop_s[2];  // bar: what a candidate must beat to matter; stop: pass p-1's last pick
    int bar_j[2], stop_j[2];
    __syncthreads();  // every warp holds its query fragments; region A becomes the lists
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int r = warp * 16 + (lane >> 2) + 8 * i;
        my_list[i] = lists + (r * 4 + quad) * Cfg::kListStride;
        for (int n = 0; n < slots; ++n) my_list[i][n] = make_float2(kNegInf, __int_as_float(-1));
        bar_s[i] = kNegInf; bar_j[i] = -1;
        stop_s[i] = __builtin_huge_valf(); stop_j[i] = -1;
        if (slot_begin > 0 && r < rows_valid) {
            const long at = (static_cast<long>(seq0 + start + r) * heads + h) * width + slot_begin - 1;
            stop_j[i] = sel[at];
            stop_s[i] = stop_j[i] < 0 ? kNegInf : sel_score[at];  // exhausted row: nothing ranks below
        }
    }

    const long plane_stride = static_cast<long>(num_full_chunks) * kv_heads * HD;
    // Chunk tile j0 -> stage: three planes by cp.async; the unscale factors by plain loads (visible
    // after the barrier that precedes their use).
    auto load_chunk_tile = [&](int j0, int stage) {
        const int n_valid = min(Cfg::kChunkTile, own_chunk - j0);
        const uint32_t planes = q_tile + Cfg::kRegionABytes + stage * Cfg::kStageBytes;
        const uint16_t* src = mu_planes + (static_cast<long>(chunk0 + j0) * kv_heads + hk) * HD;
#pragma unroll
        for (int p = 0; p < 3; ++p)
            load_tile_async<Cfg::kChunkTile, HD, Cfg::kThreads>(planes + p * Cfg::kPlaneBytes, src + p * plane_stride,
                                                                static_cast<long>(kv_heads) * HD, n_valid);
        float* unscale = reinterpret_cast<float*>(smem + Cfg::kRegionABytes + stage * Cfg::kStageBytes + 3 * Cfg::kPlaneBytes);
        if (threadIdx.x < Cfg::kChunkTile)
            unscale[threadIdx.x] =
                threadIdx.x < n_valid ? mu_unscale[static_cast<long>(chunk0 + j0 + threadIdx.x) * kv_heads + hk] : 0.f;
    };
    if (own_chunk > 0) load_chunk_tile(0, 0);
    cp_async_commit();

    for (int j0 = 0, step = 0; j0 < own_chunk; j0 += Cfg::kChunkTile, ++step) {
        const bool more = j0 + Cfg::kChunkTile < own_chunk;
        if (more) load_chunk_tile(j0 + Cfg::kChunkTile, (step + 1) & 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();

        const uint32_t planes = q_tile + Cfg::kRegionABytes + (step & 1) * Cfg::kStageBytes;
        const float* unscale = reinterpret_cast<const float*>(smem + Cfg::kRegionABytes + (step & 1) * Cfg::kStageBytes + 3 * Cfg::kPlaneBytes);
        float acc[Cfg::kChunkTile / 8][4] = {};
#pragma unroll
        for (int p = 2; p >= 0; --p) {  // lo, mid, hi: the small terms accumulate first
#pragma unroll
            for (int ks = 0; ks < HD / 16; ++ks) {
#pragma unroll
                for (int np = 0; np < Cfg::kChunkTile / 16; ++np) {
                    uint32_t b[4];
                    load_b_fragments_nk<HD>(b, planes + p * Cfg::kPlaneBytes, np * 16, ks * 16);
                    DT::mma(acc[2 * np], qf[ks], b[0], b[1]);
                    DT::mma(acc[2 * np + 1], qf[ks], b[2], b[3]);
                }
            }
        }

        // Hot path: one multiply and one compare per score; a score reaching the row's bar takes
        // the exact rank test (ties, causality of the last tile, the previous pass's stop).
#pragma unroll
        for (int nt = 0; nt < Cfg::kChunkTile / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int i = e >> 1, col = nt * 8 + quad * 2 + (e & 1), j = j0 + col;
                const float s = acc[nt][e] * unscale[col];
                if (s >= bar_s[i] && j < own_chunk && ranks_above(s, j, bar_s[i], bar_j[i]) &&
                    (slot_begin == 0 || ranks_above(stop_s[i], stop_j[i], s, j))) {
                    const float2 last = my_list[i][slots - 1];
                    if (ranks_above(s, j, last.x, __float_as_int(last.y))) insert_ranked(my_list[i], slots, s, j);
                }
            }
        }

        // Raise each row's bar to the best of its four lanes' last entries: that lane alone already
        // holds `slots` candidates ranking at or above it.
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const float2 last = my_list[i][slots - 1];
            float t = last.x;
            int u = __float_as_int(last.y);
#pragma unroll
            for (int off = 1; off <= 2; off <<= 1) {
                const float t2 = __shfl_xor_sync(0xffffffffu, t, off);
                const int u2 = __shfl_xor_sync(0xffffffffu, u, off);
                if (ranks_above(t2, u2, t, u)) { t = t2; u = u2; }
            }
            bar_s[i] = t; bar_j[i] = u;
        }
        __syncthreads();  // this stage is refilled two steps from now
    }

    // Merge the four lanes' lists of each row, in rank order (one thread per row).
    cp_async_wait<0>();
    __syncthreads();
    const int r = threadIdx.x;
    if (r >= rows_valid) return;
    float2* row_picks = reinterpret_cast<float2*>(smem + Cfg::kRegionABytes) + r * kSlots;
    const float2* row_lists = lists + r * 4 * Cfg::kListStride;
    int head[4] = {0, 0, 0, 0};
    for (int n = 0; n < slots; ++n) {
        int best = -1;
        float2 b = make_float2(kNegInf, __int_as_float(-1));
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            if (head[l] >= slots) continue;
            const float2 c = row_lists[l * Cfg::kListStride + head[l]];
            if (best < 0 || ranks_above(c.x, __float_as_int(c.y), b.x, __float_as_int(b.y))) { b = c; best = l; }
        }
#pragma unroll
        for (int l = 0; l < 4; ++l) head[l] += (l == best);
        row_picks[n] = b;
    }

    int* out = sel + (static_cast<long>(seq0 + start + r) * heads + h) * width;
    if (slot_begin == 0 && width <= kSlots) {
        // Single pass: ascending chunk indices, -1 padding (the picks are valid ones first).
        int found = 0;
        while (found < slots && __float_as_int(row_picks[found].y) >= 0) ++found;
        for (int n = 1; n < found; ++n) {
            const float2 x = row_picks[n];
            int m = n - 1;
            while (m >= 0 && __float_as_int(row_picks[m].y) > __float_as_int(x.y)) { row_picks[m + 1] = row_picks[m]; --m; }
            row_picks[m + 1] = x;
        }
        for (int n = 0; n < width; ++n) out[n] = n < found ? __float_as_int(row_picks[n].y) : -1;
    } else {
        float* out_score = sel_score + (static_cast<long>(seq0 + start + r) * heads + h) * width;
        for (int n = 0; n < slots; ++n) {
            out[slot_begin + n] = __float_as_int(row_picks[n].y);
            out_score[slot_begin + n] = row_picks[n].x;
        }
    }
}

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
