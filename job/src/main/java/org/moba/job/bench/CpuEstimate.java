package org.moba.job.bench;

import java.util.List;
import java.util.SplittableRandom;
import org.moba.kernels.AttendedPairs;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;
import org.moba.kernels.cpu.CpuMobaAttention;

/**
 * How long a bench grid would take on the CPU backend, before running it: the attention work of every shape (MoBA
 * pairs from the selection width, dense causal pairs, times the runs {@link BenchRunner} makes), divided by the CPU
 * backend's throughput measured here on a small dense batch. GPU-sized specs (conf/bench-flashmoba.json) take hours
 * on a laptop; the job refuses them unless {@code --allow-slow}.
 */
final class CpuEstimate {
    /** Above this the job refuses without {@code --allow-slow}. */
    static final double LIMIT_SECONDS = 600;

    private CpuEstimate() {
    }

    /** Estimated seconds of the whole grid at {@code flopsPerSecond}. */
    static double seconds(List<BenchShape> shapes, int warmup, int repeats, long seed, double flopsPerSecond) {
        double flops = 0;
        for (BenchShape s : shapes) {
            flops += flops(s, warmup, repeats, seed);
        }
        return flops / flopsPerSecond;
    }

    /** Useful flops of one shape: the warm-up and timed runs, MoBA and dense (the pairs come from the last run). */
    static double flops(BenchShape s, int warmup, int repeats, long seed) {
        MobaParams p = s.shape().params();
        double moba = 0;
        double dense = 0;
        for (int length : s.lengths().lengths(seed, p.chunkSize())) {
            moba += mobaPairs(length, p.chunkSize(), p.topk());
            dense += (double) length * (length + 1) / 2;
        }
        double perPair = AttendedPairs.FORWARD_FLOPS_PER_PAIR_DIM * s.shape().headDim() * s.shape().heads();
        return perPair * (moba + dense) * (warmup + repeats);
    }

    /** Pairs of one head of one sequence: each query's own chunk prefix plus up to topk - 1 earlier full chunks. */
    static double mobaPairs(int length, int chunk, int topk) {
        double pairs = 0;
        for (int p = 0; p < length; p++) {
            pairs += p % chunk + 1 + (double) chunk * Math.min(topk - 1, p / chunk);
        }
        return pairs;
    }

    /** The CPU backend's useful flop rate on this machine: one dense causal batch, after one warm-up run. */
    static double measureFlopsPerSecond() {
        BatchLayout layout = new BatchLayout(DType.BF16, 4, 4, 64);
        int length = 1024;
        PackedBatch batch = new SequencePacker(layout, length).concat(List.of(
                SyntheticSequences.random(new SplittableRandom(1), layout, "calibration", length))).batch();
        MobaParams dense = MobaParams.denseCausal(64);
        try (CpuMobaAttention cpu = new CpuMobaAttention(Runtime.getRuntime().availableProcessors())) {
            cpu.forward(batch, dense);
            long start = System.nanoTime();
            cpu.forward(batch, dense);
            double seconds = (System.nanoTime() - start) / 1e9;
            double pairs = (double) length * (length + 1) / 2 * layout.heads();
            return AttendedPairs.FORWARD_FLOPS_PER_PAIR_DIM * layout.headDim() * pairs / seconds;
        }
    }
}
