// Routing for the gathered ("key-stationary") attention: buckets the (token, head, slot) entries
// of `sel` by (head, global chunk) so that the rows that selected one chunk can be processed as
// dense 64-row tiles against that chunk's keys.
//   bucket = h * NFC + g; entry e = (t * H + h) * W + slot.
// Positions inside a bucket come from atomics and vary run to run, but each row's result depends
// only on its own query and the chunk's keys, so outputs stay bit-identical.
// The forward routes no entry of a row whose own chunk c <= W: such a row selected every past chunk,
// and moba_attn_own_combine walks its whole causal prefix instead (all_past_selected).
#pragma once

#include "moba_device.cuh"

namespace moba {

struct RouteConfig {
    static constexpr int kThreads = 256;      // count / fill
    static constexpr int kScanThreads = 1024;  // scan: one block
};

// Whether the rows of a query tile starting at local row `start` selected every past chunk: their
// own chunk c <= W, so S(p, h) = {0 .. c-1} (MOBA semantics: min(topk - 1, c) = c of the c candidates).
__device__ __forceinline__ bool all_past_selected(int start, int chunk_size, int width) {
    return start / chunk_size <= width;
}

// The bucket of token t's entry for head h that selected chunk c (local to the sequence), or -1 for a padding
// entry (c < 0). chunk_size > 0: also -1 for every entry of a row that selected all its past chunks (the forward
// walks those rows densely); 0: route every entry.
__device__ __forceinline__ int bucket_of_token(int c, int t, int h, const int* cu_seqlens, const int* chunk_base,
                                               int num_sequences, int width, int num_full_chunks, int chunk_size = 0) {
    if (c < 0) return -1;
    const int b = segment_of(cu_seqlens, num_sequences, t);
    if (chunk_size > 0 && all_past_selected(t - cu_seqlens[b], chunk_size, width)) return -1;
    return h * num_full_chunks + chunk_base[b] + c;
}

// This thread's entry e = (t * H + h) * W + slot in a one-thread-per-entry grid (RouteConfig::kThreads), split into
// token and head. Index arithmetic in 32 bits (ABI: T*H*W < 2^31): two 64-bit divisions per entry cost more than
// the rest of a routing thread's work.
struct ThreadEntry {
    bool valid;  // false past the last entry
    int e, t, h;

    __device__ __forceinline__ static ThreadEntry of(int heads, int width, int entries) {
        ThreadEntry x{};
        const long e = blockIdx.x * static_cast<long>(RouteConfig::kThreads) + threadIdx.x;
        x.valid = e < entries;
        if (!x.valid) return x;
        const int per_token = heads * width;
        x.e = static_cast<int>(e);
        x.t = x.e / per_token;
        x.h = (x.e - x.t * per_token) / width;
        return x;
    }
};

__device__ __forceinline__ void route_count(const int* __restrict__ sel, const int* __restrict__ cu_seqlens,
                                            const int* __restrict__ chunk_base, int num_sequences, int heads, int width,
                                            int num_full_chunks, int entries, int chunk_size,
                                            int* __restrict__ bucket_count) {
    const ThreadEntry x = ThreadEntry::of(heads, width, entries);
    if (!x.valid) return;
    const int bucket = bucket_of_token(sel[x.e], x.t, x.h, cu_seqlens, chunk_base, num_sequences, width, num_full_chunks,
                                       chunk_size);
    if (bucket >= 0) atomicAdd(&bucket_count[bucket], 1);
}

// Exclusive prefix sums over n buckets of the row counts (bucket_row0) and of the group counts
// (bucket_group0; a group is up to rows_per_group rows of one bucket, one block of the gathered
// kernel), each with the total at [n]; bucket_cursor starts at bucket_row0.
__device__ __forceinline__ void route_scan(const int* __restrict__ bucket_count, int n, int rows_per_group,
                                           int* __restrict__ bucket_row0, int* __restrict__ bucket_group0,
                                           int* __restrict__ bucket_cursor) {
    constexpr int kThreads = RouteConfig::kScanThreads;
    __shared__ int2 sums[kThreads];
    const int per = (n + kThreads - 1) / kThreads;
    const int lo = min(n, threadIdx.x * per), hi = min(n, lo + per);
    int2 mine = make_int2(0, 0);
    for (int i = lo; i < hi; ++i) {
        mine.x += bucket_count[i];
        mine.y += (bucket_count[i] + rows_per_group - 1) / rows_per_group;
    }
    sums[threadIdx.x] = mine;
    __syncthreads();
    for (int off = 1; off < kThreads; off <<= 1) {  // inclusive Hillis-Steele scan
        const int2 add = threadIdx.x >= off ? sums[threadIdx.x - off] : make_int2(0, 0);
        __syncthreads();
        sums[threadIdx.x].x += add.x;
        sums[threadIdx.x].y += add.y;
        __syncthreads();
    }
    int2 run = threadIdx.x > 0 ? sums[threadIdx.x - 1] : make_int2(0, 0);
    for (int i = lo; i < hi; ++i) {
        bucket_row0[i] = run.x;
        bucket_cursor[i] = run.x;
        bucket_group0[i] = run.y;
        run.x += bucket_count[i];
        run.y += (bucket_count[i] + rows_per_group - 1) / rows_per_group;
    }
    if (threadIdx.x == kThreads - 1) {
        bucket_row0[n] = sums[kThreads - 1].x;
        bucket_group0[n] = sums[kThreads - 1].y;
    }
}

__device__ __forceinline__ void route_fill(const int* __restrict__ sel, const int* __restrict__ cu_seqlens,
                                           const int* __restrict__ chunk_base, int num_sequences, int heads, int width,
                                           int num_full_chunks, int entries, int chunk_size,
                                           int* __restrict__ bucket_cursor, int* __restrict__ rows) {
    const ThreadEntry x = ThreadEntry::of(heads, width, entries);
    if (!x.valid) return;
    const int bucket = bucket_of_token(sel[x.e], x.t, x.h, cu_seqlens, chunk_base, num_sequences, width, num_full_chunks,
                                       chunk_size);
    if (bucket >= 0) rows[atomicAdd(&bucket_cursor[bucket], 1)] = x.e;
}

// One block's share of the gathered work (moba_attn_selected, moba_bwd_dq_selected): up to rows_per_group rows of
// one (head, chunk) bucket, and where that chunk's keys start. Groups past the last one (the grid is an upper
// bound) get valid == false.
struct BucketGroup {
    bool valid;
    int h, hk;       // query head, its kv head
    int first;       // position of the group's first row in `rows`
    int rows;        // rows in the group
    long key0;       // the chunk's first key (global token)

    // Group `group`; kWarpSearch: the 32 lanes of a warp look it up together (segment_of_warp), every lane calling.
    template <bool kWarpSearch = false>
    __device__ __forceinline__ static BucketGroup of(int group, const int* bucket_row0, const int* bucket_group0,
                                                     const int* chunk_base, const int* cu_seqlens, int num_sequences,
                                                     int heads, int kv_heads, int num_full_chunks, int chunk_size,
                                                     int rows_per_group) {
        BucketGroup grp{};
        const int buckets = heads * num_full_chunks;
        grp.valid = group < bucket_group0[buckets];
        if (!grp.valid) return grp;
        auto find = [](const int* offsets, int n, int x) {
            return kWarpSearch ? segment_of_warp(offsets, n, x) : segment_of(offsets, n, x);
        };
        const int bucket = find(bucket_group0, buckets, group);
        const int g = bucket % num_full_chunks;
        grp.h = bucket / num_full_chunks;
        grp.hk = grp.h / (heads / kv_heads);
        const int b = find(chunk_base, num_sequences, g);
        grp.key0 = cu_seqlens[b] + static_cast<long>(g - chunk_base[b]) * chunk_size;
        grp.first = bucket_row0[bucket] + (group - bucket_group0[bucket]) * rows_per_group;
        grp.rows = min(rows_per_group, bucket_row0[bucket + 1] - grp.first);
        return grp;
    }

    __device__ __forceinline__ static BucketGroup of_block(const int* bucket_row0, const int* bucket_group0,
                                                           const int* chunk_base, const int* cu_seqlens,
                                                           int num_sequences, int heads, int kv_heads,
                                                           int num_full_chunks, int chunk_size, int rows_per_group) {
        return of(static_cast<int>(blockIdx.x), bucket_row0, bucket_group0, chunk_base, cu_seqlens, num_sequences,
                  heads, kv_heads, num_full_chunks, chunk_size, rows_per_group);
    }
};

}  // namespace moba
