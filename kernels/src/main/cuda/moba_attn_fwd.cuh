// MoBA forward attention over query tiles (FlashAttention-2 style, see moba_flash.cuh).
//
// One block = one 64-row query tile (inside one chunk) x one head; 4 warps x 16 rows. The block
// walks a schedule of 64-key blocks (KeyBlockSchedule), K/V double-buffered with cp.async:
// - union mode: every chunk selected by at least one row of the tile, ascending, then the own
//   chunk's causal prefix ending with the diagonal block; per-row masking. Efficient when the
//   rows of a tile agree on their chunks; with incoherent routing it walks nearly every chunk.
// - dense mode: every key block of the causal prefix.
// - combine mode (kCombine): own chunk only, then the epilogue merges the per-(row, slot)
//   partial results of the gathered kernel (moba_attn_selected.cuh) by their lse.
#pragma once

#include "moba_flash.cuh"
#include "moba_route.cuh"

namespace moba {

enum class KeyBlockKind { kSelected, kOwnFull, kDiagonal };

struct KeyBlock {
    int key0;            // first key, local to the sequence
    uint64_t rows;       // rows of the tile that see this block (bit r = row r)
    KeyBlockKind kind;
};

// The ordered key blocks of one query tile. Every thread computes the same sequence without
// communication: the union of the rows' selections is a k-way merge of the 64 sorted `sel` rows,
// each warp holding all 64 row cursors (lane l follows rows l and l + 32).
struct KeyBlockSchedule {
    static constexpr int kDone = 0x7fffffff;
    const int* sel_row[2];  // this lane's two rows' selections (null: row past the sequence end)
    int width, blocks_per_chunk, own_start, diag_start;
    bool dense;
    int cursor[2], head[2];  // position in each row's list, and the chunk found there (kDone when exhausted)
    int chunk_key0, blocks_left;
    uint64_t chunk_rows;
    int next_own;  // next key of the own-chunk phase

    __device__ __forceinline__ int read(int i) const {
        if (sel_row[i] == nullptr || cursor[i] >= width) return kDone;
        const int c = sel_row[i][cursor[i]];
        return c < 0 ? kDone : c;
    }

    __device__ __forceinline__ void init(const int* sel, long sel_row0, int heads, int h, int width_, int rows_valid,
                                         int chunk_size, int tile_start, bool dense_) {
        const int lane = threadIdx.x & 31;
        width = width_;
        dense = dense_;
        blocks_per_chunk = chunk_size / 64;
        diag_start = tile_start;
        own_start = dense ? 0 : (tile_start / chunk_size) * chunk_size;
        next_own = own_start;
        blocks_left = 0;
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int r = lane + 32 * i;
            sel_row[i] = (!dense && width > 0 && r < rows_valid) ? sel + ((sel_row0 + r) * heads + h) * width : nullptr;
            cursor[i] = 0;
            head[i] = read(i);
        }
    }

    // Next key block; false when the tile is finished.
    __device__ __forceinline__ bool next(KeyBlock& kb) {
        if (blocks_left == 0 && next_own == own_start) {  // still in the selected-chunks phase
            const unsigned chunk = __reduce_min_sync(0xffffffffu, static_cast<unsigned>(min(head[0], head[1])));
            if (chunk != kDone) {
                const uint32_t lo = __ballot_sync(0xffffffffu, head[0] == static_cast<int>(chunk));
                const uint32_t hi = __ballot_sync(0xffffffffu, head[1] == static_cast<int>(chunk));
                chunk_rows = (static_cast<uint64_t>(hi) << 32) | lo;
#pragma unroll
                for (int i = 0; i < 2; ++i)
                    if (head[i] == static_cast<int>(chunk)) { ++cursor[i]; head[i] = read(i); }
                chunk_key0 = static_cast<int>(chunk) * blocks_per_chunk * 64;
                blocks_left = blocks_per_chunk;
            }
        }
        if (blocks_left > 0) {
            kb.key0 = chunk_key0 + (blocks_per_chunk - blocks_left) * 64;
            kb.rows = chunk_rows;
            kb.kind = KeyBlockKind::kSelected;
            --blocks_left;
            return true;
        }
        if (next_own > diag_start) return false;
        kb.key0 = next_own;
        kb.rows = ~0ull;
        kb.kind = next_own == diag_start ? KeyBlockKind::kDiagonal : KeyBlockKind::kOwnFull;
        next_own += 64;
        return true;
    }
};

template <class DT, int HD, bool kCombine>
__device__ __forceinline__ void attn_fwd(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                                         const uint16_t* __restrict__ v, uint16_t* __restrict__ out,
                                         float* __restrict__ lse, const int* __restrict__ cu_seqlens,
                                         const int* __restrict__ sel, int width, const int2* __restrict__ tiles,
                                         int heads, int kv_heads, int chunk_size, float scale, int dense,
                                         const uint16_t* __restrict__ partial_o, const float* __restrict__ partial_lse) {
    using Cfg = FlashConfig<HD>;
    using Rows = FlashRows<DT, HD>;
    extern __shared__ __align__(128) unsigned char smem[];

    const QueryTileCoords tile = QueryTileCoords::of_block(tiles, cu_seqlens, heads, kv_heads);
    const int h = tile.h, hk = tile.hk, seq0 = tile.seq0, seq_len = tile.seq_len, start = tile.start;
    const int rows_valid = tile.rows_valid;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long q_stride = static_cast<long>(heads) * HD, kv_stride = static_cast<long>(kv_heads) * HD;
    const uint16_t* k_head = k + (static_cast<long>(seq0) * kv_heads + hk) * HD;
    const uint16_t* v_head = v + (static_cast<long>(seq0) * kv_heads + hk) * HD;

    const uint32_t q_tile = smem_address(smem);
    const uint32_t kv_tiles = q_tile + Cfg::kQBytes;  // stage s: K at kv_tiles + 2s*kKVBytes, V right after
    auto load_key_block = [&](int key0, int stage) {
        const uint32_t kt = kv_tiles + stage * 2 * Cfg::kKVBytes;
        const int valid = seq_len - key0;  // only the diagonal block can run past the sequence end
        load_tile_async<Cfg::kBlockN, HD, Cfg::kThreads>(kt, k_head + key0 * kv_stride, kv_stride, valid);
        load_tile_async<Cfg::kBlockN, HD, Cfg::kThreads>(kt + Cfg::kKVBytes, v_head + key0 * kv_stride, kv_stride, valid);
    };

    // Combine mode: a tile whose rows selected every past chunk was not routed; it walks its causal
    // prefix like dense attention and has no partials to merge.
    const bool walk_prefix = kCombine && all_past_selected(start, chunk_size, width);
    KeyBlockSchedule schedule;
    schedule.init(sel, seq0 + start, heads, h, kCombine ? 0 : width, rows_valid, chunk_size, start,
                  dense != 0 || walk_prefix);
    KeyBlock current;
    schedule.next(current);  // never empty: the diagonal block always exists

    load_tile_async<Cfg::kBlockM, HD, Cfg::kThreads>(q_tile, q + (static_cast<long>(seq0 + start) * heads + h) * HD,
                                                     q_stride, rows_valid);
    load_key_block(current.key0, 0);
    cp_async_commit();

    const int row_in_tile[2] = {warp * 16 + (lane >> 2), warp * 16 + (lane >> 2) + 8};
    Rows rows;
    uint32_t qf[HD / 16][4];
    const float scale_log2 = scale * kLog2e;

    for (int step = 0;; ++step) {
        KeyBlock upcoming;
        const bool more = schedule.next(upcoming);
        if (more) load_key_block(upcoming.key0, (step + 1) & 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        if (step == 0) {
#pragma unroll
            for (int ks = 0; ks < HD / 16; ++ks) load_a_fragment<HD>(qf[ks], q_tile, warp * 16, ks * 16);
        }
        // A warp none of whose rows selected this chunk skips it (its rows' results are unchanged).
        if (((current.rows >> (warp * 16)) & 0xffffu) != 0) {
            const uint32_t k_tile = kv_tiles + (step & 1) * 2 * Cfg::kKVBytes;
            int key_limit[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const bool sees = ((current.rows >> row_in_tile[i]) & 1) != 0;
                key_limit[i] = !sees ? -1 : current.kind == KeyBlockKind::kDiagonal ? row_in_tile[i] : Cfg::kBlockN;
            }
            const bool masked = current.kind == KeyBlockKind::kDiagonal || current.rows != ~0ull;
            rows.attend(qf, k_tile, k_tile + Cfg::kKVBytes, scale_log2, masked, key_limit);
        }
        __syncthreads();  // this stage is refilled two steps from now
        if (!more) break;
        current = upcoming;
    }

    // Epilogue: normalise, merge the gathered partials (combine mode), write out and lse.
    long row_token[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) row_token[i] = row_in_tile[i] < rows_valid ? seq0 + start + row_in_tile[i] : -1;
    write_rows<DT, HD, kCombine>(rows, row_token, h, heads, walk_prefix ? 0 : width, sel, partial_o, partial_lse, out,
                                 lse);
}

}  // namespace moba
