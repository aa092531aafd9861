package org.moba.kernels.bench;

import java.lang.management.ManagementFactory;
import java.util.Arrays;
import java.util.Locale;
import java.util.stream.IntStream;
import org.moba.kernels.AttendedPairs;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaGradients;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.PhaseTimings;
import org.moba.kernels.Sequence;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;
import org.moba.kernels.cpu.CpuMobaAttention;
import org.moba.kernels.reference.MobaReference;

/**
 * Forward throughput of the fast CPU backend on one long sequence (T=16384, H=Hkv=8, D=128, C=512, topk=3, bf16,
 * structured inputs whose topic changes every chunk), and of the float64 oracle on the same shape.
 *
 * <p>Usage: {@code CpuBench [threads] [runs] [warmups] [oracle rows to sample, 0 = all]}. Prints a markdown table:
 * median, p10 and p90 wall time over the timed runs, tokens/s and useful GFLOP/s (4*D per attended (query, key)
 * pair and head, the docs/public-kernels.md metric); then the backward and forward + backward (training) times,
 * counting 10*D useful FLOPs per attended pair and head backward.
 */
public final class CpuBench {
    private static final int TOKENS = 16384;
    private static final int HEADS = 8;
    private static final int HEAD_DIM = 128;
    private static final int CHUNK = 512;
    private static final int TOPK = 3;
    private static final long SEED = 20250213L;

    private CpuBench() {
    }

    public static void main(String[] args) {
        int threads = args.length > 0 ? Integer.parseInt(args[0]) : Runtime.getRuntime().availableProcessors();
        int runs = args.length > 1 ? Integer.parseInt(args[1]) : 7;
        int warmups = args.length > 2 ? Integer.parseInt(args[2]) : 3;
        int oracleRows = args.length > 3 ? Integer.parseInt(args[3]) : 0;

        BatchLayout layout = new BatchLayout(DType.BF16, HEADS, HEADS, HEAD_DIM);
        Sequence sequence = new SyntheticSequences(SEED, layout, CHUNK).generate(0, TOKENS);
        PackedBatch batch = new SequencePacker(layout, TOKENS).concat(java.util.List.of(sequence)).batch();
        MobaParams params = MobaParams.of(CHUNK, TOPK);
        String shape = "1x" + TOKENS + ", H=" + HEADS + ", D=" + HEAD_DIM + ", chunk " + CHUNK + ", topk " + TOPK
                + ", bf16";

        try (CpuMobaAttention cpu = new CpuMobaAttention(threads)) {
            System.out.println("device: " + cpu.device());
            MobaOutput last = null;
            for (int i = 0; i < warmups; i++) {
                last = cpu.forward(batch, params);
            }
            double[] millis = new double[runs];
            PhaseTimings[] phases = new PhaseTimings[runs];
            long cpuStart = processCpuNanos();
            for (int i = 0; i < runs; i++) {
                long start = System.nanoTime();
                last = cpu.forward(batch, params);
                millis[i] = (System.nanoTime() - start) / 1e6;
                phases[i] = last.timings();
            }
            double cpuSecondsPerRun = (processCpuNanos() - cpuStart) / 1e9 / runs;
            long pairs = AttendedPairs.count(batch, params, last);
            double[] sorted = millis.clone();
            Arrays.sort(sorted);
            double median = percentile(sorted, 0.5);
            System.out.println();
            System.out.println("| shape | implementation | threads | ms median | ms p10 | ms p90 | tokens/s"
                    + " | useful GFLOP/s |");
            System.out.println("|---|---|---|---|---|---|---|---|");
            System.out.println(row(shape, "cpu (fp32)", threads, median, percentile(sorted, 0.1),
                    percentile(sorted, 0.9), pairs));
            System.out.printf(Locale.ROOT, "%nphases of the median run: %s%n", phases[indexOf(millis, median)]);
            // CPU time shows how much of the wall time was spent waiting for cores on a shared machine.
            System.out.printf(Locale.ROOT, "process CPU time per run: %.2f s (wall median x threads = %.2f s)%n",
                    cpuSecondsPerRun, median / 1e3 * threads);
            System.out.printf(Locale.ROOT, "attended pairs: %d (%.1f%% of causal), runs: %d after %d warm-ups%n",
                    pairs, 100.0 * pairs / ((double) TOKENS * (TOKENS + 1) / 2 * HEADS), runs, warmups);
            timeTraining(cpu, batch, params, runs, warmups, pairs, shape, threads);
            timeOracle(batch, params, oracleRows, pairs, shape);
        }
    }

    /**
     * Forward + backward (the training step's attention) with a fixed random {@code dout}: wall time of the pair, of
     * the backward alone, and useful GFLOP/s counting 4*D per attended pair forward and 10*D backward (five
     * products: q.k and dout.v recomputed, dv, dk, dq; the FlashAttention convention of backward = 2.5 x forward).
     */
    private static void timeTraining(CpuMobaAttention cpu, PackedBatch batch, MobaParams params, int runs,
                                     int warmups, long pairs, String shape, int threads) {
        short[] dout = new short[batch.q().length];
        java.util.SplittableRandom rng = new java.util.SplittableRandom(SEED + 1);
        for (int i = 0; i < dout.length; i++) {
            dout[i] = batch.dtype().fromFloat((float) (rng.nextDouble() * 2 - 1));
        }
        for (int i = 0; i < warmups; i++) {
            cpu.backward(batch, params, cpu.forward(batch, params), dout);
        }
        double[] both = new double[runs];
        double[] backward = new double[runs];
        PhaseTimings[] phases = new PhaseTimings[runs];
        for (int i = 0; i < runs; i++) {
            long start = System.nanoTime();
            MobaOutput out = cpu.forward(batch, params);
            long mid = System.nanoTime();
            MobaGradients grads = cpu.backward(batch, params, out, dout);
            long end = System.nanoTime();
            both[i] = (end - start) / 1e6;
            backward[i] = (end - mid) / 1e6;
            phases[i] = grads.timings();
        }
        double[] sortedBoth = both.clone();
        Arrays.sort(sortedBoth);
        double[] sortedBackward = backward.clone();
        Arrays.sort(sortedBackward);
        double medianBackward = percentile(sortedBackward, 0.5);
        System.out.println(row(shape, "cpu (fp32) backward", threads, medianBackward,
                percentile(sortedBackward, 0.1), percentile(sortedBackward, 0.9), pairs, 10));
        System.out.println(row(shape, "cpu (fp32) forward+backward", threads, percentile(sortedBoth, 0.5),
                percentile(sortedBoth, 0.1), percentile(sortedBoth, 0.9), pairs, 14));
        System.out.printf(Locale.ROOT, "%nbackward phases of the median backward run: %s%n",
                phases[indexOf(backward, medianBackward)]);
    }

    /**
     * Times the oracle on every row, or on {@code sampleRows} evenly spaced rows scaled up to all rows; the sampled
     * estimate separates the fixed cost of a call (widening the whole batch, chunk means), timed on one trivial row.
     */
    private static void timeOracle(PackedBatch batch, MobaParams params, int sampleRows, long pairs, String shape) {
        if (sampleRows <= 0 || sampleRows >= TOKENS) {
            double ms = timeOracleRows(batch, params, IntStream.range(0, TOKENS).toArray());
            System.out.println(row(shape, "oracle (float64), all rows, one run", cores(), ms, ms, ms, pairs));
            return;
        }
        double fixed = timeOracleRows(batch, params, new int[] {0});
        int[] tokens = IntStream.range(0, sampleRows).map(i -> (int) ((long) i * TOKENS / sampleRows)).toArray();
        double sampled = timeOracleRows(batch, params, tokens);
        double estimate = fixed + (sampled - fixed) * TOKENS / sampleRows;
        String how = String.format(Locale.ROOT, "oracle (float64), estimated: %.0f ms fixed + %d evenly spaced rows "
                + "(%.0f ms) scaled x%d", fixed, sampleRows, sampled - fixed, TOKENS / sampleRows);
        System.out.println(row(shape, how, cores(), estimate, estimate, estimate, pairs));
    }

    private static double timeOracleRows(PackedBatch batch, MobaParams params, int[] tokens) {
        long start = System.nanoTime();
        MobaReference.forwardRows(batch, params, tokens);
        return (System.nanoTime() - start) / 1e6;
    }

    private static int cores() {
        return Runtime.getRuntime().availableProcessors();
    }


    private static String row(String shape, String impl, int threads, double median, double p10, double p90,
                              long pairs) {
        return row(shape, impl, threads, median, p10, p90, pairs, 4);
    }

    /** {@code flopsPerDim}: useful FLOPs per attended pair and head dimension (4 forward, 10 backward). */
    private static String row(String shape, String impl, int threads, double median, double p10, double p90,
                              long pairs, int flopsPerDim) {
        double gflops = (double) flopsPerDim * HEAD_DIM * pairs / (median * 1e6);
        return String.format(Locale.ROOT, "| %s | %s | %d | %.1f | %.1f | %.1f | %.0f | %.2f |", shape, impl, threads,
                median, p10, p90, TOKENS / (median / 1e3), gflops);
    }

    private static long processCpuNanos() {
        return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
                .getProcessCpuTime();
    }

    private static double percentile(double[] sorted, double q) {
        int i = (int) Math.round(q * (sorted.length - 1));
        return sorted[i];
    }

    private static int indexOf(double[] values, double v) {
        for (int i = 0; i < values.length; i++) {
            if (values[i] == v) {
                return i;
            }
        }
        return 0;
    }
}
