// Quality of MoBA against dense causal attention (the score job's metrics), reduced on the device so
// that only B*H*5 doubles go back to the host. One block per (sequence, head); the reduction order
// is that of the Java host code (org.moba.kernels.QualityMetrics):
//   - each row's D products are summed in fp32 in dimension order, rounded after every multiply and
//     add (no fused multiply-add), so every row sum is bit-identical to the host's;
//   - rows are summed in double: thread j takes rows j, j + kThreads, ... in order, then the block
//     adds the threads' partials in a fixed tree. Only this association of the double sums differs
//     from the host's row-by-row loop. No atomics: bit-identical results run to run.
#pragma once

#include "moba_device.cuh"

namespace moba {

struct ScoreConfig {
    static constexpr int kThreads = 256;
    static constexpr int kSums = 5;  // kept, dot, mm, dd, diff
};

template <class DT>
__device__ __forceinline__ void score_word(uint32_t mw, uint32_t dw, float& dot, float& mm, float& dd, float& diff) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {  // the low half is the lower (earlier) element
        const float m = DT::to_float(static_cast<uint16_t>(half ? mw >> 16 : mw & 0xffffu));
        const float d = DT::to_float(static_cast<uint16_t>(half ? dw >> 16 : dw & 0xffffu));
        dot = __fadd_rn(dot, __fmul_rn(m, d));
        mm = __fadd_rn(mm, __fmul_rn(m, m));
        dd = __fadd_rn(dd, __fmul_rn(d, d));
        const float e = __fsub_rn(m, d);
        diff = __fadd_rn(diff, __fmul_rn(e, e));
    }
}

// sums[(b * heads + h) * 5 + {0..4}] = kept, dot, mm, dd, diff of sequence b = blockIdx.x, head
// h = blockIdx.y (zeros for an empty sequence).
template <class DT, int HD>
__device__ __forceinline__ void score_sums(const uint16_t* __restrict__ moba_out, const float* __restrict__ moba_lse,
                                           const uint16_t* __restrict__ dense_out,
                                           const float* __restrict__ dense_lse, const int* __restrict__ cu_seqlens,
                                           int heads, double* __restrict__ sums) {
    constexpr int kThreads = ScoreConfig::kThreads, kSums = ScoreConfig::kSums;
    __shared__ double partial[kSums][kThreads];
    const int b = blockIdx.x, h = blockIdx.y;
    const int start = cu_seqlens[b], length = cu_seqlens[b + 1] - start;

    double acc[kSums] = {0.0, 0.0, 0.0, 0.0, 0.0};
    for (int t = threadIdx.x; t < length; t += kThreads) {
        const long row = static_cast<long>(start + t) * heads + h;
        acc[0] = __dadd_rn(acc[0], exp(static_cast<double>(moba_lse[row]) - static_cast<double>(dense_lse[row])));
        const uint4* m4 = reinterpret_cast<const uint4*>(moba_out + row * HD);
        const uint4* d4 = reinterpret_cast<const uint4*>(dense_out + row * HD);
        float dot = 0.f, mm = 0.f, dd = 0.f, diff = 0.f;
#pragma unroll 4
        for (int v = 0; v < HD / 8; ++v) {  // 8 elements per 16-byte load
            const uint4 mv = m4[v], dv = d4[v];
            score_word<DT>(mv.x, dv.x, dot, mm, dd, diff);
            score_word<DT>(mv.y, dv.y, dot, mm, dd, diff);
            score_word<DT>(mv.z, dv.z, dot, mm, dd, diff);
            score_word<DT>(mv.w, dv.w, dot, mm, dd, diff);
        }
        acc[1] = __dadd_rn(acc[1], static_cast<double>(dot));
        acc[2] = __dadd_rn(acc[2], static_cast<double>(mm));
        acc[3] = __dadd_rn(acc[3], static_cast<double>(dd));
        acc[4] = __dadd_rn(acc[4], static_cast<double>(diff));
    }
#pragma unroll
    for (int s = 0; s < kSums; ++s) partial[s][threadIdx.x] = acc[s];
    __syncthreads();
    for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
#pragma unroll
            for (int s = 0; s < kSums; ++s) {
                partial[s][threadIdx.x] = __dadd_rn(partial[s][threadIdx.x], partial[s][threadIdx.x + stride]);
            }
        }
        __syncthreads();
    }
    if (threadIdx.x < kSums) {
        sums[(static_cast<long>(b) * heads + h) * kSums + threadIdx.x] = partial[threadIdx.x][0];
    }
}

}  // namespace moba
