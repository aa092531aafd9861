package org.moba.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.moba.kernels.cpu.CpuMobaAttention;

/**
 * {@link MobaAttention#compareWithDense}'s default (two forwards, metrics on the host) on the CPU backend: the metrics
 * are bit for bit those of the job's {@code QualityMetrics} before it moved to the kernels module (kept below as
 * {@link #previousMetrics}), computed on the two forwards' outputs of each sequence.
 */
class DenseComparisonTest {
    private static CpuMobaAttention cpu;

    @BeforeAll
    static void start() {
        cpu = new CpuMobaAttention(2);
    }

    @AfterAll
    static void stop() {
        cpu.close();
    }

    private static PackedBatch batch(BatchLayout layout, long seed, int... lengths) {
        SyntheticSequences synth = new SyntheticSequences(seed, layout, 64);
        List<Sequence> sequences = new ArrayList<>();
        for (int i = 0; i < lengths.length; i++) {
            sequences.add(synth.generate(i, lengths[i]));
        }
        return new SequencePacker(layout, Integer.MAX_VALUE).concat(sequences).batch();
    }

    @ParameterizedTest(name = "{0}")
    @EnumSource(DType.class)
    void defaultPathGivesThePreviousQualityMetricsBitForBit(DType dtype) {
        BatchLayout layout = new BatchLayout(dtype, 4, 2, 64);
        PackedBatch batch = batch(layout, 11, 0, 1, 63, 64, 65, 300, 0, 517);
        MobaParams params = MobaParams.of(64, 2);
        DenseComparison c = cpu.compareWithDense(batch, params, true);

        MobaOutput moba = cpu.forward(batch, params);
        MobaOutput dense = cpu.forward(batch, MobaParams.denseCausal(64));
        assertArrayEquals(moba.out(), c.moba().out());
        assertArrayEquals(moba.lse(), c.moba().lse());
        assertArrayEquals(moba.selected(), c.moba().selected());
        SequencePacker.Packed packed = new SequencePacker.Packed(batch, ids(batch.numSequences()));
        List<SequencePacker.SequenceResult> m = SequencePacker.unpack(packed, moba);
        List<SequencePacker.SequenceResult> d = SequencePacker.unpack(packed, dense);
        assertEquals(batch.numSequences(), c.metrics().size());
        boolean someBelowOne = false;
        for (int b = 0; b < batch.numSequences(); b++) {
            QualityMetrics before = previousMetrics(dtype, m.get(b).length(), layout.heads(), layout.headDim(),
                    m.get(b).out(), m.get(b).lse(), d.get(b).out(), d.get(b).lse());
            QualityMetrics now = c.metrics().get(b);
            assertArrayEquals(before.recall(), now.recall(), 0.0, "recall of sequence " + b);
            assertArrayEquals(before.cosine(), now.cosine(), 0.0, "cosine of sequence " + b);
            assertArrayEquals(before.relError(), now.relError(), 0.0, "relative error of sequence " + b);
            for (double r : now.recall()) {
                someBelowOne |= r < 1 - 1e-6;
            }
        }
        assertTrue(someBelowOne, "the batch should exercise MoBA dropping mass");
        // Sequences of one chunk or less: MoBA is dense attention.
        for (int b : new int[] {0, 1, 2, 3}) {
            for (int h = 0; h < layout.heads(); h++) {
                assertEquals(1.0, c.metrics().get(b).recall()[h], 1e-6);
                assertEquals(0.0, c.metrics().get(b).relError()[h], 1e-6);
            }
        }
    }

    @Test
    void metricsOnlyLeavesTheOutputOutAndReportsEveryPhase() {
        PackedBatch batch = batch(new BatchLayout(DType.BF16, 4, 4, 32), 3, 200, 90);
        MobaParams params = MobaParams.of(64, 2);
        DenseComparison kept = cpu.compareWithDense(batch, params, true);
        DenseComparison metricsOnly = cpu.compareWithDense(batch, params, false);
        assertNull(metricsOnly.moba());
        for (int b = 0; b < 2; b++) {
            assertArrayEquals(kept.metrics().get(b).recall(), metricsOnly.metrics().get(b).recall(), 0.0);
            assertArrayEquals(kept.metrics().get(b).relError(), metricsOnly.metrics().get(b).relError(), 0.0);
        }
        assertEquals(List.of(DenseComparison.H2D, DenseComparison.MOBA, DenseComparison.DENSE,
                DenseComparison.METRICS, DenseComparison.D2H), List.copyOf(kept.timings().asMap().keySet()));
        assertTrue(kept.timings().get(DenseComparison.MOBA) > 0 && kept.timings().get(DenseComparison.DENSE) > 0);
        assertEquals(0.0, kept.timings().get(DenseComparison.H2D) + kept.timings().get(DenseComparison.D2H));
    }

    @Test
    void denseBaselineKeepsChunkAndScale() {
        MobaParams p = MobaParams.of(128, 3).withSoftmaxScale(0.25f);
        MobaParams dense = DenseComparison.denseParams(p);
        assertTrue(dense.denseCausal());
        assertEquals(128, dense.chunkSize());
        assertEquals(0.25f, dense.softmaxScale());
        assertEquals(MobaParams.denseCausal(64), DenseComparison.denseParams(MobaParams.of(64, 2)));
    }

    @Test
    void aBackendWithOnlyAForwardGetsTheDefault() {
        CountingForwards counting = new CountingForwards(cpu);
        PackedBatch batch = batch(new BatchLayout(DType.FP16, 2, 1, 32), 5, 130);
        DenseComparison c = counting.compareWithDense(batch, MobaParams.of(64, 1), false);
        assertEquals(2, counting.forwards());
        assertEquals(1, c.metrics().size());
    }

    @Test
    void sumsAndFromSumsSplitTheMath() {
        BatchLayout layout = new BatchLayout(DType.FP16, 2, 1, 32);
        SplittableRandom rng = new SplittableRandom(7);
        PackedBatch batch = new SequencePacker(layout, Integer.MAX_VALUE).concat(List.of(
                SyntheticSequences.random(rng, layout, "a", 70), SyntheticSequences.random(rng, layout, "b", 0)))
                .batch();
        MobaOutput moba = cpu.forward(batch, MobaParams.of(64, 1));
        MobaOutput dense = cpu.forward(batch, MobaParams.denseCausal(64));
        double[] sums = QualityMetrics.sums(batch, moba.out(), moba.lse(), dense.out(), dense.lse());
        assertEquals(2 * 2 * QualityMetrics.SUMS, sums.length);
        QualityMetrics empty = QualityMetrics.fromSums(batch, sums).get(1);
        assertArrayEquals(new double[] {1, 1}, empty.recall(), 0.0);
        assertArrayEquals(new double[] {1, 1}, empty.cosine(), 0.0);
        assertArrayEquals(new double[] {0, 0}, empty.relError(), 0.0);
        QualityMetrics a = QualityMetrics.fromSums(70, 2, sums, 0);
        assertEquals(sums[0] / 70, a.recall()[0], 0.0);
        assertEquals(sums[1] / Math.sqrt(sums[2] * sums[3]), a.cosine()[0], 0.0);
        assertEquals(Math.sqrt(sums[4] / sums[3]), a.relError()[0], 0.0);
    }

    private static List<String> ids(int n) {
        List<String> ids = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            ids.add("s" + i);
        }
        return ids;
    }

    /**
     * Verbatim the job's {@code QualityMetrics.of} at commit ff25ea8, before the math moved here. A second copy of the
     * metrics math on purpose: it is the frozen reference the current {@link QualityMetrics} must match bit for bit,
     * so it must neither call nor follow the production code. {@code ScoreHostBench.headMajor} (job tests) is the
     * same frozen code specialised to its one shape, timed as the "before"; the job's tests cannot see this class.
     */
    static QualityMetrics previousMetrics(DType dtype, int length, int heads, int headDim, short[] mobaOut,
                                          float[] mobaLse, short[] denseOut, float[] denseLse) {
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
                // One row in float (D terms of similar size), accumulated across rows in double.
                float rowDot = 0;
                float rowMm = 0;
                float rowDd = 0;
                float rowDiff = 0;
                for (int i = 0; i < headDim; i++) {
                    float m = dtype.toFloat(mobaOut[base + i]);
                    float d = dtype.toFloat(denseOut[base + i]);
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
