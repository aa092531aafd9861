package org.moba.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.moba.kernels.cpu.CpuCases.RUN_SEED;
import static org.moba.kernels.cpu.CpuCases.SMALL_BLOCK_ROWS;
import static org.moba.kernels.cpu.CpuCases.lengthKinds;
import static org.moba.kernels.cpu.CpuCases.mk;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.ErrorMetrics;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.Sequence;
import org.moba.kernels.SyntheticSequences;
import org.moba.kernels.cpu.CpuCases.Case;
import org.moba.kernels.reference.MobaReference;

/**
 * The CPU backend against the float64 oracle on fresh inputs: every run draws new seeds (printed in each case's
 * name, so a failure can be replayed by pinning {@link CpuCases#RUN_SEED}).
 */
class CpuMobaAttentionTest {
    /** fp32 accumulation against float64: relative L2 of the fp32 output and of lse. */
    private static final double FP32_TOLERANCE = 1e-5;
    /** Gate scores closer than this (relative) may legitimately order differently in fp32 than in float64. */
    private static final double NEAR_TIE = 1e-6;

    private static CpuMobaAttention cpu;
    private static CpuMobaAttention smallBlocks;

    @BeforeAll
    static void start() {
        cpu = new CpuMobaAttention(2);
        smallBlocks = new CpuMobaAttention(2, SMALL_BLOCK_ROWS);
    }

    @AfterAll
    static void stop() {
        cpu.close();
        smallBlocks.close();
    }

    /** {@link CpuCases#lengthKinds}, then head dims 96 and 256, many chunks, chunks longer than a key segment. */
    static Stream<Case> mobaCases() {
        DType bf = DType.BF16;
        DType fp = DType.FP16;
        return Stream.concat(lengthKinds(700, 1000, 600), Stream.of(
                mk("length C and 1", 128, 2, 32, 4, 4, bf, false, 128, 1),
                mk("93 chunks, topk 3", 16, 3, 128, 4, 4, fp, true, 1490),
                mk("head dim 96", 16, 3, 96, 4, 2, bf, true, 90, 7),
                mk("head dim 256", 64, 2, 256, 2, 1, fp, false, 150),
                mk("chunk longer than a key segment", 1030, 3, 64, 2, 1, fp, false, 2100, 3)));
    }

    static Stream<Case> denseCases() {
        return Stream.of(
                mk("dense packed", 64, 3, 64, 8, 2, DType.BF16, true, 0, 1, 200, 65, 0),
                mk("dense long", 16, 2, 128, 4, 4, DType.FP16, false, 333, 16));
    }

    static Stream<Case> smallBlockCases() {
        return Stream.of(
                mk("blocks split chunks, packed", 64, 3, 64, 8, 2, DType.FP16, true, 0, 200, 1, 70),
                mk("blocks split chunks, long", 16, 8, 32, 4, 4, DType.BF16, false, 301),
                mk("blocks split chunks longer than a key segment", 600, 2, 32, 2, 1, DType.BF16, true, 1300, 5));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("mobaCases")
    void mobaMatchesOracle(Case c) {
        assertMatchesOracle(cpu, c.batch(), c.params(), c.toString());
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("denseCases")
    void denseMatchesOracleDense(Case c) {
        assertMatchesOracle(cpu, c.batch(), c.denseParams(), c + " (dense)");
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("smallBlockCases")
    void blocksSplittingChunksMatchOracle(Case c) {
        String label = c + ", " + SMALL_BLOCK_ROWS + " rows per block";
        assertMatchesOracle(smallBlocks, c.batch(), c.params(), label);
        assertMatchesOracle(smallBlocks, c.batch(), c.denseParams(), label + " (dense)");
    }

    @Test
    void explicitSoftmaxScaleMatchesOracle() {
        Case c = mk("explicit softmax scale", 16, 3, 64, 4, 2, DType.BF16, true, 100, 33);
        assertMatchesOracle(cpu, c.batch(), c.params().withSoftmaxScale(0.37f), c + ", scale 0.37");
    }

    private static void assertMatchesOracle(CpuMobaAttention backend, PackedBatch batch, MobaParams params,
                                            String label) {
        CpuForward actual = backend.forwardFloat(batch, params);
        MobaOutput rounded = backend.forward(batch, params);
        MobaReference.Forward expected = MobaReference.forward(batch, params);

        int rows = batch.totalTokens() * batch.heads();
        int d = batch.headDim();
        int w = expected.selectionWidth();
        assertEquals(w, actual.selectionWidth(), label + ": selection width");
        assertEquals(rows * w, actual.selected().length, label + ": selection size");
        boolean[] compared = new boolean[rows];
        int nearTies = 0;
        for (int row = 0; row < rows; row++) {
            int[] mine = Arrays.copyOfRange(actual.selected(), row * w, (row + 1) * w);
            int[] oracle = Arrays.copyOfRange(expected.selected(), row * w, (row + 1) * w);
            compared[row] = Arrays.equals(mine, oracle);
            if (!compared[row]) {
                double margin = expected.selectionMargin()[row];
                assertTrue(margin < NEAR_TIE, label + ": token " + row / batch.heads() + " head "
                        + row % batch.heads() + " selected " + Arrays.toString(mine) + ", oracle "
                        + Arrays.toString(oracle) + " with margin " + margin);
                nearTies++;
            }
        }
        assertTrue(nearTies <= Math.max(1, rows / 1000), label + ": " + nearTies + " near-tie selection flips");

        double outError = ErrorMetrics.relativeL2(rowsOf(expected.out(), compared, d),
                rowsOf(ErrorMetrics.toDouble(actual.out()), compared, d));
        double lseError = ErrorMetrics.relativeL2(rowsOf(expected.lse(), compared, 1),
                rowsOf(ErrorMetrics.toDouble(actual.lse()), compared, 1));
        double roundedError = ErrorMetrics.relativeL2(rowsOf(expected.out(), compared, d),
                rowsOf(ErrorMetrics.toDouble(rounded.out(), batch.dtype()), compared, d));
        System.out.printf(Locale.ROOT, "%s: out %.2e, lse %.2e, %s out %.2e, near-tie flips %d of %d rows%n", label,
                outError, lseError, batch.dtype().label(), roundedError, nearTies, rows);
        assertTrue(outError < FP32_TOLERANCE, label + ": fp32 out relative L2 error " + outError);
        assertTrue(lseError < FP32_TOLERANCE, label + ": lse relative L2 error " + lseError);
        assertTrue(roundedError < roundingTolerance(batch.dtype()),
                label + ": " + batch.dtype().label() + " out relative L2 error " + roundedError);

        short[] roundedFloat = new short[actual.out().length];
        for (int i = 0; i < roundedFloat.length; i++) {
            roundedFloat[i] = batch.dtype().fromFloat(actual.out()[i]);
        }
        assertArrayEquals(roundedFloat, rounded.out(), label + ": forward is forwardFloat rounded to nearest even");
        assertArrayEquals(actual.lse(), rounded.lse(), label + ": forward lse");
        assertArrayEquals(actual.selected(), rounded.selected(), label + ": forward selection");
    }

    /** A half-ulp of the dtype's 8 (bf16) or 11 (fp16) significant bits, relative. */
    private static double roundingTolerance(DType dtype) {
        return dtype == DType.BF16 ? 0x1p-8 : 0x1p-11;
    }

    /** The rows ({@code width} values each) whose flag is set, concatenated. */
    private static double[] rowsOf(double[] values, boolean[] keep, int width) {
        double[] out = new double[values.length];
        int n = 0;
        for (int row = 0; row < keep.length; row++) {
            if (keep[row]) {
                System.arraycopy(values, row * width, out, n, width);
                n += width;
            }
        }
        return Arrays.copyOf(out, n);
    }

    @Test
    void concurrentForwardsGiveIdenticalResults() throws Exception {
        List<Case> cases = List.of(
                mk("concurrent A", 64, 3, 64, 8, 2, DType.BF16, true, 700, 0, 65),
                mk("concurrent B", 16, 8, 32, 4, 4, DType.FP16, false, 333, 1, 20));
        List<PackedBatch> batches = cases.stream().map(Case::batch).toList();
        List<MobaOutput> alone = new ArrayList<>();
        for (int i = 0; i < cases.size(); i++) {
            alone.add(cpu.forward(batches.get(i), cases.get(i).params()));
        }
        int callers = 6;
        ExecutorService callersPool = Executors.newFixedThreadPool(callers);
        try {
            List<Future<MobaOutput>> results = new ArrayList<>();
            for (int i = 0; i < callers; i++) {
                int which = i % cases.size();
                results.add(callersPool.submit(() -> cpu.forward(batches.get(which), cases.get(which).params())));
            }
            for (int i = 0; i < callers; i++) {
                MobaOutput concurrent = results.get(i).get();
                MobaOutput reference = alone.get(i % cases.size());
                String label = cases.get(i % cases.size()) + ", caller " + i;
                assertArrayEquals(reference.out(), concurrent.out(), label + ": out");
                assertArrayEquals(reference.lse(), concurrent.lse(), label + ": lse");
                assertArrayEquals(reference.selected(), concurrent.selected(), label + ": selection");
            }
        } finally {
            callersPool.shutdownNow();
        }
    }

    @Test
    void rejectsSelectionLargerThanAnArray() {
        BatchLayout layout = new BatchLayout(DType.BF16, 4, 4, 32);
        Sequence one = SyntheticSequences.random(new SplittableRandom(RUN_SEED), layout, "seq0", 3);
        PackedBatch loose = PackedBatch.of(layout, new int[] {0, 3}, Integer.MAX_VALUE, one.q(), one.k(), one.v());
        MobaInputException e = assertThrows(MobaInputException.class,
                () -> cpu.forward(loose, MobaParams.of(1, Integer.MAX_VALUE)));
        assertTrue(e.getMessage().contains("topk = " + Integer.MAX_VALUE), e.getMessage());
    }

    @Test
    void refusesWorkAfterClose() {
        CpuMobaAttention closed = new CpuMobaAttention(1);
        closed.close();
        PackedBatch batch = mk("closed", 16, 2, 32, 4, 4, DType.BF16, false, 20).batch();
        assertThrows(IllegalStateException.class, () -> closed.forward(batch, MobaParams.of(16, 2)));
    }
}
