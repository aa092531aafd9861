package org.moba.job.score;

import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.QualityMetrics;
import org.moba.kernels.Sequence;
import org.moba.kernels.SequencePacker;

/**
 * CPU micro-benchmark of {@code score}'s host-side steps for one 16K-token batch (8 records x 2048 tokens, H16/Hkv4,
 * D128, bf16: 96 MiB of q/k/v), each before (the code as of ff25ea8, inlined here) and after: records into a batch,
 * the NaN/Inf scan, result rows from MoBA's output, and the host metrics (the CPU backend's path). Prints the median
 * thread CPU time (robust to other processes sharing the cores) of {@code runs} runs after 3 warm-ups.
 *
 * <p>{@code java -cp kernels/target/classes:job/target/classes:job/target/test-classes
 * org.moba.job.score.ScoreHostBench [runs]}
 */
public final class ScoreHostBench {
    private static final ThreadMXBean THREADS = ManagementFactory.getThreadMXBean();
    private static final BatchLayout LAYOUT = new BatchLayout(DType.BF16, 16, 4, 128);
    private static volatile Object sink;

    private ScoreHostBench() {
    }

    public static void main(String[] args) {
        int runs = args.length > 0 ? Integer.parseInt(args[0]) : 9;
        SplittableRandom rng = new SplittableRandom(1);
        List<TensorRecord> records = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            records.add(TensorRecord.of("r" + i, 2048, "bf16", 16, 4, 128, randomBytes(rng, 2048 * 16 * 128),
                    randomBytes(rng, 2048 * 4 * 128), randomBytes(rng, 2048 * 4 * 128)));
        }
        System.out.println("batch: 8 x 2048 tokens, H16/Hkv4 D128 bf16, median thread CPU ms of " + runs + " runs");

        bench("records -> batch, before: decode to short[] (+ scan) + concat", runs, () -> {
            List<Sequence> group = new ArrayList<>();
            for (TensorRecord r : records) {
                Sequence s = new Sequence(r.id(), r.length(), TensorRecord.shorts(r.q()), TensorRecord.shorts(r.k()),
                        TensorRecord.shorts(r.v()));
                for (short[] a : List.of(s.q(), s.k(), s.v())) {
                    if (DType.BF16.firstNonFinite(a) >= 0) {
                        throw new IllegalStateException();
                    }
                }
                group.add(s);
            }
            sink = new SequencePacker(LAYOUT, Integer.MAX_VALUE).concat(group);
        });
        BatchLoader loader = new BatchLoader(new org.apache.hadoop.conf.Configuration(), true, true,
                HostBuffers.executor(), org.moba.kernels.HostMemory.PAGEABLE);
        bench("records -> batch, after: validate + load into a direct buffer (+ scan)", runs, () -> {
            for (TensorRecord r : records) {
                r.validate(false);
            }
            BatchLoader.Loaded loaded = loader.load(records, LAYOUT);
            sink = loaded.batch();
            loaded.release();
        });
        short[] qValues = TensorRecord.shorts(records.get(0).q());
        bench("NaN/Inf scan of one q (8 MiB), short[]", runs, () -> sink = DType.BF16.firstNonFinite(qValues));
        bench("NaN/Inf scan of one q (8 MiB), little-endian byte[]", runs,
                () -> sink = DType.BF16.firstNonFinite(records.get(0).q()));

        SequencePacker.Packed packed = new SequencePacker(LAYOUT, Integer.MAX_VALUE).concat(records.stream()
                .map(r -> new Sequence(r.id(), r.length(), TensorRecord.shorts(r.q()), TensorRecord.shorts(r.k()),
                        TensorRecord.shorts(r.v()))).toList());
        PackedBatch batch = packed.batch();
        short[] out = batch.q().clone();
        float[] lse = new float[batch.totalTokens() * 16];
        short[] dense = batch.q().clone();
        for (int j = 0; j < dense.length; j += 7) {
            dense[j] = DType.BF16.fromFloat(DType.BF16.toFloat(dense[j]) * 1.01f);
        }
        float[] denseLse = lse.clone();
        MobaOutput moba = new MobaOutput(out, lse, new int[0], 0, null);
        MobaOutput denseOut = new MobaOutput(dense, denseLse, new int[0], 0, null);
        bench("result rows, before: unpack + bytes(out), bytes(lse)", runs, () -> {
            List<Object> rows = new ArrayList<>();
            for (SequencePacker.SequenceResult m : SequencePacker.unpack(packed, moba)) {
                rows.add(TensorRecord.bytes(m.out()));
                rows.add(TensorRecord.bytes(m.lse()));
            }
            sink = rows;
        });
        bench("result rows, after: bytes of the batch's slices", runs, () -> {
            List<Object> rows = new ArrayList<>();
            for (int b = 0; b < batch.numSequences(); b++) {
                int s = batch.seqStart(b);
                int l = batch.seqLength(b);
                rows.add(TensorRecord.bytes(out, s * 16 * 128, l * 16 * 128));
                rows.add(TensorRecord.bytes(lse, s * 16, l * 16));
            }
            sink = rows;
        });
        int metricRuns = Math.max(3, runs / 3);
        bench("host metrics, before: unpack + head-major per sequence", metricRuns, () -> {
            List<SequencePacker.SequenceResult> m = SequencePacker.unpack(packed, moba);
            List<SequencePacker.SequenceResult> d = SequencePacker.unpack(packed, denseOut);
            List<QualityMetrics> metrics = new ArrayList<>();
            for (int i = 0; i < m.size(); i++) {
                metrics.add(headMajor(m.get(i).length(), m.get(i).out(), m.get(i).lse(), d.get(i).out(),
                        d.get(i).lse()));
            }
            sink = metrics;
        });
        bench("host metrics, after: QualityMetrics.of (token-major)", metricRuns,
                () -> sink = QualityMetrics.of(batch, out, lse, dense, denseLse));
    }

    private static byte[] randomBytes(SplittableRandom rng, int values) {
        short[] v = new short[values];
        for (int i = 0; i < v.length; i++) {
            v[i] = DType.BF16.fromFloat((float) rng.nextGaussian());
        }
        ByteBuffer b = ByteBuffer.allocate(values * 2).order(ByteOrder.LITTLE_ENDIAN);
        b.asShortBuffer().put(v);
        return b.array();
    }

    private static void bench(String name, int runs, Runnable r) {
        for (int i = 0; i < 3; i++) {
            r.run();
        }
        double[] ms = new double[runs];
        for (int i = 0; i < runs; i++) {
            long start = THREADS.getCurrentThreadCpuTime();
            r.run();
            ms[i] = (THREADS.getCurrentThreadCpuTime() - start) / 1e6;
        }
        Arrays.sort(ms);
        System.out.printf("%-66s %8.2f ms (min %.2f, max %.2f)%n", name, ms[runs / 2], ms[0], ms[runs - 1]);
    }

    /**
     * The job's metrics loop as of ff25ea8: per head, rows of the sequence in token order (bf16, H16, D128). A frozen
     * copy on purpose, the "before" side of the timing; {@code DenseComparisonTest.previousMetrics} (kernels tests,
     * not on this module's classpath) is the same code kept verbatim as the bit-for-bit reference.
     */
    private static QualityMetrics headMajor(int length, short[] mobaOut, float[] mobaLse, short[] denseOut,
                                            float[] denseLse) {
        int heads = 16;
        int headDim = 128;
        double[] recall = new double[heads];
        double[] cosine = new double[heads];
        double[] relError = new double[heads];
        for (int h = 0; h < heads; h++) {
            double kept = 0;
            double dot = 0;
            double mm = 0;
            double dd = 0;
            double diff = 0;
            for (int t = 0; t < length; t++) {
                kept += Math.exp((double) mobaLse[t * heads + h] - denseLse[t * heads + h]);
                int base = (t * heads + h) * headDim;
                float rowDot = 0;
                float rowMm = 0;
                float rowDd = 0;
                float rowDiff = 0;
                for (int i = 0; i < headDim; i++) {
                    float m = DType.BF16.toFloat(mobaOut[base + i]);
                    float d = DType.BF16.toFloat(denseOut[base + i]);
                    rowDot += m * d;
                    rowMm += m * m;
                    rowDd += d * d;
                    rowDiff += (m - d) * (m - d);
                }
                dot += rowDot;
                mm += rowMm;
                dd += rowDd;
                diff += rowDiff;
            }
            recall[h] = length == 0 ? 1 : kept / length;
            cosine[h] = mm == 0 || dd == 0 ? (mm == dd ? 1 : 0) : dot / Math.sqrt(mm * dd);
            relError[h] = dd == 0 ? Math.sqrt(diff) : Math.sqrt(diff / dd);
        }
        return new QualityMetrics(recall, cosine, relError);
    }
}
