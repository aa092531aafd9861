package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.moba.kernels.cuda.CudaTestSupport.SEED;
import static org.moba.kernels.cuda.CudaTestSupport.randomBatch;
import static org.moba.kernels.cuda.CudaTestSupport.rng;

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
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.ErrorMetrics;
import org.moba.kernels.MobaGradients;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.PhaseTimings;
import org.moba.kernels.Sequence;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;
import org.moba.kernels.reference.MobaReference;
import org.moba.kernels.reference.OracleComparison;

/**
 * The CUDA backward against the float64 oracle's backward, which follows the CUDA forward's own selection (so gate
 * near-ties cannot make the attended sets differ), on fresh random inputs every run (the seed is printed; rerun one
 * with -Dmoba.test.seed=N). Gradients, delta and partial dq are poisoned with NaN before every kernel run.
 * Tolerances: relative L2 of dq, dk, dv below {@link OracleComparison#gradientTolerance} (5e-3 fp16, 2e-2 bf16).
 * Also: bit-identical gradients run to run, alone vs packed, standalone vs on the forward's device state, and from
 * concurrent callers. Skipped, with the reason, where no usable GPU exists.
 */
@Tag("gpu")
class CudaBackwardTest {
    private static final List<String> PHASES = List.of("h2d", "delta", "route", "dq_selected", "fused", "dq", "dkdv", "d2h");

    private static CudaMobaAttention cuda;
    @RegisterExtension
    static final CudaTestSupport gpu = new CudaTestSupport(c -> cuda = c);

    @AfterAll
    static void printPeakMemory() {
        if (cuda != null) {
            System.out.printf(Locale.ROOT, "peak extra device memory: forward %.1f MiB, backward %.1f MiB%n",
                    cuda.peakExtraDeviceBytes() / 1048576.0, cuda.peakExtraBackwardDeviceBytes() / 1048576.0);
        }
    }

    static double tolerance(DType dtype) {
        return OracleComparison.gradientTolerance(dtype);
    }

    /**
     * One oracle comparison; {@code structured} draws keys with chunk-level topics ({@link SyntheticSequences}), so
     * that many queries pick the same chunks (crowded routing buckets), else i.i.d. normal inputs.
     */
    record Case(DType dtype, int heads, int kvHeads, int headDim, MobaParams params, int[] lengths,
                boolean structured) {
        Case(DType dtype, int heads, int kvHeads, int headDim, MobaParams params, int... lengths) {
            this(dtype, heads, kvHeads, headDim, params, lengths, false);
        }

        Case structuredInputs() {
            return new Case(dtype, heads, kvHeads, headDim, params, lengths, true);
        }

        BatchLayout layout() {
            return new BatchLayout(dtype, heads, kvHeads, headDim);
        }

        PackedBatch batch(SplittableRandom rng) {
            if (!structured) {
                return randomBatch(rng, layout(), lengths);
            }
            SyntheticSequences synthetic = new SyntheticSequences(rng.nextLong(), layout(), params.chunkSize());
            List<Sequence> sequences = new ArrayList<>();
            for (int i = 0; i < lengths.length; i++) {
                sequences.add(synthetic.generate(i, lengths[i]));
            }
            return new SequencePacker(layout(), Integer.MAX_VALUE).concat(sequences).batch();
        }

        @Override
        public String toString() {
            return dtype.label() + " H=" + heads + "/Hkv=" + kvHeads + " D=" + headDim + ", " + params + ", lengths "
                    + Arrays.toString(lengths) + (structured ? ", structured" : "");
        }
    }

    /** Shapes like the forward's oracle cases, sized for the float64 backward oracle (all rows, O(T^2) dense). */
    static Stream<Case> oracleCases() {
        List<Case> cases = new ArrayList<>();
        DType fp = DType.FP16;
        DType bf = DType.BF16;
        // Lengths around chunk edges, alone and packed with zero-length sequences, for chunks 64 .. 512.
        for (int c : new int[] {64, 128, 512}) {
            MobaParams p = MobaParams.of(c, 3);
            for (int length : new int[] {1, c - 1, c, c + 1, 3 * c + 5}) {
                cases.add(new Case(fp, 8, 2, 128, p, length));
            }
            cases.add(new Case(bf, 8, 2, 128, p, 0, 1, c - 1, 0, c, c + 1, 3 * c + 5, 0));
        }
        cases.add(new Case(bf, 4, 2, 64, MobaParams.of(1024, 3), 3 * 1024 + 5, 1023));
        cases.add(new Case(fp, 2, 1, 128, MobaParams.of(2048, 2), 2 * 2048 + 1));
        // Head dims, dtypes and GQA groupings (MHA, 8/2, 32/8, 4/1) on a mix with a sequence of 20 chunks.
        int[] mix = {0, 64 * 20 + 17, 1, 300};
        for (DType dtype : DType.values()) {
            for (int d : new int[] {64, 128}) {
                for (int[] heads : new int[][] {{4, 4}, {8, 2}, {32, 8}, {4, 1}}) {
                    cases.add(new Case(dtype, heads[0], heads[1], d, MobaParams.of(64, 3), mix));
                }
            }
        }
        // topk from own-chunk-only (W == 0) to wide selections (W = 23 and 39 > 16).
        for (int topk : new int[] {1, 2, 3, 5, 8, 12, 24, 64}) {
            cases.add(new Case(fp, 8, 2, 64, MobaParams.of(64, topk), 64 * 40 + 17, 300, 0, 129));
        }
        cases.add(new Case(bf, 4, 1, 128, MobaParams.of(128, 16), 128 * 24 + 3, 700, 1));
        // Packed batches of mixed lengths, i.i.d. and with structured keys (crowded buckets).
        cases.add(new Case(bf, 8, 2, 128, MobaParams.of(128, 8), 128 * 12 + 3, 1500, 77, 0, 1, 640));
        cases.add(new Case(bf, 8, 2, 128, MobaParams.of(128, 8), 128 * 12 + 3, 1500, 77, 0, 1, 640)
                .structuredInputs());
        cases.add(new Case(fp, 8, 8, 64, MobaParams.of(64, 4), 2000, 64, 65, 63, 1, 500).structuredInputs());
        // The FlashMoBA configuration, shortened (chunk 128, topk 8, 16 heads: 8 query tiles per resident chunk).
        cases.add(new Case(fp, 16, 16, 128, MobaParams.of(128, 8), 2048, 2048));
        // A non-default softmax scale.
        cases.add(new Case(bf, 4, 2, 64, MobaParams.of(64, 3).withSoftmaxScale(0.3f), 1000, 200));
        // Dense causal backward.
        for (DType dtype : DType.values()) {
            cases.add(new Case(dtype, 8, 2, 128, MobaParams.denseCausal(64), 0, 1, 63, 64, 65, 1000));
            cases.add(new Case(dtype, 4, 4, 64, MobaParams.denseCausal(128), 2000, 129));
            cases.add(new Case(dtype, 4, 1, 128, MobaParams.denseCausal(512), 1));
        }
        return cases.stream();
    }

    private static short[] randomBits(SplittableRandom rng, int count, DType dtype) {
        short[] bits = new short[count];
        for (int i = 0; i < count; i++) {
            bits[i] = dtype.fromFloat((float) SyntheticSequences.gaussian(rng));
        }
        return bits;
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("oracleCases")
    void matchesFloat64OracleOnTheBackendsSelection(Case c) {
        gpu.requireDevice();
        SplittableRandom rng = rng(c.toString());
        PackedBatch batch = c.batch(rng);
        short[] dout = randomBits(rng, batch.q().length, batch.dtype());
        String label = c + " (seed " + SEED + ")";
        assertMatchesOracle(batch, c.params(), dout, label);
    }

    /** Forward and backward on the device, the oracle on the forward's selection; returns the gradients. */
    private static MobaGradients assertMatchesOracle(PackedBatch batch, MobaParams params, short[] dout,
                                                     String label) {
        MobaOutput fwd = cuda.forward(batch, params);
        OracleCheck.assertWellFormed(batch, params, fwd, label + " forward");
        MobaGradients g = cuda.backward(batch, params, fwd, dout);
        DType dtype = batch.dtype();
        MobaReference.Gradients ref = MobaReference.backward(batch, params, ErrorMetrics.toDouble(dout, dtype),
                fwd.selected(), fwd.selectionWidth());
        String[] names = {"dq", "dk", "dv"};
        short[][] mine = {g.dq(), g.dk(), g.dv()};
        double[][] oracle = {ref.dq(), ref.dk(), ref.dv()};
        double[] errors = new double[3];
        for (int i = 0; i < 3; i++) {
            assertEquals(oracle[i].length, mine[i].length, label + ": " + names[i] + " length");
            assertAllFinite(batch, mine[i], i == 0 ? batch.heads() : batch.kvHeads(), label + ": " + names[i]);
            errors[i] = ErrorMetrics.relativeL2OrRms(oracle[i], ErrorMetrics.toDouble(mine[i], dtype));
        }
        System.out.printf(Locale.ROOT, "%s: dq %.2e dk %.2e dv %.2e | %s%n", label, errors[0], errors[1], errors[2],
                g.timings());
        for (int i = 0; i < 3; i++) {
            assertTrue(errors[i] < tolerance(dtype), label + ": " + names[i] + " relative L2 error " + errors[i]
                    + " >= " + tolerance(dtype));
        }
        for (String phase : PHASES) {
            assertTrue(g.timings().asMap().containsKey(phase), label + ": no timing for " + phase);
        }
        return g;
    }


    /** Every element finite: the gradients were poisoned with NaN, so an unwritten one shows here. */
    private static void assertAllFinite(PackedBatch batch, short[] bits, int heads, String label) {
        DType dtype = batch.dtype();
        int d = batch.headDim();
        for (int i = 0; i < bits.length; i++) {
            if (!Float.isFinite(dtype.toFloat(bits[i]))) {
                int t = i / (heads * d);
                int b = batch.sequenceOf(t);
                fail(label + " not finite at token " + t + " (sequence " + b + ", position " + (t - batch.seqStart(b))
                        + "), head " + i / d % heads + ", dim " + i % d + " (unwritten or overflowed)");
            }
        }
    }

    /**
     * A max_seqlen above every length gives W > 0 although no sequence has a full chunk (NFC = 0): the selection is
     * all padding and the backward is the own chunk's.
     */
    @Test
    void selectionWidthWithoutAnyFullChunk() {
        gpu.requireDevice();
        MobaParams params = MobaParams.of(64, 3);
        SplittableRandom rng = rng("no full chunk");
        PackedBatch batch = CudaTestSupport.withoutFullChunk(rng);
        assertEquals(2, params.selectionWidth(batch.maxSeqlen()));
        assertMatchesOracle(batch, params, randomBits(rng, batch.q().length, DType.BF16),
                "NFC = 0 (seed " + SEED + ")");
    }

    /** A sequence's gradients alone and packed among others (same max_seqlen, so the same W): bit for bit. */
    @Test
    void sequenceGivesBitIdenticalGradientsAloneAndPacked() {
        gpu.requireDevice();
        for (MobaParams params : List.of(MobaParams.of(64, 4), MobaParams.of(128, 8), MobaParams.of(64, 1),
                MobaParams.denseCausal(64))) {
            for (DType dtype : DType.values()) {
                BatchLayout layout = new BatchLayout(dtype, 8, 2, 128);
                String label = dtype.label() + ", " + params + " (seed " + SEED + ")";
                SplittableRandom rng = rng("packing " + label);
                int length = 5 * params.chunkSize() + 5;
                Sequence target = SyntheticSequences.random(rng, layout, "target", length);
                List<Sequence> group = List.of(SyntheticSequences.random(rng, layout, "before", 1000), target,
                        SyntheticSequences.random(rng, layout, "after", 77),
                        SyntheticSequences.random(rng, layout, "last", 3 * params.chunkSize()));
                PackedBatch packed = new SequencePacker(layout, Integer.MAX_VALUE).concat(group).batch();
                PackedBatch alone = PackedBatch.of(layout, new int[] {0, length}, packed.maxSeqlen(), target.q(),
                        target.k(), target.v());
                short[] doutPacked = randomBits(rng, packed.q().length, dtype);
                int start = packed.seqStart(1);
                int qRow = layout.qElementsPerToken();
                int kvRow = layout.kvElementsPerToken();
                short[] doutAlone = Arrays.copyOfRange(doutPacked, start * qRow, (start + length) * qRow);

                MobaOutput fa = gatheredForward(alone, params);
                MobaOutput fp = gatheredForward(packed, params);
                assertArrayEquals(fa.out(), Arrays.copyOfRange(fp.out(), start * qRow, (start + length) * qRow),
                        label + ": forward out alone vs packed");
                MobaGradients a = cuda.backward(alone, params, fa, doutAlone);
                MobaGradients p = cuda.backward(packed, params, fp, doutPacked);
                assertArrayEquals(a.dq(), Arrays.copyOfRange(p.dq(), start * qRow, (start + length) * qRow),
                        label + ": dq alone vs packed");
                assertArrayEquals(a.dk(), Arrays.copyOfRange(p.dk(), start * kvRow, (start + length) * kvRow),
                        label + ": dk alone vs packed");
                assertArrayEquals(a.dv(), Arrays.copyOfRange(p.dv(), start * kvRow, (start + length) * kvRow),
                        label + ": dv alone vs packed");
            }
        }
    }

    /**
     * Crowded buckets (2 x 8K tokens, 16 heads, chunk 128, topk 8: ~900 rows per (head, chunk) bucket, where the
     * forward's atomic routing would reorder rows): the gradients of repeated standalone calls, of five runs on the
     * forward's device state, and of a fresh call are bit-identical.
     */
    @Test
    void gradientsAreBitIdenticalRunToRunStandaloneAndResident() {
        gpu.requireDevice();
        BatchLayout layout = new BatchLayout(DType.FP16, 16, 16, 128);
        MobaParams params = MobaParams.of(128, 8);
        SplittableRandom rng = rng("backward determinism");
        PackedBatch batch = randomBatch(rng, layout, 8192, 8192);
        short[] dout = randomBits(rng, batch.q().length, DType.FP16);
        MobaOutput fwd = gatheredForward(batch, params);
        MobaGradients first = cuda.backward(batch, params, fwd, dout);
        assertAllFinite(batch, first.dq(), 16, "dq");
        assertAllFinite(batch, first.dk(), 16, "dk");
        assertAllFinite(batch, first.dv(), 16, "dv");
        assertSameGradients(first, cuda.backward(batch, params, fwd, dout), "second standalone call");
        try (DeviceBatch forward = cuda.upload(batch, params, AttentionPath.GATHERED);
             DeviceBackward backward = cuda.prepareBackward(forward, dout)) {
            assertThrows(IllegalStateException.class, backward::run, "backward before the forward ran");
            for (int i = 0; i < 5; i++) {
                forward.run();
                PhaseTimings t = backward.run();
                assertTrue(t.get("dkdv") + t.get("fused") > 0 && t.get("dq") > 0 && t.get("route") > 0,
                        "timings " + t);
                assertSameGradients(first, backward.download(), "resident run " + i);
            }
            assertTrue(backward.extraDeviceBytes() > 0, backward.scratchDescription());
            assertTrue(cuda.peakExtraBackwardDeviceBytes() >= backward.extraDeviceBytes());
            System.out.printf(Locale.ROOT, "resident backward of %s: extra %.1f MiB (%s)%n", batch,
                    backward.extraDeviceBytes() / 1048576.0, backward.scratchDescription());
        }
    }

    /** On the forward's device state for dense and own-chunk-only calls too; closing the forward closes it. */
    @Test
    void residentBackwardEqualsStandaloneForEveryMode() {
        gpu.requireDevice();
        BatchLayout layout = new BatchLayout(DType.BF16, 8, 2, 64);
        SplittableRandom rng = rng("resident modes");
        PackedBatch batch = randomBatch(rng, layout, 700, 0, 129, 1);
        short[] dout = randomBits(rng, batch.q().length, DType.BF16);
        for (MobaParams params : List.of(MobaParams.of(64, 3), MobaParams.of(64, 1), MobaParams.denseCausal(64))) {
            MobaGradients standalone = cuda.backward(batch, params, gatheredForward(batch, params), dout);
            DeviceBackward leaked;
            try (DeviceBatch forward = cuda.upload(batch, params, AttentionPath.GATHERED)) {
                DeviceBackward backward = cuda.prepareBackward(forward, dout);
                forward.run();
                backward.run();
                assertSameGradients(standalone, backward.download(), params + ": resident vs standalone");
                leaked = backward;
            }
            assertThrows(IllegalStateException.class, leaked::run, "closed with its forward");
        }
    }

    @Test
    void concurrentCallersGetTheSameGradientsAsOneCaller() throws Exception {
        gpu.requireDevice();
        BatchLayout layout = new BatchLayout(DType.FP16, 4, 2, 64);
        MobaParams params = MobaParams.of(64, 3);
        SplittableRandom rng = rng("threads");
        List<PackedBatch> batches = new ArrayList<>();
        List<MobaOutput> forwards = new ArrayList<>();
        List<short[]> douts = new ArrayList<>();
        List<MobaGradients> sequential = new ArrayList<>();
        for (int i = 0; i < 16; i++) {
            PackedBatch b = randomBatch(rng, layout, rng.nextInt(1, 2000), rng.nextInt(0, 700));
            batches.add(b);
            forwards.add(cuda.forward(b, params));
            douts.add(randomBits(rng, b.q().length, DType.FP16));
            sequential.add(cuda.backward(b, params, forwards.get(i), douts.get(i)));
        }
        ExecutorService pool = Executors.newFixedThreadPool(4);
        try {
            List<Future<MobaGradients>> futures = new ArrayList<>();
            for (int i = 0; i < batches.size(); i++) {
                int n = i;
                futures.add(pool.submit(() -> cuda.backward(batches.get(n), params, forwards.get(n), douts.get(n))));
            }
            for (int i = 0; i < batches.size(); i++) {
                assertSameGradients(sequential.get(i), futures.get(i).get(), "batch " + i + " (seed " + SEED + ")");
            }
        } finally {
            pool.shutdown();
        }
    }

    @Test
    void twoThousandSmallBackwardsLeakNoDeviceMemory() {
        gpu.requireDevice();
        BatchLayout layout = new BatchLayout(DType.BF16, 4, 2, 64);
        MobaParams params = MobaParams.of(64, 3);
        SplittableRandom rng = rng("leak");
        List<PackedBatch> batches = new ArrayList<>();
        List<MobaOutput> forwards = new ArrayList<>();
        List<short[]> douts = new ArrayList<>();
        for (int i = 0; i < 32; i++) {
            PackedBatch b = randomBatch(rng, layout, rng.nextInt(1, 300), rng.nextInt(0, 300),
                    rng.nextInt(1, 40));
            batches.add(b);
            forwards.add(cuda.forward(b, params));
            douts.add(randomBits(rng, b.q().length, DType.BF16));
        }
        for (int i = 0; i < batches.size(); i++) { // warm-up: the pool reaches its steady state
            cuda.backward(batches.get(i), params, forwards.get(i), douts.get(i));
        }
        long freeBefore = cuda.cudaDevice().freeMemory();
        MobaGradients last = null;
        for (int i = 0; i < 2000; i++) {
            int n = i % batches.size();
            last = cuda.backward(batches.get(n), params, forwards.get(n), douts.get(n));
        }
        long freeAfter = cuda.cudaDevice().freeMemory();
        PackedBatch lastBatch = batches.get((2000 - 1) % batches.size());
        assertAllFinite(lastBatch, last.dq(), 4, "dq of the last batch");
        assertEquals(freeBefore, freeAfter, "device free memory before vs after 2,000 backward calls (bytes)");
    }

    @Test
    void batchWithoutTokensGivesEmptyGradients() {
        gpu.requireDevice();
        BatchLayout layout = new BatchLayout(DType.FP16, 4, 2, 128);
        PackedBatch empty = randomBatch(rng("empty"), layout, 0, 0);
        MobaParams params = MobaParams.of(64, 3);
        MobaGradients g = cuda.backward(empty, params, cuda.forward(empty, params), new short[0]);
        assertEquals(0, g.dq().length);
        assertEquals(0, g.dk().length);
        assertEquals(0, g.dv().length);
    }

    /** Validation runs before any device work (the rules themselves: {@link BackwardRulesTest}). */
    @Test
    void badInputsAreRejectedBeforeDeviceWork() {
        gpu.requireDevice();
        BatchLayout layout = new BatchLayout(DType.BF16, 4, 2, 64);
        SplittableRandom rng = rng("bad inputs");
        PackedBatch batch = randomBatch(rng, layout, 300);
        MobaParams params = MobaParams.of(64, 3);
        MobaOutput fwd = cuda.forward(batch, params);
        short[] dout = randomBits(rng, batch.q().length, DType.BF16);
        MobaInputException e = assertThrows(MobaInputException.class,
                () -> cuda.backward(batch, params, fwd, Arrays.copyOf(dout, 9)));
        assertTrue(e.getMessage().startsWith("dout has 9 elements, expected T*H*D = "), e.getMessage());
        int[] sel = fwd.selected().clone();
        sel[(299 * 4 + 1) * fwd.selectionWidth()] = 4; // own chunk of position 299 is 4
        MobaOutput bad = new MobaOutput(fwd.out(), fwd.lse(), sel, fwd.selectionWidth(), fwd.timings());
        e = assertThrows(MobaInputException.class, () -> cuda.backward(batch, params, bad, dout));
        assertTrue(e.getMessage().contains("forward.selected: sequence 0, token 299, head 1, slot 0 holds 4"),
                e.getMessage());
        try (DeviceBatch forward = cuda.upload(batch, params)) {
            e = assertThrows(MobaInputException.class, () -> cuda.prepareBackward(forward, new short[3]));
            assertTrue(e.getMessage().startsWith("dout has 3 elements"), e.getMessage());
        }
    }

    /**
     * The forward with MoBA calls that have a selection forced onto GATHERED (dense and W == 0 run UNION), so that
     * it gives bit for bit what a resident batch uploaded the same way computes.
     */
    private static MobaOutput gatheredForward(PackedBatch batch, MobaParams params) {
        try (DeviceBatch resident = cuda.upload(batch, params, AttentionPath.GATHERED)) {
            return resident.runAndDownload();
        }
    }

    private static void assertSameGradients(MobaGradients expected, MobaGradients actual, String what) {
        assertArrayEquals(expected.dq(), actual.dq(), "dq, " + what + " (seed " + SEED + ")");
        assertArrayEquals(expected.dk(), actual.dk(), "dk, " + what + " (seed " + SEED + ")");
        assertArrayEquals(expected.dv(), actual.dv(), "dv, " + what + " (seed " + SEED + ")");
    }
}
