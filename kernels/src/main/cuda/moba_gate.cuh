// The MoBA gate: for every (query token, head) the top-W past full chunks of its own sequence by
// the fp32 score q . mu, ties to the lower chunk index (docs/semantics.md "Chunks and the gate").
//
// Scores run on the tensor cores without losing fp32 accuracy: q is exact in its own 16-bit type,
// and mu (scaled by a power of two) is the exact sum of three 16-bit planes, so
//   q . mu = unscale * (q . lo + q . mid + q . hi),
// three MMAs with exact products and fp32 accumulation. No [chunks x tokens] score matrix exists:
// per 32-chunk step, the scores that reach a row's current bar (its kth best so far) are appended
// to a small per-row buffer in shared memory, and the row's owner thread (thread r for row r)
// merges them into its ranked list held in registers. Buffer order comes from atomics, but the
// merge ranks by the total order (score, index), so the result does not depend on it.
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
    // Shared memory: region A holds the query tile until its fragments are in registers, then the
    // per-row candidate buffers; then per-row candidate counts and bars; then two stages (double
    // buffering) of a chunk tile: its three mu planes and its power-of-two unscale factors.
    static constexpr int kQBytes = kBlockM * HD * 2;
    static constexpr int kBufferBytes = kBlockM * kChunkTile * 8;
    static constexpr int kRegionABytes = kQBytes > kBufferBytes ? kQBytes : kBufferBytes;
    static constexpr int kRowStateBytes = kBlockM * (4 + 8);
    static constexpr int kPlaneBytes = kChunkTile * HD * 2;
    static constexpr int kStageBytes = 3 * kPlaneBytes + kChunkTile * 4;
    static constexpr int kStage0 = kRegionABytes + kRowStateBytes;
    static constexpr int kSmemBytes = kStage0 + 2 * kStageBytes;
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

    float2* buffer = reinterpret_cast<float2*>(smem);  // [row][kChunkTile], valid once Q is in registers
    int* count = reinterpret_cast<int*>(smem + Cfg::kRegionABytes);
    float2* bar = reinterpret_cast<float2*>(smem + Cfg::kRegionABytes + Cfg::kBlockM * 4);

    // Thread r < 64 owns row r's ranked list. Every thread scores rows warp*16 + lane/4 + 8i
    // against columns quad*2 + {0,1} + 8n of each chunk tile; a score must reach the row's bar
    // (its current slots-th best) and, in passes after the first, rank below the stop (the
    // previous pass's last pick).
    RankedList<kSlots> list;
    list.clear();
    float bar_s[2], stop_s[2];
    int bar_j[2], stop_j[2], my_row[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        my_row[i] = warp * 16 + (lane >> 2) + 8 * i;
        bar_s[i] = kNegInf; bar_j[i] = -1;
        stop_s[i] = __builtin_huge_valf(); stop_j[i] = -1;
        if (slot_begin > 0 && my_row[i] < rows_valid) {
            const long at = (static_cast<long>(seq0 + start + my_row[i]) * heads + h) * width + slot_begin - 1;
            stop_j[i] = sel[at];
            stop_s[i] = stop_j[i] < 0 ? kNegInf : sel_score[at];  // exhausted row: nothing ranks below
        }
    }
    if (threadIdx.x < Cfg::kBlockM) count[threadIdx.x] = 0;
    __syncthreads();  // every warp holds its query fragments; region A becomes the buffers

    const long plane_stride = static_cast<long>(num_full_chunks) * kv_heads * HD;
    // Chunk tile j0 -> stage: three planes by cp.async; the unscale factors by plain loads (visible
    // after the barrier that precedes their use).
    auto load_chunk_tile = [&](int j0, int stage) {
        const int n_valid = min(Cfg::kChunkTile, own_chunk - j0);
        const uint32_t planes = q_tile + Cfg::kStage0 + stage * Cfg::kStageBytes;
        const uint16_t* src = mu_planes + (static_cast<long>(chunk0 + j0) * kv_heads + hk) * HD;
#pragma unroll
        for (int p = 0; p < 3; ++p)
            load_tile_async<Cfg::kChunkTile, HD, Cfg::kThreads>(planes + p * Cfg::kPlaneBytes, src + p * plane_stride,
                                                                static_cast<long>(kv_heads) * HD, n_valid);
        float* unscale = reinterpret_cast<float*>(smem + Cfg::kStage0 + stage * Cfg::kStageBytes + 3 * Cfg::kPlaneBytes);
        if (threadIdx.x < Cfg::kChunkTile)
            unscale[threadIdx.x] =
                threadIdx.x < n_valid ? mu_unscale[static_cast<long>(chunk0 + j0 + threadIdx.x) * kv_heads + hk] : 0.f;
    };
    if (own_chunk > 0) load_chunk_tile(0, 0);
    cp_async_commit();

    for (int j0 = 0, step = 0; j0 < own_chunk; j0 += Cfg::kChunkTile, ++step) {
        if (j0 + Cfg::kChunkTile < own_chunk) load_chunk_tile(j0 + Cfg::kChunkTile, (step + 1) & 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();

        const uint32_t planes = q_tile + Cfg::kStage0 + (step & 1) * Cfg::kStageBytes;
        const float* unscale = reinterpret_cast<const float*>(smem + Cfg::kStage0 + (step & 1) * Cfg::kStageBytes + 3 * Cfg::kPlaneBytes);
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

        // Scores reaching the bar go to their row's buffer.
#pragma unroll
        for (int nt = 0; nt < Cfg::kChunkTile / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int i = e >> 1, col = nt * 8 + quad * 2 + (e & 1), j = j0 + col;
                const float s = acc[nt][e] * unscale[col];
                if (s >= bar_s[i] && j < own_chunk && ranks_above(s, j, bar_s[i], bar_j[i]) &&
                    (slot_begin == 0 || ranks_above(stop_s[i], stop_j[i], s, j))) {
                    const int at = atomicAdd(&count[my_row[i]], 1);
                    buffer[my_row[i] * Cfg::kChunkTile + at] = make_float2(s, __int_as_float(j));
                }
            }
        }
        __syncthreads();

        // Each row's owner merges its buffer and publishes the new bar.
        if (threadIdx.x < Cfg::kBlockM) {
            const int r = threadIdx.x, n = count[r];
            for (int c = 0; c < n; ++c) {
                const float2 cand = buffer[r * Cfg::kChunkTile + c];
                list.insert(cand.x, __float_as_int(cand.y));
            }
            count[r] = 0;
            bar[r] = list.entry(slots - 1);
        }
        __syncthreads();  // also: every warp is done with this stage, which is refilled next step
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const float2 b = bar[my_row[i]];
            bar_s[i] = b.x;
            bar_j[i] = __float_as_int(b.y);
        }
    }
    cp_async_wait<0>();

    const int r = threadIdx.x;
    if (r >= rows_valid) return;
    int* out = sel + (static_cast<long>(seq0 + start + r) * heads + h) * width;
    if (slot_begin == 0 && width <= kSlots) {
        // Single pass: ascending chunk indices, -1 padding.
        int ascending[kSlots];
        list.ascending_indices(slots, ascending);
#pragma unroll
        for (int n = 0; n < kSlots; ++n)
            if (n < width) out[n] = ascending[n];
    } else {
        float* out_score = sel_score + (static_cast<long>(seq0 + start + r) * heads + h) * width;
#pragma unroll
        for (int n = 0; n < kSlots; ++n)
            if (n < slots) {
                out[slot_begin + n] = list.j[n];
                out_score[slot_begin + n] = list.s[n];
            }
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
