package org.moba.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.moba.kernels.cpu.CpuCases.SMALL_BLOCK_ROWS;
import static org.moba.kernels.cpu.CpuCases.lengthKinds;
import static org.moba.kernels.cpu.CpuCases.mk;
import static org.moba.kernels.cpu.CpuCases.mkDense;
import static org.moba.kernels.cpu.CpuCases.pack;

import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.ErrorMetrics;
import org.moba.kernels.MobaGradients;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.MobaTraining;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.Sequence;
import org.moba.kernels.cpu.CpuCases.Case;
import org.moba.kernels.reference.MobaReference;

/**
 * The CPU backward against the float64 oracle's backward on fresh inputs (seeds printed in each case's name; pin
 * {@link CpuCases#RUN_SEED} to replay). The oracle runs on the CPU forward's selection, so gate near-ties (fp32 vs
 * float64 scores, checked by {@link CpuMobaAttentionTest}) cannot make the attended sets differ.
 */
class CpuBackwardTest {
    /** fp32 accumulation against float64: relative L2 of the fp32 dq, dk, dv. */
    private static final double FP32_TOLERANCE = 1e-5;

    private static CpuMobaAttention cpu;
    private static CpuMobaAttention oneThread;
    private static CpuMobaAttention smallBlocks;

    @BeforeAll
    static void start() {
        cpu = new CpuMobaAttention(2);
        oneThread = new CpuMobaAttention(1);
        smallBlocks = new CpuMobaAttention(2, SMALL_BLOCK_ROWS);
    }

    @AfterAll
    static void stop() {
        cpu.close();
        oneThread.close();
        smallBlocks.close();
    }

    /** {@link CpuCases#lengthKinds}, chunks longer than a key segment, dense, and work units that split chunks. */
    static Stream<Case> cases() {
        DType bf = DType.BF16;
        DType fp = DType.FP16;
        return Stream.concat(lengthKinds(300, 600, 400), Stream.of(
                mk("chunk longer than a key segment", 600, 3, 32, 2, 1, fp, false, 1300, 3),
                mkDense("dense packed", 64, 64, 8, 2, bf, true, 0, 1, 200, 65, 0),
                mkDense("dense long", 16, 128, 4, 4, fp, false, 333, 16),
                mkDense("dense, chunk longer than a key segment", 520, 32, 2, 2, bf, false, 1100),
                mk("blocks split chunks, packed", 64, 3, 64, 8, 2, fp, true, 0, 200, 1, 70).withSmallBlocks(),
                mk("blocks split chunks, long", 16, 8, 32, 4, 4, bf, false, 301).withSmallBlocks(),
                mkDense("blocks split chunks, dense", 16, 32, 4, 4, bf, false, 120, 9).withSmallBlocks()));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void matchesOracle(Case c) {
        PackedBatch batch = c.batch();
        MobaParams params = c.params();
        short[] dout = c.dout(batch);
        DType dtype = batch.dtype();

        CpuMobaAttention backend = c.smallBlocks() ? smallBlocks : cpu;
        CpuForward fwdFloat = backend.forwardFloat(batch, params);
        CpuGradients fp32 = backend.backwardFloat(batch, params, fwdFloat, toFloat(dout, dtype));
        MobaTraining training = backend;
        MobaOutput fwd = training.forward(batch, params);
        assertArrayEquals(fwdFloat.selected(), fwd.selected(), c + ": forward selection");
        MobaGradients rounded = training.backward(batch, params, fwd, dout);

        MobaReference.Gradients expected = MobaReference.backward(batch, params, ErrorMetrics.toDouble(dout, dtype),
                fwdFloat.selected(), fwdFloat.selectionWidth());
        String[] names = {"dq", "dk", "dv"};
        double[][] oracle = {expected.dq(), expected.dk(), expected.dv()};
        float[][] mine = {fp32.dq(), fp32.dk(), fp32.dv()};
        short[][] mine16 = {rounded.dq(), rounded.dk(), rounded.dv()};
        double[] errors = new double[3];
        double[] errors16 = new double[3];
        for (int i = 0; i < 3; i++) {
            assertAllFinite(mine[i], c + ": fp32 " + names[i]);
            assertEquals(oracle[i].length, mine16[i].length, c + ": " + names[i] + " size");
            errors[i] = ErrorMetrics.relativeL2OrRms(oracle[i], ErrorMetrics.toDouble(mine[i]));
            errors16[i] = ErrorMetrics.relativeL2OrRms(oracle[i], ErrorMetrics.toDouble(mine16[i], dtype));
        }
        System.out.printf(Locale.ROOT, "%s: fp32 dq %.2e dk %.2e dv %.2e | %s dq %.2e dk %.2e dv %.2e | %s%n", c,
                errors[0], errors[1], errors[2], dtype.label(), errors16[0], errors16[1], errors16[2],
                rounded.timings());
        for (int i = 0; i < 3; i++) {
            assertTrue(errors[i] < FP32_TOLERANCE, c + ": fp32 " + names[i] + " relative L2 error " + errors[i]);
            assertTrue(errors16[i] < roundedTolerance(dtype), c + ": " + dtype.label() + " " + names[i]
                    + " relative L2 error " + errors16[i]);
        }

        // The 16-bit path is the fp32 path on the widened 16-bit forward output, rounded to nearest even.
        CpuForward widened = new CpuForward(toFloat(fwd.out(), dtype), fwd.lse(), fwd.selected(),
                fwd.selectionWidth(), null);
        CpuGradients fromRounded = backend.backwardFloat(batch, params, widened, toFloat(dout, dtype));
        float[][] fromRoundedArrays = {fromRounded.dq(), fromRounded.dk(), fromRounded.dv()};
        for (int i = 0; i < 3; i++) {
            assertArrayEquals(round(fromRoundedArrays[i], dtype), mine16[i], c + ": " + names[i]
                    + " is backwardFloat rounded");
        }
        assertTrue(rounded.timings().get("backward_dq") > 0 && rounded.timings().get("backward_dkdv") > 0
                || batch.totalTokens() == 0, c + ": timings " + rounded.timings());
    }


    /**
     * The rounded gradients carry two roundings: their own (a half-ulp, {@code 2^-9} bf16, {@code 2^-12} fp16
     * relative) and {@code delta} taken from the 16-bit forward output, whose half-ulp error enters
     * {@code dS = P (dout . v - delta)} amplified by {@code |delta| / |dout . v - delta|}. Four half-ulps of slack.
     */
    private static double roundedTolerance(DType dtype) {
        return dtype == DType.BF16 ? 0x1p-7 : 0x1p-10;
    }

    @Test
    void deterministicAcrossRunsAndThreads() {
        Case c = mk("determinism", 64, 3, 64, 8, 2, DType.BF16, true, 700, 0, 65, 129);
        Case d = mkDense("determinism dense", 16, 32, 4, 4, DType.FP16, false, 150, 33);
        for (Case k : List.of(c, d)) {
            PackedBatch batch = k.batch();
            MobaParams params = k.params();
            MobaOutput fwd = cpu.forward(batch, params);
            short[] dout = k.dout(batch);
            MobaGradients first = cpu.backward(batch, params, fwd, dout);
            MobaGradients again = cpu.backward(batch, params, fwd, dout);
            MobaGradients single = oneThread.backward(batch, params, fwd, dout);
            List<MobaGradients> others = List.of(again, single);
            List<String> what = List.of("second run", "1 thread vs 2");
            for (int i = 0; i < others.size(); i++) {
                assertArrayEquals(first.dq(), others.get(i).dq(), k + ": dq, " + what.get(i));
                assertArrayEquals(first.dk(), others.get(i).dk(), k + ": dk, " + what.get(i));
                assertArrayEquals(first.dv(), others.get(i).dv(), k + ": dv, " + what.get(i));
            }
            CpuForward fwdFloat = cpu.forwardFloat(batch, params);
            float[] doutFloat = toFloat(dout, batch.dtype());
            CpuGradients a = cpu.backwardFloat(batch, params, fwdFloat, doutFloat);
            CpuGradients b = oneThread.backwardFloat(batch, params, fwdFloat, doutFloat);
            assertArrayEquals(a.dq(), b.dq(), k + ": fp32 dq, 2 vs 1 threads");
            assertArrayEquals(a.dk(), b.dk(), k + ": fp32 dk, 2 vs 1 threads");
            assertArrayEquals(a.dv(), b.dv(), k + ": fp32 dv, 2 vs 1 threads");
        }
    }

    @Test
    void packingInvariance() {
        Case c = mk("packing", 32, 3, 64, 8, 2, DType.FP16, true, 150, 0, 97, 1, 64);
        BatchLayout layout = c.layout();
        List<Sequence> sequences = c.sequences();
        PackedBatch packed = pack(layout, sequences);
        MobaParams params = c.params();
        short[] dout = c.dout(packed);
        CpuGradients all = cpu.backwardFloat(packed, params, cpu.forwardFloat(packed, params),
                toFloat(dout, packed.dtype()));
        int exact = 0;
        for (int b = 0; b < sequences.size(); b++) {
            PackedBatch alone = pack(layout, List.of(sequences.get(b)));
            int start = packed.seqStart(b);
            int length = packed.seqLength(b);
            int qRow = layout.heads() * layout.headDim();
            int kvRow = layout.kvHeads() * layout.headDim();
            short[] doutAlone = Arrays.copyOfRange(dout, start * qRow, (start + length) * qRow);
            CpuGradients one = cpu.backwardFloat(alone, params, cpu.forwardFloat(alone, params),
                    toFloat(doutAlone, alone.dtype()));
            float[][] mine = {one.dq(), one.dk(), one.dv()};
            float[][] inPack = {Arrays.copyOfRange(all.dq(), start * qRow, (start + length) * qRow),
                Arrays.copyOfRange(all.dk(), start * kvRow, (start + length) * kvRow),
                Arrays.copyOfRange(all.dv(), start * kvRow, (start + length) * kvRow)};
            for (int i = 0; i < 3; i++) {
                double error = ErrorMetrics.relativeL2(ErrorMetrics.toDouble(mine[i]),
                        ErrorMetrics.toDouble(inPack[i]));
                assertTrue(error < 1e-6, c + ": sequence " + b + " gradient " + i + " differs packed vs alone by "
                        + error);
                exact += Arrays.equals(mine[i], inPack[i]) ? 1 : 0;
            }
        }
        System.out.printf(Locale.ROOT, "%s: %d of %d gradients bit-identical packed vs alone%n", c, exact,
                3 * sequences.size());
    }

    @Test
    void rejectsBadInputs() {
        Case c = mk("bad inputs", 16, 3, 32, 4, 2, DType.BF16, false, 70, 20);
        PackedBatch batch = c.batch();
        MobaParams params = c.params();
        MobaOutput fwd = cpu.forward(batch, params);
        short[] dout = c.dout(batch);
        assertMessage(() -> cpu.backward(batch, params, fwd, Arrays.copyOf(dout, dout.length - 1)),
                "dout has " + (dout.length - 1) + " elements, expected T*H*D = " + dout.length);
        assertMessage(() -> cpu.backward(batch, params, fwd, null), "dout is missing");
        assertMessage(() -> cpu.backward(batch, params, null, dout), "forward is missing");
        MobaOutput shortOut = new MobaOutput(Arrays.copyOf(fwd.out(), 5), fwd.lse(), fwd.selected(),
                fwd.selectionWidth(), fwd.timings());
        assertMessage(() -> cpu.backward(batch, params, shortOut, dout), "forward.out has 5 elements");
        MobaOutput shortLse = new MobaOutput(fwd.out(), Arrays.copyOf(fwd.lse(), 3), fwd.selected(),
                fwd.selectionWidth(), fwd.timings());
        assertMessage(() -> cpu.backward(batch, params, shortLse, dout), "forward.lse has 3 elements");
        assertMessage(() -> cpu.backward(batch, MobaParams.of(16, 2), fwd, dout),
                "forward.selectionWidth is 2, expected 1");
        int[] wrong = fwd.selected().clone();
        int last = batch.totalTokens() - 1; // token 19 of sequence 1: own chunk 1, candidate 0 only
        int slot = (last * batch.heads() + 3) * fwd.selectionWidth();
        wrong[slot] = 1;
        MobaOutput badSelection = new MobaOutput(fwd.out(), fwd.lse(), wrong, fwd.selectionWidth(), fwd.timings());
        assertMessage(() -> cpu.backward(batch, params, badSelection, dout),
                "forward.selected: sequence 1, token 19, head 3, slot 0 holds 1");
    }

    private static void assertMessage(org.junit.jupiter.api.function.Executable call, String expected) {
        MobaInputException e = assertThrows(MobaInputException.class, call);
        assertTrue(e.getMessage().contains(expected), "message '" + e.getMessage() + "' lacks '" + expected + "'");
    }

    private static void assertAllFinite(float[] values, String label) {
        for (int i = 0; i < values.length; i++) {
            if (!Float.isFinite(values[i])) {
                throw new AssertionError(label + ": element " + i + " is " + values[i] + " (not written?)");
            }
        }
    }

    private static float[] toFloat(short[] bits, DType dtype) {
        float[] f = new float[bits.length];
        for (int i = 0; i < bits.length; i++) {
            f[i] = dtype.toFloat(bits[i]);
        }
        return f;
    }

    private static short[] round(float[] values, DType dtype) {
        short[] bits = new short[values.length];
        for (int i = 0; i < values.length; i++) {
            bits[i] = dtype.fromFloat(values[i]);
        }
        return bits;
    }
}
