// Deterministic routing for the backward. The key-stationary dk/dv kernel accumulates the rows of a
// (head, chunk) bucket in registers, so their order decides the rounding: the forward's routing
// (atomic cursors, moba_route.cuh) would make dk/dv differ run to run. Here every bucket's rows come
// out ascending by entry index, built without any order-dependent step:
//   count  (bucket, token group) counts, integer atomics (order-free)
//   totals per bucket, then moba_route_scan for bucket_row0 / bucket_group0
//   place  per (bucket, token group): first position = bucket_row0 + earlier groups' counts
//   fill   one warp per (token group, head) walks that head's entries of the group in ascending order;
//          lanes that hit the same bucket rank themselves with __match_any_sync, the lowest lane
//          advances the cursor.
// A token group is `group_tokens` consecutive tokens of the batch; a bucket belongs to one head, so only
// one warp ever writes a (bucket, group) cursor and the fill needs no atomics.
#pragma once

#include "moba_route.cuh"

namespace moba {

struct BwdRouteConfig {
    static constexpr int kThreads = 128;  // totals / place / fill: one warp per bucket or (token group, head)
    static constexpr int kWarps = kThreads / 32;
};

__device__ __forceinline__ void bwd_route_count(const int* __restrict__ sel, const int* __restrict__ cu_seqlens,
                                                const int* __restrict__ chunk_base, int num_sequences, int heads,
                                                int width, int num_full_chunks, int entries, int group_tokens,
                                                int num_groups, int* __restrict__ group_count) {
    const ThreadEntry x = ThreadEntry::of(heads, width, entries);
    if (!x.valid) return;
    const int bucket = bucket_of_token(sel[x.e], x.t, x.h, cu_seqlens, chunk_base, num_sequences, width, num_full_chunks);
    if (bucket < 0) return;
    atomicAdd(&group_count[static_cast<long>(bucket) * num_groups + x.t / group_tokens], 1);
}

__device__ __forceinline__ void bwd_route_totals(const int* __restrict__ group_count, int num_buckets, int num_groups,
                                                 int* __restrict__ bucket_count) {
    const int bucket = blockIdx.x * BwdRouteConfig::kWarps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (bucket >= num_buckets) return;
    const int* counts = group_count + static_cast<long>(bucket) * num_groups;
    int sum = 0;
    for (int g = lane; g < num_groups; g += 32) sum += counts[g];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) bucket_count[bucket] = sum;
}

// Exclusive scan of one bucket's group counts, in place, offset by the bucket's first row.
__device__ __forceinline__ void bwd_route_place(int* __restrict__ group_count, const int* __restrict__ bucket_row0,
                                                int num_buckets, int num_groups) {
    const int bucket = blockIdx.x * BwdRouteConfig::kWarps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (bucket >= num_buckets) return;
    int* counts = group_count + static_cast<long>(bucket) * num_groups;
    int run = bucket_row0[bucket];
    for (int g0 = 0; g0 < num_groups; g0 += 32) {
        const int g = g0 + lane;
        const int c = g < num_groups ? counts[g] : 0;
        int inclusive = c;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const int up = __shfl_up_sync(0xffffffffu, inclusive, off);
            if (lane >= off) inclusive += up;
        }
        if (g < num_groups) counts[g] = run + inclusive - c;
        run += __shfl_sync(0xffffffffu, inclusive, 31);
    }
}

__device__ __forceinline__ void bwd_route_fill(const int* __restrict__ sel, const int* __restrict__ cu_seqlens,
                                               const int* __restrict__ chunk_base, int num_sequences, int heads,
                                               int width, int num_full_chunks, int num_tokens, int group_tokens,
                                               int num_groups, int* __restrict__ group_cursor, int* __restrict__ rows) {
    const int warp = blockIdx.x * BwdRouteConfig::kWarps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (warp >= num_groups * heads) return;
    // One warp per (token group, head): a bucket holds one head's entries, so its (bucket, group) cursor is
    // still written by one warp only, and walking the group's tokens in order keeps every bucket ascending.
    const int group = warp / heads, head = warp - group * heads;
    const int t_begin = group * group_tokens, t_end = min(num_tokens, t_begin + group_tokens);
    const int count = (t_end - t_begin) * width;
    const unsigned lower_lanes = (1u << lane) - 1u;
    for (int i0 = 0; i0 < count; i0 += 32) {
        const int i = i0 + lane;
        int e = 0, bucket = -1;
        if (i < count) {
            const int token = t_begin + i / width;
            e = (token * heads + head) * width + i % width;  // < T*H*W < 2^31 (ABI)
            bucket = bucket_of_token(sel[e], token, head, cu_seqlens, chunk_base, num_sequences, width,
                                     num_full_chunks);
        }
        const unsigned peers = __match_any_sync(0xffffffffu, bucket);
        volatile int* cursor = bucket >= 0 ? group_cursor + static_cast<long>(bucket) * num_groups + group : nullptr;
        const int base = bucket >= 0 ? *cursor : 0;
        __syncwarp();  // every lane has read its cursor before the leaders advance them
        if (bucket >= 0) {
            rows[base + __popc(peers & lower_lanes)] = e;
            if ((peers & lower_lanes) == 0) *cursor = base + __popc(peers);
        }
        __syncwarp();
    }
}

}  // namespace moba
