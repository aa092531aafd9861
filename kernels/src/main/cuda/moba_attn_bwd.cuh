// MoBA backward (docs/semantics.md "Backward"), FlashAttention-2 style recomputation from q, k, v, lse:
//   P = exp(scale*qk - lse), dv = P^T dout, dP = dout v^T, dS = P * (dP - delta),
//   dq = scale * dS k, dk = scale * dS^T q,  delta = rowsum(dout * out).
// Deterministic by construction (no floating-point atomics), in three kernels:
// - dkdv (key-stationary): one block = one 64-key tile x one kv head; each warp keeps its 16 keys'
//   dk/dv in registers while query tiles stream past: the own chunk's causal queries, then the rows
//   of the chunk's (head, chunk) buckets (moba_bwd_route.cuh, ascending), head by head of the group.
// - dq_selected (gathered, like moba_attn_selected.cuh): the rows of one bucket as dense 64-row
//   tiles against that chunk; writes each entry's `scale * dS K` over that chunk as a 16-bit partial.
// - dq (query-tile-stationary): the own chunk's causal prefix (dense: the whole prefix), then adds
//   the row's partials in slot order.
// dq thus costs one extra S and dP recomputation per attended pair (7 MMAs per pair instead of 5)
// and no [T, H, D] fp32 buffer.
// Gathered tiles are fetched in two hops, each one tile ahead of its use, so that no dependent
// global load sits between two tiles: the tile's entry indices (cp.async into shared memory), then
// its Q/dO rows and lse/delta from those indices.
#pragma once

#include "moba_bwd_route.cuh"
#include "moba_flash.cuh"

namespace moba {

template <int HD>
struct BwdConfig {
    static constexpr int kThreads = 128;
    static constexpr int kBlockM = 64;  // query rows per tile
    static constexpr int kBlockN = 64;  // keys per key block / key tile
    static constexpr int kTileBytes = 64 * HD * 2;
    static constexpr int kStatsBytes = 2 * kBlockM * 4;  // lse and delta of one query tile
    static constexpr int kIndexBytes = kBlockM * 4;      // entry indices of one gathered query tile
    // dq: Q and dO of one query tile, K and V double-buffered.
    static constexpr int kDqSmemBytes = 2 * kTileBytes + 2 * 2 * kTileBytes;
    // dq_selected: as dq, plus the tile's lse/delta and two stages of entry indices.
    static constexpr int kDqSelectedSmemBytes = kDqSmemBytes + kStatsBytes + 2 * kIndexBytes;
    // dkdv: K and V of the block's key tile; Q, dO, lse/delta and entry indices double-buffered.
    static constexpr int kDkdvSmemBytes = 2 * kTileBytes + 2 * 2 * kTileBytes + 2 * kStatsBytes + 2 * kIndexBytes;
    static_assert(kBlockM == FlashConfig<HD>::kBlockM, "the backward walks the forward's query tiles");
    static_assert(kBlockM == kBlockN, "a query tile and a key tile share kTileBytes");
};

// delta = rowsum(dout * out) in fp32, one warp per (token, head) row, kRowsPerBlock rows per block.
struct DeltaConfig {
    static constexpr int kThreads = 128;
    static constexpr int kRowsPerBlock = kThreads / 32;
};

template <class DT>
__device__ __forceinline__ void bwd_delta(const uint16_t* __restrict__ out, const uint16_t* __restrict__ dout,
                                          float* __restrict__ delta, int rows, int head_dim) {
    const int row = blockIdx.x * DeltaConfig::kRowsPerBlock + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const uint32_t* o = reinterpret_cast<const uint32_t*>(out + static_cast<long>(row) * head_dim);
    const uint32_t* d = reinterpret_cast<const uint32_t*>(dout + static_cast<long>(row) * head_dim);
    float sum = 0.f;
    for (int i = lane; i < head_dim / 2; i += 32) {
        const uint32_t a = o[i], b = d[i];
        sum = fmaf(DT::to_float(static_cast<uint16_t>(a & 0xffffu)), DT::to_float(static_cast<uint16_t>(b & 0xffffu)), sum);
        sum = fmaf(DT::to_float(static_cast<uint16_t>(a >> 16)), DT::to_float(static_cast<uint16_t>(b >> 16)), sum);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) delta[row] = sum;
}

// A warp's 16 query rows accumulating dQ (unscaled: sum of dS K) over 64-key blocks.
template <class DT, int HD>
struct DqRows {
    static constexpr int kNT = 64 / 8;  // n8 tiles of S over the key block
    static constexpr int kDT = HD / 8;  // n8 tiles of dQ
    float acc[kDT][4] = {};

    // One key block. qf/dof: the warp's Q and dO rows as A fragments; lse2 (log2 units) and delta
    // of this thread's two rows; row i sees key columns 0..key_limit[i] when `masked`.
    __device__ __forceinline__ void step(const uint32_t (&qf)[HD / 16][4], const uint32_t (&dof)[HD / 16][4],
                                         uint32_t k_tile, uint32_t v_tile, float scale_log2, const float (&lse2)[2],
                                         const float (&delta)[2], bool masked, const int (&key_limit)[2]) {
        const int lane = threadIdx.x & 31;
        float s[kNT][4] = {}, dp[kNT][4] = {};
#pragma unroll
        for (int ks = 0; ks < HD / 16; ++ks) {
#pragma unroll
            for (int np = 0; np < kNT / 2; ++np) {
                uint32_t b[4];
                load_b_fragments_nk<HD>(b, k_tile, np * 16, ks * 16);
                DT::mma(s[2 * np], qf[ks], b[0], b[1]);
                DT::mma(s[2 * np + 1], qf[ks], b[2], b[3]);
                load_b_fragments_nk<HD>(b, v_tile, np * 16, ks * 16);
                DT::mma(dp[2 * np], dof[ks], b[0], b[1]);
                DT::mma(dp[2 * np + 1], dof[ks], b[2], b[3]);
            }
        }
        // P from the forward's lse (no running max needed), then dS = P * (dP - delta) in place of s.
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int i = e >> 1;
                const bool hidden = masked && nt * 8 + (lane & 3) * 2 + (e & 1) > key_limit[i];
                const float p = hidden ? 0.f : fast_exp2(fmaf(s[nt][e], scale_log2, -lse2[i]));
                s[nt][e] = p * (dp[nt][e] - delta[i]);
            }
        // dQ += dS K (16 keys per k-step, K read transposed).
        mma_accumulators_by_tile<DT, HD, kNT / 2>(acc, s, k_tile, 0);
    }

    __device__ __forceinline__ static int column(int dt) { return dt * 8 + (threadIdx.x & 3) * 2; }
};

// Loads a warp's 16 rows of a Q or dO tile as A fragments.
template <int HD>
__device__ __forceinline__ void load_row_fragments(uint32_t (&f)[HD / 16][4], uint32_t tile, int row0) {
#pragma unroll
    for (int ks = 0; ks < HD / 16; ++ks) load_a_fragment<HD>(f[ks], tile, row0, ks * 16);
}

// ---------------------------------------------------------------------------------------------
// dq_selected: one block = up to rows_per_group rows of one (head, chunk) bucket.
// ---------------------------------------------------------------------------------------------
template <class DT, int HD>
__device__ __forceinline__ void bwd_dq_selected(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                                                const uint16_t* __restrict__ v, const uint16_t* __restrict__ dout,
                                                const float* __restrict__ lse, const float* __restrict__ delta,
                                                const int* __restrict__ cu_seqlens, const int* __restrict__ chunk_base,
                                                int num_sequences, const int* __restrict__ bucket_row0,
                                                const int* __restrict__ bucket_group0,
                                                const int* __restrict__ rows_of_buckets, int rows_per_group,
                                                uint16_t* __restrict__ partial_dq, int heads, int kv_heads, int width,
                                                int chunk_size, int num_full_chunks, float scale) {
    using Cfg = BwdConfig<HD>;
    using Rows = DqRows<DT, HD>;
    extern __shared__ __align__(128) unsigned char smem[];

    const BucketGroup grp = BucketGroup::of_block(bucket_row0, bucket_group0, chunk_base, cu_seqlens, num_sequences,
                                                  heads, kv_heads, num_full_chunks, chunk_size, rows_per_group);
    if (!grp.valid) return;
    const int hk = grp.hk, group_rows = grp.rows;
    const long key0 = grp.key0;
    const int* entries = rows_of_buckets + grp.first;  // entry e = (t * H + h) * W + slot
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long kv_stride = static_cast<long>(kv_heads) * HD;
    const uint16_t* k_chunk = k + (key0 * kv_heads + hk) * HD;
    const uint16_t* v_chunk = v + (key0 * kv_heads + hk) * HD;

    const uint32_t q_tile = smem_address(smem), do_tile = q_tile + Cfg::kTileBytes;
    const uint32_t kv_tiles = do_tile + Cfg::kTileBytes;  // stage s: K at kv_tiles + 2s*kTileBytes, V after it
    const uint32_t stats = kv_tiles + 4 * Cfg::kTileBytes;  // lse[64] then delta[64]
    const uint32_t indices = stats + Cfg::kStatsBytes;      // stage s: entries of tiles s, s+2, ...
    const float* const stats_ptr = reinterpret_cast<const float*>(smem + 6 * Cfg::kTileBytes);
    const int* const index_ptr = reinterpret_cast<const int*>(smem + 6 * Cfg::kTileBytes + Cfg::kStatsBytes);
    auto tile_rows = [&](int tile) { return min(Cfg::kBlockM, group_rows - tile * Cfg::kBlockM); };
    auto fetch_indices = [&](int tile) {
        const int valid_rows = tile_rows(tile);
        for (int r = threadIdx.x; r < Cfg::kBlockM; r += Cfg::kThreads)
            cp_async_4(indices + ((tile & 1) * Cfg::kBlockM + r) * 4, entries + tile * Cfg::kBlockM + r, r < valid_rows);
    };
    auto load_query_tile = [&](int tile) {  // its indices have landed
        constexpr int kVectors = HD / 8;
        const int valid_rows = tile_rows(tile);
        const int* idx = index_ptr + (tile & 1) * Cfg::kBlockM;
        for (int i = threadIdx.x; i < Cfg::kBlockM * kVectors; i += Cfg::kThreads) {
            const int r = i / kVectors, vec = i % kVectors;
            const bool valid = r < valid_rows;
            const long row = valid ? idx[r] / width : 0;  // t * H + h
            const uint32_t at = swizzled_offset<HD>(r, vec * 8);
            cp_async_16(q_tile + at, q + row * HD + vec * 8, valid);
            cp_async_16(do_tile + at, dout + row * HD + vec * 8, valid);
        }
        for (int r = threadIdx.x; r < Cfg::kBlockM; r += Cfg::kThreads) {
            const bool valid = r < valid_rows;
            const long row = valid ? idx[r] / width : 0;
            cp_async_4(stats + r * 4, lse + row, valid);
            cp_async_4(stats + (Cfg::kBlockM + r) * 4, delta + row, valid);
        }
    };
    auto load_key_block = [&](int block, int stage) {
        const uint32_t kt = kv_tiles + stage * 2 * Cfg::kTileBytes;
        const long offset = block * Cfg::kBlockN * kv_stride;
        load_tile_async<Cfg::kBlockN, HD, Cfg::kThreads>(kt, k_chunk + offset, kv_stride, Cfg::kBlockN);
        load_tile_async<Cfg::kBlockN, HD, Cfg::kThreads>(kt + Cfg::kTileBytes, v_chunk + offset, kv_stride, Cfg::kBlockN);
    };

    const int blocks = chunk_size / Cfg::kBlockN;
    const bool resident = blocks <= 2;  // the chunk fits both K/V stages: load it once per group
    const int tiles = (group_rows + Cfg::kBlockM - 1) / Cfg::kBlockM, steps = tiles * blocks;
    fetch_indices(0);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    load_query_tile(0);
    load_key_block(0, 0);
    if (tiles > 1) fetch_indices(1);
    cp_async_commit();

    Rows rows;
    uint32_t qf[HD / 16][4], dof[HD / 16][4];
    float lse2[2], row_delta[2];
    int entry[2];
    const float scale_log2 = scale * kLog2e;
    const int all_keys[2] = {Cfg::kBlockN, Cfg::kBlockN};
    for (int step = 0; step < steps; ++step) {
        const int tile = step / blocks, block = step % blocks;
        if (block == 0) {
            // This tile's Q/dO/lse/delta, its first K/V block and the next tile's indices have landed;
            // take what the tile needs into registers, then refill the buffers for the next tiles
            // while this one runs through the chunk.
            cp_async_wait<0>();
            __syncthreads();
            load_row_fragments<HD>(qf, q_tile, warp * 16);
            load_row_fragments<HD>(dof, do_tile, warp * 16);
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int r = warp * 16 + (lane >> 2) + 8 * i;
                lse2[i] = stats_ptr[r] * kLog2e;
                row_delta[i] = stats_ptr[Cfg::kBlockM + r];
                entry[i] = r < tile_rows(tile) ? index_ptr[(tile & 1) * Cfg::kBlockM + r] : -1;
            }
            __syncthreads();
            if (tile + 1 < tiles) load_query_tile(tile + 1);
            if (tile + 2 < tiles) fetch_indices(tile + 2);
            cp_async_commit();
        }
        const int next = step + 1, next_tile = next / blocks, next_block = next % blocks;
        if (next < steps && (!resident || next_tile == 0)) load_key_block(next_block, resident ? next_block : next & 1);
        cp_async_commit();
        if (block != 0) {
            cp_async_wait<1>();  // everything but the block just requested: this step's K/V
            __syncthreads();
        }
        const uint32_t k_tile = kv_tiles + (resident ? block : step & 1) * 2 * Cfg::kTileBytes;
        rows.step(qf, dof, k_tile, k_tile + Cfg::kTileBytes, scale_log2, lse2, row_delta, false, all_keys);

        if (block == blocks - 1) {  // tile done: write each row's partial for this chunk
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                if (entry[i] < 0) continue;
                uint16_t* part = partial_dq + static_cast<long>(entry[i]) * HD;
#pragma unroll
                for (int dt = 0; dt < Rows::kDT; ++dt)
                    *reinterpret_cast<uint32_t*>(part + Rows::column(dt)) =
                        DT::pack(rows.acc[dt][2 * i] * scale, rows.acc[dt][2 * i + 1] * scale);
            }
            rows = Rows();
        }
        __syncthreads();  // this K/V stage is refilled next step
    }
}

// The epilogue of dq for row i of a warp's accumulators (dS K over the own chunk or causal prefix, unscaled): dq =
// scale * acc + the row's partials in slot order (width 0: none), in 8-column segments (quad_fragments_to_segments):
// one 16-byte load per partial segment, one 16-byte store. `row` = t * H + h, or -1 for a row past the sequence end
// (not written). Every lane of the warp calls it.
template <class DT, int HD>
__device__ __forceinline__ void store_dq_row(const float (&acc)[HD / 8][4], int i, long row, float scale, int width,
                                             const int* __restrict__ sel, const uint16_t* __restrict__ partial_dq,
                                             uint16_t* __restrict__ dq) {
    float seg[HD / 32][8];
    scaled_segments<HD>(acc, i, scale, seg);
    if (row < 0) return;
    // The partials in slot order (the selected slots come first, -1 after), kSlotBatch slots' loads in flight at
    // once: one slot at a time would wait a full memory round trip per slot.
    constexpr int kSlotBatch = 4;
    const int* row_sel = sel + row * width;
    for (int slot0 = 0; slot0 < width; slot0 += kSlotBatch) {
        bool selected[kSlotBatch];
#pragma unroll
        for (int j = 0; j < kSlotBatch; ++j)
            selected[j] = (j == 0 || selected[j - 1]) && slot0 + j < width && row_sel[slot0 + j] >= 0;
        uint4 packed[kSlotBatch][HD / 32];
#pragma unroll
        for (int j = 0; j < kSlotBatch; ++j) {
            const uint16_t* part = partial_dq + (row * width + slot0 + j) * HD;
#pragma unroll
            for (int k = 0; k < HD / 32; ++k)
                packed[j][k] = selected[j] ? *reinterpret_cast<const uint4*>(part + segment_column(k)) : uint4{};
        }
#pragma unroll
        for (int j = 0; j < kSlotBatch; ++j) {
            if (!selected[j]) break;
#pragma unroll
            for (int k = 0; k < HD / 32; ++k) {
                float part_seg[8];
                unpack_segment<DT>(packed[j][k], part_seg);
#pragma unroll
                for (int c = 0; c < 8; ++c) seg[k][c] += part_seg[c];
            }
        }
        if (!selected[kSlotBatch - 1]) break;
    }
    store_segments<DT, HD>(dq + row * HD, seg);
}

// ---------------------------------------------------------------------------------------------
// dq: one block = one 64-row query tile x one head; own chunk (dense: whole causal prefix), then
// the row's partials from dq_selected, in slot order.
// ---------------------------------------------------------------------------------------------
template <class DT, int HD>
__device__ __forceinline__ void bwd_dq(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                                       const uint16_t* __restrict__ v, const uint16_t* __restrict__ dout,
                                       const float* __restrict__ lse, const float* __restrict__ delta,
                                       uint16_t* __restrict__ dq, const int* __restrict__ cu_seqlens,
                                       const int* __restrict__ sel, int width, const int2* __restrict__ tiles, int heads,
                                       int kv_heads, int chunk_size, float scale, int dense,
                                       const uint16_t* __restrict__ partial_dq) {
    using Cfg = BwdConfig<HD>;
    using Rows = DqRows<DT, HD>;
    extern __shared__ __align__(128) unsigned char smem[];

    const QueryTileCoords tile = QueryTileCoords::of_block(tiles, cu_seqlens, heads, kv_heads);
    const int h = tile.h, hk = tile.hk, seq0 = tile.seq0, seq_len = tile.seq_len, start = tile.start;
    const int rows_valid = tile.rows_valid;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long q_stride = static_cast<long>(heads) * HD, kv_stride = static_cast<long>(kv_heads) * HD;
    const uint16_t* k_head = k + (static_cast<long>(seq0) * kv_heads + hk) * HD;
    const uint16_t* v_head = v + (static_cast<long>(seq0) * kv_heads + hk) * HD;

    const uint32_t q_tile = smem_address(smem), do_tile = q_tile + Cfg::kTileBytes;
    const uint32_t kv_tiles = do_tile + Cfg::kTileBytes;
    auto load_key_block = [&](int key0, int stage) {
        const uint32_t kt = kv_tiles + stage * 2 * Cfg::kTileBytes;
        const int valid = seq_len - key0;  // only the diagonal block can run past the sequence end
        load_tile_async<Cfg::kBlockN, HD, Cfg::kThreads>(kt, k_head + key0 * kv_stride, kv_stride, valid);
        load_tile_async<Cfg::kBlockN, HD, Cfg::kThreads>(kt + Cfg::kTileBytes, v_head + key0 * kv_stride, kv_stride, valid);
    };

    const long row0 = static_cast<long>(seq0 + start) * heads + h;
    load_tile_async<Cfg::kBlockM, HD, Cfg::kThreads>(q_tile, q + row0 * HD, q_stride, rows_valid);
    load_tile_async<Cfg::kBlockM, HD, Cfg::kThreads>(do_tile, dout + row0 * HD, q_stride, rows_valid);
    const int own_start = dense ? 0 : (start / chunk_size) * chunk_size;
    const int blocks = (start - own_start) / Cfg::kBlockN + 1;  // the last one is the diagonal block
    load_key_block(own_start, 0);
    cp_async_commit();

    const int row_in_tile[2] = {warp * 16 + (lane >> 2), warp * 16 + (lane >> 2) + 8};
    float lse2[2], row_delta[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const bool valid = row_in_tile[i] < rows_valid;
        lse2[i] = valid ? lse[row0 + static_cast<long>(row_in_tile[i]) * heads] * kLog2e : 0.f;
        row_delta[i] = valid ? delta[row0 + static_cast<long>(row_in_tile[i]) * heads] : 0.f;
    }
    Rows rows;
    uint32_t qf[HD / 16][4], dof[HD / 16][4];
    const float scale_log2 = scale * kLog2e;
    for (int block = 0; block < blocks; ++block) {
        if (block + 1 < blocks) load_key_block(own_start + (block + 1) * Cfg::kBlockN, (block + 1) & 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        if (block == 0) {
            load_row_fragments<HD>(qf, q_tile, warp * 16);
            load_row_fragments<HD>(dof, do_tile, warp * 16);
        }
        const uint32_t k_tile = kv_tiles + (block & 1) * 2 * Cfg::kTileBytes;
        const bool diagonal = block == blocks - 1;
        rows.step(qf, dof, k_tile, k_tile + Cfg::kTileBytes, scale_log2, lse2, row_delta, diagonal, row_in_tile);
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 2; ++i)
        store_dq_row<DT, HD>(rows.acc, i, row_in_tile[i] < rows_valid ? row0 + static_cast<long>(row_in_tile[i]) * heads : -1,
                             scale, dense ? 0 : width, sel, partial_dq, dq);
}

// ---------------------------------------------------------------------------------------------
// dkdv: one block = one 64-key tile x one kv head; warp w owns keys 16w..16w+15 of the tile.
// ---------------------------------------------------------------------------------------------

// The query tiles a key tile meets, in a fixed order: for each query head of the kv head's group,
// the own chunk's tiles from the diagonal on, then the (head, chunk) bucket's rows in tiles of 64.
struct KeyTileWork {
    static constexpr int kRows = 64;  // query rows per tile
    int start, own_end;               // the key tile's first key; the end of the own chunk's rows that see it
    int group_heads, first_head, own_tiles;
    int bucket_base;  // h * NFC + g offset for the first head, or -1 when the chunk has no bucket
    int num_full_chunks;
    const int* bucket_row0;
    // cursor: head of the group, tile within it, and that head's bucket (first row, row count)
    int head_index, index, sel_row0, sel_rows;

    struct QueryTile {
        int h;
        bool own;   // own chunk: rows start .. of the sequence; else bucket rows
        int first;  // own: first local query row; selected: first position in `rows`
        int count;  // valid rows (<= 64)
    };

    // The work of the key tile from `start` (local to a sequence of seq_len) of kv head hk: the own chunk's rows from
    // `start` on (dense: to the sequence end), and, for a full chunk, the rows of its (head, chunk) buckets.
    // chunk_base: the sequence's first global chunk.
    __device__ __forceinline__ static KeyTileWork of(int start, int seq_len, int hk, int heads, int kv_heads,
                                                     int chunk_size, int width, int dense, int num_full_chunks,
                                                     int chunk_base, const int* bucket_row0) {
        const int chunk = start / chunk_size;
        const bool full_chunk = !dense && width > 0 && (chunk + 1) * chunk_size <= seq_len;
        KeyTileWork w;
        w.start = start;
        w.own_end = dense ? seq_len : min((chunk + 1) * chunk_size, seq_len);
        w.group_heads = heads / kv_heads;
        w.first_head = hk * w.group_heads;
        w.own_tiles = (w.own_end - start + kRows - 1) / kRows;
        w.num_full_chunks = num_full_chunks;
        w.bucket_base = full_chunk ? w.first_head * num_full_chunks + chunk_base + chunk : -1;
        w.bucket_row0 = bucket_row0;
        w.enter_head(0);
        return w;
    }

    __device__ __forceinline__ void enter_head(int hi) {
        head_index = hi;
        index = 0;
        sel_row0 = sel_rows = 0;
        if (bucket_base >= 0 && hi < group_heads) {
            const int bucket = bucket_base + hi * num_full_chunks;
            sel_row0 = bucket_row0[bucket];
            sel_rows = bucket_row0[bucket + 1] - sel_row0;
        }
    }

    // Fills `t` with the current tile and advances; false when every tile has been handed out.
    __device__ __forceinline__ bool next(QueryTile& t) {
        while (head_index < group_heads) {
            if (index < own_tiles) {
                t.h = first_head + head_index;
                t.own = true;
                t.first = start + index * kRows;
                t.count = min(kRows, own_end - t.first);
                ++index;
                return true;
            }
            const int j = index - own_tiles;
            if (j * kRows < sel_rows) {
                t.h = first_head + head_index;
                t.own = false;
                t.first = sel_row0 + j * kRows;
                t.count = min(kRows, sel_rows - j * kRows);
                ++index;
                return true;
            }
            enter_head(head_index + 1);
        }
        return false;
    }
};

template <class DT, int HD>
__device__ __forceinline__ void bwd_dkdv(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                                         const uint16_t* __restrict__ v, const uint16_t* __restrict__ dout,
                                         const float* __restrict__ lse, const float* __restrict__ delta,
                                         uint16_t* __restrict__ dk, uint16_t* __restrict__ dv,
                                         const int* __restrict__ cu_seqlens, const int* __restrict__ chunk_base,
                                         const int2* __restrict__ tiles, const int* __restrict__ bucket_row0,
                                         const int* __restrict__ rows_of_buckets, int heads, int kv_heads, int width,
                                         int chunk_size, int num_full_chunks, float scale, int dense) {
    using Cfg = BwdConfig<HD>;
    constexpr int kDT = HD / 8;
    extern __shared__ __align__(128) unsigned char smem[];

    const int2 tile = tiles[blockIdx.x];
    const int hk = blockIdx.y;
    const int seq0 = cu_seqlens[tile.x], start = tile.y;
    const int seq_len = cu_seqlens[tile.x + 1] - seq0;
    const int keys_valid = min(Cfg::kBlockN, seq_len - start);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long kv_stride = static_cast<long>(kv_heads) * HD;

    KeyTileWork work = KeyTileWork::of(start, seq_len, hk, heads, kv_heads, chunk_size, width, dense, num_full_chunks,
                                       chunk_base[tile.x], bucket_row0);

    const uint32_t k_tile = smem_address(smem), v_tile = k_tile + Cfg::kTileBytes;
    const uint32_t qdo_tiles = v_tile + Cfg::kTileBytes;  // stage s: Q at qdo_tiles + 2s*kTileBytes, dO after it
    const uint32_t stats = qdo_tiles + 4 * Cfg::kTileBytes;  // stage s: lse[64], delta[64] at stats + s*kStatsBytes
    const uint32_t indices = stats + 2 * Cfg::kStatsBytes;   // stage s: entries of a gathered tile
    const float* const stats_ptr = reinterpret_cast<const float*>(smem + 6 * Cfg::kTileBytes);
    const int* const index_ptr = reinterpret_cast<const int*>(smem + 6 * Cfg::kTileBytes + 2 * Cfg::kStatsBytes);
    using QueryTile = KeyTileWork::QueryTile;

    auto fetch_indices = [&](const QueryTile& t, int stage) {  // own tiles need none
        if (t.own) return;
        for (int r = threadIdx.x; r < Cfg::kBlockM; r += Cfg::kThreads)
            cp_async_4(indices + (stage * Cfg::kBlockM + r) * 4, rows_of_buckets + t.first + r, r < t.count);
    };
    auto load_query_tile = [&](const QueryTile& t, int stage) {  // a gathered tile's indices have landed
        constexpr int kVectors = HD / 8;
        const int* idx = index_ptr + stage * Cfg::kBlockM;
        auto row_of = [&](int r) -> long {  // t * H + h
            return t.own ? static_cast<long>(seq0 + t.first + r) * heads + t.h : idx[r] / width;
        };
        const uint32_t qt = qdo_tiles + stage * 2 * Cfg::kTileBytes;
        for (int i = threadIdx.x; i < Cfg::kBlockM * kVectors; i += Cfg::kThreads) {
            const int r = i / kVectors, vec = i % kVectors;
            const bool valid = r < t.count;
            const long row = valid ? row_of(r) : 0;
            const uint32_t at = swizzled_offset<HD>(r, vec * 8);
            cp_async_16(qt + at, q + row * HD + vec * 8, valid);
            cp_async_16(qt + Cfg::kTileBytes + at, dout + row * HD + vec * 8, valid);
        }
        const uint32_t st = stats + stage * Cfg::kStatsBytes;
        for (int r = threadIdx.x; r < Cfg::kBlockM; r += Cfg::kThreads) {
            const bool valid = r < t.count;
            const long row = valid ? row_of(r) : 0;
            cp_async_4(st + r * 4, lse + row, valid);
            cp_async_4(st + (Cfg::kBlockM + r) * 4, delta + row, valid);
        }
    };

    const long key_row0 = static_cast<long>(seq0 + start) * kv_heads + hk;
    QueryTile current, upcoming, later;
    work.next(current);  // never empty: the diagonal tile always exists
    bool has_upcoming = work.next(upcoming);
    load_tile_async<Cfg::kBlockN, HD, Cfg::kThreads>(k_tile, k + key_row0 * HD, kv_stride, keys_valid);
    load_tile_async<Cfg::kBlockN, HD, Cfg::kThreads>(v_tile, v + key_row0 * HD, kv_stride, keys_valid);
    fetch_indices(current, 0);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    load_query_tile(current, 0);
    if (has_upcoming) fetch_indices(upcoming, 1);
    cp_async_commit();

    float acc_dk[kDT][4] = {}, acc_dv[kDT][4] = {};
    const float scale_log2 = scale * kLog2e;
    const int key_row[2] = {warp * 16 + (lane >> 2), warp * 16 + (lane >> 2) + 8};
    for (int step = 0;; ++step) {
        // This tile's Q/dO/lse/delta and the upcoming tile's indices have landed: start the upcoming
        // tile's rows and the indices of the one after, then compute.
        cp_async_wait<0>();
        __syncthreads();
        bool has_later = false;
        if (has_upcoming) {
            load_query_tile(upcoming, (step + 1) & 1);
            has_later = work.next(later);
            if (has_later) fetch_indices(later, step & 1);
        }
        cp_async_commit();

        const uint32_t q_tile = qdo_tiles + (step & 1) * 2 * Cfg::kTileBytes, do_tile = q_tile + Cfg::kTileBytes;
        const float* row_lse = stats_ptr + (step & 1) * 2 * Cfg::kBlockM;
        const float* row_delta = row_lse + Cfg::kBlockM;
        const bool diagonal = current.own && current.first == start;  // query j sees key i iff j >= i
        // Two halves of 32 query columns keep S^T and dP^T at 16 registers each.
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int col0 = half * 32;
            float st[4][4] = {}, dpt[4][4] = {};
            // S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys x 32 queries.
#pragma unroll
            for (int ks = 0; ks < HD / 16; ++ks) {
                uint32_t ka[4], va[4];
                load_a_fragment<HD>(ka, k_tile, warp * 16, ks * 16);
                load_a_fragment<HD>(va, v_tile, warp * 16, ks * 16);
#pragma unroll
                for (int np = 0; np < 2; ++np) {
                    uint32_t b[4];
                    load_b_fragments_nk<HD>(b, q_tile, col0 + np * 16, ks * 16);
                    DT::mma(st[2 * np], ka, b[0], b[1]);
                    DT::mma(st[2 * np + 1], ka, b[2], b[3]);
                    load_b_fragments_nk<HD>(b, do_tile, col0 + np * 16, ks * 16);
                    DT::mma(dpt[2 * np], va, b[0], b[1]);
                    DT::mma(dpt[2 * np + 1], va, b[2], b[3]);
                }
            }
            // P^T from each query's lse; dS^T = P^T * (dP^T - delta) kept in dpt.
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int col = col0 + nt * 8 + (lane & 3) * 2 + (e & 1);
                    const bool hidden = diagonal && col < key_row[e >> 1];
                    const float p = hidden ? 0.f : fast_exp2(fmaf(st[nt][e], scale_log2, -row_lse[col] * kLog2e));
                    st[nt][e] = p;
                    dpt[nt][e] = p * (dpt[nt][e] - row_delta[col]);
                }
            // dV += P^T dO and dK += dS^T Q over these 32 queries (two k-steps of 16).
            mma_accumulators_by_tile<DT, HD, 2>(acc_dv, st, do_tile, col0);
            mma_accumulators_by_tile<DT, HD, 2>(acc_dk, dpt, q_tile, col0);
        }
        __syncthreads();  // this stage is refilled next step
        if (!has_upcoming) break;
        current = upcoming;
        upcoming = later;
        has_upcoming = has_later;
    }

#pragma unroll
    for (int i = 0; i < 2; ++i) {
        if (key_row[i] >= keys_valid) continue;
        const long row = key_row0 + static_cast<long>(key_row[i]) * kv_heads;
        uint16_t* dk_row = dk + row * HD;
        uint16_t* dv_row = dv + row * HD;
#pragma unroll
        for (int dt = 0; dt < kDT; ++dt) {
            const int col = dt * 8 + (lane & 3) * 2;
            *reinterpret_cast<uint32_t*>(dk_row + col) = DT::pack(acc_dk[dt][2 * i] * scale, acc_dk[dt][2 * i + 1] * scale);
            *reinterpret_cast<uint32_t*>(dv_row + col) = DT::pack(acc_dv[dt][2 * i], acc_dv[dt][2 * i + 1]);
        }
    }
}

}  // namespace moba
