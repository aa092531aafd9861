// The FlashAttention-2 inner step shared by every attention kernel: one 64-key block against a
// warp's 16 query rows (mma.sync m16n8k16, fp32 accumulation, online softmax in log2 units).
#pragma once

#include "moba_device.cuh"

namespace moba {

template <int HD>
struct FlashConfig {
    static constexpr int kThreads = 128;
    static constexpr int kBlockM = 64;  // query rows per block, 16 per warp
    static constexpr int kBlockN = 64;  // keys per key block; divides every chunk size
    static constexpr int kStages = 2;
    static constexpr int kQBytes = kBlockM * HD * 2;
    static constexpr int kKVBytes = kBlockN * HD * 2;
    static constexpr int kSmemBytes = kQBytes + kStages * 2 * kKVBytes;  // Q, then per stage K and V
};

// The query tile of a (tile, head) block: grid (num_tiles, H), tiles[x] = (sequence, local start row).
struct QueryTileCoords {
    int h, hk;        // query head, its kv head
    int seq0;         // the sequence's first token (global)
    int seq_len;
    int start;        // the tile's first row, local to the sequence
    int rows_valid;   // rows of the tile inside the sequence (<= ROWS)

    // Block (x, y) = (tile, query head); ROWS: the tiles' rows (64; the sm_90a kernels' wide tiles: 128).
    template <int ROWS = 64>
    __device__ __forceinline__ static QueryTileCoords of_block(const int2* __restrict__ tiles,
                                                               const int* __restrict__ cu_seqlens, int heads,
                                                               int kv_heads) {
        const int2 tile = tiles[blockIdx.x];
        QueryTileCoords c;
        c.h = blockIdx.y;
        c.hk = c.h / (heads / kv_heads);
        c.seq0 = cu_seqlens[tile.x];
        c.seq_len = cu_seqlens[tile.x + 1] - c.seq0;
        c.start = tile.y;
        c.rows_valid = min(ROWS, c.seq_len - c.start);
        return c;
    }
};

// acc (a warp's 16 rows x HD, fp32) += A B, where A = the fp32 accumulator tiles s[0 .. 2*KSTEPS) of an
// earlier MMA (16 rows x 16*KSTEPS columns), rounded to DT and re-packed as A fragments (the P of P V), and
// B = rows k0 .. k0 + 16*KSTEPS of a [k][n] tile, n = 0 .. HD-1, read transposed.
template <class DT, int HD, int KSTEPS>
__device__ __forceinline__ void mma_accumulators_by_tile(float (&acc)[HD / 8][4], const float (&s)[2 * KSTEPS][4],
                                                         uint32_t tile, int k0) {
#pragma unroll
    for (int kt = 0; kt < KSTEPS; ++kt) {
        const uint32_t a[4] = {DT::pack(s[2 * kt][0], s[2 * kt][1]), DT::pack(s[2 * kt][2], s[2 * kt][3]),
                               DT::pack(s[2 * kt + 1][0], s[2 * kt + 1][1]), DT::pack(s[2 * kt + 1][2], s[2 * kt + 1][3])};
#pragma unroll
        for (int np = 0; np < HD / 16; ++np) {
            uint32_t b[4];
            load_b_fragments_kn<HD>(b, tile, k0 + kt * 16, np * 16);
            DT::mma(acc[2 * np], a, b[0], b[1]);
            DT::mma(acc[2 * np + 1], a, b[2], b[3]);
        }
    }
}

// The running softmax state of one thread's two query rows (lane/4 and lane/4 + 8 of its warp's
// 16): row max m (log2 units of scaled scores), this thread's share of the denominator l, and
// its columns of the unnormalised output. BN keys per step. The register layout is that of an
// m16n8 accumulator tile per 8 columns, which is also the layout of a wgmma m64nN accumulator in
// each warp of the warpgroup: the sm_80 and sm_90a engines share this state and its epilogue.
template <class DT, int HD, int BN = 64>
struct FlashRows {
    static constexpr int kNT = BN / 8;  // n8 tiles of S
    static constexpr int kDT = HD / 8;  // n8 tiles of O
    float row_max[2] = {kNegInf, kNegInf};
    float row_sum[2] = {0.f, 0.f};
    float acc_o[kDT][4] = {};

    // Masks s[nt][e] (column nt*8 + (lane&3)*2 + (e&1) of row e>>1) outside [key_first, key_last] of its row.
    __device__ __forceinline__ static void mask(float (&s)[kNT][4], const int (&key_first)[2], const int (&key_last)[2]) {
        const int lane = threadIdx.x & 31;
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int col = nt * 8 + (lane & 3) * 2 + (e & 1);
                if (col < key_first[e >> 1] || col > key_last[e >> 1]) s[nt][e] = kNegInf;
            }
    }

    // Online softmax over one step's scores: new running max, rescale what was accumulated under the
    // old max by exp2(m_old - m_new), then s becomes p = exp2(scale*log2e*s - m_new). A row that has
    // seen no key yet keeps m = -inf; its reference point is 0 so no inf - inf appears.
    __device__ __forceinline__ void softmax_step(float (&s)[kNT][4], float scale_log2) {
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
    }

    // One key block on the mma.sync engine. A row i sees key columns 0..key_limit[i] (-1: none);
    // `masked` false means every row sees all BN keys and the masking pass is skipped.
    __device__ __forceinline__ void attend(const uint32_t (&qf)[HD / 16][4], uint32_t k_tile, uint32_t v_tile,
                                           float scale_log2, bool masked, const int (&key_limit)[2]) {
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
        if (masked) mask(s, {0, 0}, key_limit);
        softmax_step(s, scale_log2);
        // O += P V, P re-packed from the S accumulators (16 keys per MMA k-step).
        mma_accumulators_by_tile<DT, HD, kNT / 2>(acc_o, s, v_tile, 0);
    }

    // Row i's full denominator (summed over the quad) and natural-log lse; every lane of the quad
    // gets both.
    __device__ __forceinline__ float denominator(int i) const {
        float l = row_sum[i];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        return l;
    }
    __device__ __forceinline__ float lse(int i, float denominator) const { return (row_max[i] + log2f(denominator)) * kLn2; }

    // This thread's columns of row i: dt*8 + (lane&3)*2 + {0,1}.
    __device__ __forceinline__ static int column(int dt) { return dt * 8 + (threadIdx.x & 3) * 2; }
};

// A row's values in the MMA fragment layout (lane q = lane & 3 of the row's quad holds columns dt*8 + 2q, +1 as
// o[dt][0..1]) handed round the quad so that lane q holds whole 8-column segments instead: seg[k][0..7] = columns
// (4k + q)*8 .. +7, k = 0 .. HD/32 - 1. Each lane then reads and writes a row with 16-byte vectors (a quad covers
// the row's HD*2 bytes in whole 32-byte sectors), where the fragment layout needs four-byte accesses. Every lane of
// the warp must call it (shuffles); the values are moved, not changed.
template <int HD>
__device__ __forceinline__ void quad_fragments_to_segments(const float (&o)[HD / 8][2], float (&seg)[HD / 32][8]) {
    const int q = threadIdx.x & 3;
#pragma unroll
    for (int k = 0; k < HD / 32; ++k)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            // Lane q sends its pair of segment 4k + (q^r) to lane q^r and receives that lane's pair of segment 4k + q.
            const int peer = q ^ r;
            float send0 = o[4 * k][0], send1 = o[4 * k][1];
#pragma unroll
            for (int j = 1; j < 4; ++j)
                if (peer == j) { send0 = o[4 * k + j][0]; send1 = o[4 * k + j][1]; }
            const float got0 = __shfl_xor_sync(0xffffffffu, send0, r), got1 = __shfl_xor_sync(0xffffffffu, send1, r);
#pragma unroll
            for (int j = 0; j < 4; ++j)
                if (peer == j) { seg[k][2 * j] = got0; seg[k][2 * j + 1] = got1; }
        }
}

// The first column of this lane's segment k (quad_fragments_to_segments).
__device__ __forceinline__ int segment_column(int k) { return (4 * k + (threadIdx.x & 3)) * 8; }

template <class DT>
__device__ __forceinline__ uint4 pack_segment(const float (&v)[8]) {
    return make_uint4(DT::pack(v[0], v[1]), DT::pack(v[2], v[3]), DT::pack(v[4], v[5]), DT::pack(v[6], v[7]));
}

// The inverse of pack_segment: 8 consecutive DT values (one 16-byte load) as floats.
template <class DT>
__device__ __forceinline__ void unpack_segment(uint4 packed, float (&v)[8]) {
    const uint32_t pairs[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        v[2 * j] = DT::to_float(static_cast<uint16_t>(pairs[j] & 0xffffu));
        v[2 * j + 1] = DT::to_float(static_cast<uint16_t>(pairs[j] >> 16));
    }
}

// Row i (0: this thread's upper row of the m16n8 accumulators, 1: its lower) of `acc` times `factor`, as this lane's
// 8-column segments. Every lane of the warp calls it.
template <int HD>
__device__ __forceinline__ void scaled_segments(const float (&acc)[HD / 8][4], int i, float factor,
                                                float (&seg)[HD / 32][8]) {
    float o[HD / 8][2];
#pragma unroll
    for (int dt = 0; dt < HD / 8; ++dt) { o[dt][0] = acc[dt][2 * i] * factor; o[dt][1] = acc[dt][2 * i + 1] * factor; }
    quad_fragments_to_segments<HD>(o, seg);
}

// Row i of `rows` divided by its denominator l, as this lane's 8-column segments. Every lane of the warp calls it.
template <int HD, class Rows>
__device__ __forceinline__ void normalized_segments(const Rows& rows, int i, float l, float (&seg)[HD / 32][8]) {
    scaled_segments<HD>(rows.acc_o, i, 1.f / l, seg);
}

// This lane's segments of a row stored at `row` in DT, one 16-byte store each.
template <class DT, int HD>
__device__ __forceinline__ void store_segments(uint16_t* row, const float (&seg)[HD / 32][8]) {
#pragma unroll
    for (int k = 0; k < HD / 32; ++k) *reinterpret_cast<uint4*>(row + segment_column(k)) = pack_segment<DT>(seg[k]);
}

// The epilogue of a query tile: normalise this thread's two rows, merge the gathered kernel's
// per-(row, slot) partials by their lse (kCombine), write out and lse. row_token[i] is row i's
// global token, -1 for a row past the sequence end (not written). Rows are handled in 8-column
// segments (quad_fragments_to_segments): one 16-byte load per partial segment, one 16-byte store.
template <class DT, int HD, bool kCombine, class Rows>
__device__ __forceinline__ void write_rows(const Rows& rows, const long (&row_token)[2], int h, int heads, int width,
                                           const int* __restrict__ sel, const uint16_t* __restrict__ partial_o,
                                           const float* __restrict__ partial_lse, uint16_t* __restrict__ out,
                                           float* __restrict__ lse) {
    constexpr int kSegments = HD / 32;
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const float l = rows.denominator(i);
        float seg[kSegments][8];
        normalized_segments<HD>(rows, i, l, seg);
        const long token = row_token[i];
        if (token < 0) continue;
        float row_lse = rows.lse(i, l);
        if constexpr (kCombine) {
            // out = sum_j exp(lse_j - M) o_j / sum_j exp(lse_j - M) over the own chunk and every
            // selected chunk, merged in slot order (a running M keeps every weight <= 1).
            const long e0 = (token * heads + h) * width;
            int selected = 0;  // sel rows are ascending with -1 padding last
            while (selected < width && sel[e0 + selected] >= 0) ++selected;
            float m = row_lse, den = 1.f;
#pragma unroll 2
            for (int slot = 0; slot < selected; ++slot) {
                const float part_lse = partial_lse[e0 + slot];
                const float m_new = fmaxf(m, part_lse);
                const float keep = expf(m - m_new), w = expf(part_lse - m_new);
                den = den * keep + w;
                const uint16_t* part = partial_o + (e0 + slot) * HD;
#pragma unroll
                for (int k = 0; k < kSegments; ++k) {
                    float part_seg[8];
                    unpack_segment<DT>(*reinterpret_cast<const uint4*>(part + segment_column(k)), part_seg);
#pragma unroll
                    for (int c = 0; c < 8; ++c) seg[k][c] = seg[k][c] * keep + w * part_seg[c];
                }
                m = m_new;
            }
            const float inv_den = 1.f / den;
#pragma unroll
            for (int k = 0; k < kSegments; ++k)
#pragma unroll
                for (int c = 0; c < 8; ++c) seg[k][c] *= inv_den;
            row_lse = m + logf(den);
        }
        store_segments<DT, HD>(out + (token * heads + h) * HD, seg);
        if ((lane & 3) == 0) lse[token * heads + h] = row_lse;
    }
}

// The gathered kernels' epilogue: this thread's two rows normalised and written as one selected chunk's partial:
// o in the input dtype at partial_o[e * HD] (16-byte stores of 8-column segments), lse at partial_lse[e], e = entry[i]
// the row's (token, head, slot) entry, -1 for a row past the group (not written). Callers read the entries early, so
// that the epilogue never waits on a global load.
template <class DT, int HD, class Rows>
__device__ __forceinline__ void write_partial_rows(const Rows& rows, const int (&entry)[2], uint16_t* __restrict__ partial_o,
                                                   float* __restrict__ partial_lse) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const float l = rows.denominator(i);
        float seg[HD / 32][8];
        normalized_segments<HD>(rows, i, l, seg);
        if (entry[i] < 0) continue;
        const long e = entry[i];
        store_segments<DT, HD>(partial_o + e * HD, seg);
        if ((lane & 3) == 0) partial_lse[e] = rows.lse(i, l);
    }
}

}  // namespace moba
