// MoBA forward attention, FlashAttention-2 style (mma.sync m16n8k16, fp32 accumulation).
//
// One block = one 64-row query tile (inside one chunk) x one head; 4 warps x 16 rows. The block
// walks a schedule of 64-key blocks (KeyBlockSchedule): every chunk selected by at least one row
// of the tile, in ascending order, then the own chunk's causal prefix ending with the diagonal
// block. Each key block goes through: S = Q K^T, per-row masking, online softmax, O += P V.
// K/V tiles are double-buffered in shared memory with cp.async.
#pragma once

#include "moba_device.cuh"

namespace moba {

template <int HD>
struct AttnFwdConfig {
    static constexpr int kThreads = 128;
    static constexpr int kBlockM = 64;  // query rows per block, 16 per warp
    static constexpr int kBlockN = 64;  // keys per key block; divides every chunk size
    static constexpr int kStages = 2;
    static constexpr int kQBytes = kBlockM * HD * 2;
    static constexpr int kKVBytes = kBlockN * HD * 2;
    static constexpr int kSmemBytes = kQBytes + kStages * 2 * kKVBytes;
};

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

template <class DT, int HD>
__device__ __forceinline__ void attn_fwd(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                                         const uint16_t* __restrict__ v, uint16_t* __restrict__ out,
                                         float* __restrict__ lse, const int* __restrict__ cu_seqlens,
                                         const int* __restrict__ sel, int width, const int2* __restrict__ tiles,
                                         int heads, int kv_heads, int chunk_size, float scale, int dense) {
    using Cfg = AttnFwdConfig<HD>;
    constexpr int kNT = Cfg::kBlockN / 8;  // n8 tiles of S
    constexpr int kDT = HD / 8;            // n8 tiles of O
    extern __shared__ __align__(128) unsigned char smem[];

    const int2 tile = tiles[blockIdx.x];
    const int h = blockIdx.y, hk = h / (heads / kv_heads);
    const int seq0 = cu_seqlens[tile.x], start = tile.y;
    const int seq_len = cu_seqlens[tile.x + 1] - seq0;
    const int rows_valid = min(Cfg::kBlockM, seq_len - start);
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

    KeyBlockSchedule schedule;
    schedule.init(sel, seq0 + start, heads, h, width, rows_valid, chunk_size, start, dense != 0);
    KeyBlock current;
    schedule.next(current);  // never empty: the diagonal block always exists

    load_tile_async<Cfg::kBlockM, HD, Cfg::kThreads>(q_tile, q + (static_cast<long>(seq0 + start) * heads + h) * HD,
                                                     q_stride, rows_valid);
    load_key_block(current.key0, 0);
    cp_async_commit();

    // Per thread: rows r_i = warp*16 + lane/4 + 8i; running max m (log2 units, scaled), running
    // partial denominator l (this thread's columns only, summed across the quad at the end).
    const int row_in_tile[2] = {warp * 16 + (lane >> 2), warp * 16 + (lane >> 2) + 8};
    float row_max[2] = {kNegInf, kNegInf}, row_sum[2] = {0.f, 0.f};
    float acc_o[kDT][4] = {};
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

        const uint32_t k_tile = kv_tiles + (step & 1) * 2 * Cfg::kKVBytes, v_tile = k_tile + Cfg::kKVBytes;
        const bool row_sees[2] = {((current.rows >> row_in_tile[0]) & 1) != 0, ((current.rows >> row_in_tile[1]) & 1) != 0};
        // A warp none of whose rows selected this chunk skips it (its rows' results are unchanged).
        if (((current.rows >> (warp * 16)) & 0xffffu) != 0) {
            // S = Q K^T
            float s[kNT][4] = {};
#pragma unroll
            for (int ks = 0; ks < HD / 16; ++ks) {
#pragma unroll
                for (int np = 0; np < kNT / 2; ++np) {
                    uint32_t b[4];
                    load_b_fragments_nk<HD>(b, k_tile, np * 16, ks * 16);
                    DT::mma(s[2 * np], qf[ks], b[0], b[1]);
                    DT::mma(s[2 * np + 1], qf[ks], b[2], b[3]);
                }
            }

            // Masking: rows that did not select this chunk see none of it; on the diagonal block a
            // row sees keys up to its own position (key0 == tile start there).
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int i = e >> 1, col = nt * 8 + (lane & 3) * 2 + (e & 1);
                    const bool visible = row_sees[i] && (current.kind != KeyBlockKind::kDiagonal || col <= row_in_tile[i]);
                    if (!visible) s[nt][e] = kNegInf;
                }
            }

            // Online softmax: new running max, rescale what was accumulated under the old max by
            // exp2(m_old - m_new), then p = exp2(scale*log2e*s - m_new). A row that has seen no key
            // yet keeps m = -inf; its reference point is 0 so no inf - inf appears.
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                float mx = kNegInf;
#pragma unroll
                for (int nt = 0; nt < kNT; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * i], s[nt][2 * i + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float m_new = fmaxf(row_max[i], mx * scale_log2);
                const float m_ref = m_new == kNegInf ? 0.f : m_new;
                const float rescale = fast_exp2(row_max[i] - m_ref);
                row_max[i] = m_new;
                row_sum[i] *= rescale;
#pragma unroll
                for (int dt = 0; dt < kDT; ++dt) { acc_o[dt][2 * i] *= rescale; acc_o[dt][2 * i + 1] *= rescale; }
#pragma unroll
                for (int nt = 0; nt < kNT; ++nt) {
                    s[nt][2 * i] = fast_exp2(fmaf(s[nt][2 * i], scale_log2, -m_ref));
                    s[nt][2 * i + 1] = fast_exp2(fmaf(s[nt][2 * i + 1], scale_log2, -m_ref));
                    row_sum[i] += s[nt][2 * i] + s[nt][2 * i + 1];
                }
            }

            // O += P V, P re-packed from the S accumulators as A fragments (16 keys per MMA k-step).
#pragma unroll
            for (int kt = 0; kt < Cfg::kBlockN / 16; ++kt) {
                const uint32_t a[4] = {DT::pack(s[2 * kt][0], s[2 * kt][1]), DT::pack(s[2 * kt][2], s[2 * kt][3]),
                                       DT::pack(s[2 * kt + 1][0], s[2 * kt + 1][1]),
                                       DT::pack(s[2 * kt + 1][2], s[2 * kt + 1][3])};
#pragma unroll
                for (int dp = 0; dp < kDT / 2; ++dp) {
                    uint32_t b[4];
                    load_b_fragments_kn<HD>(b, v_tile, kt * 16, dp * 16);
                    DT::mma(acc_o[2 * dp], a, b[0], b[1]);
                    DT::mma(acc_o[2 * dp + 1], a, b[2], b[3]);
                }
            }
        }
        __syncthreads();  // this stage is refilled two steps from now
        if (!more) break;
        current = upcoming;
    }

    // Epilogue: full denominators, normalise, write out (16-bit) and lse (natural log, fp32).
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        float l = row_sum[i];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const int r = row_in_tile[i];
        if (r >= rows_valid) continue;
        const float inv = 1.f / l;
        const long token = seq0 + start + r;
        uint16_t* o_row = out + (token * heads + h) * HD;
#pragma unroll
        for (int dt = 0; dt < kDT; ++dt) {
            const int col = dt * 8 + (lane & 3) * 2;
            *reinterpret_cast<uint32_t*>(o_row + col) = DT::pack(acc_o[dt][2 * i] * inv, acc_o[dt][2 * i + 1] * inv);
        }
        if ((lane & 3) == 0) lse[token * heads + h] = (row_max[i] + log2f(l)) * kLn2;
    }
}

}  // namespace moba
