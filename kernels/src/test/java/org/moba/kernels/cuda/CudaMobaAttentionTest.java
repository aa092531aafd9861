package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.moba.kernels.cuda.CudaTestSupport.SEED;
import static org.moba.kernels.cuda.CudaTestSupport.randomBatch;
import static org.moba.kernels.cuda.CudaTestSupport.rng;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.stream.Stream;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaAttention;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.PhaseTimings;
import org.moba.kernels.PreparedBatch;
import org.moba.kernels.Sequence;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;

/**
 * The CUDA backend against the float64 oracle, on fresh random inputs every run (the seed is printed; rerun one
 * with -Dmoba.test.seed=N). Outputs are poisoned with NaN before every kernel run. MoBA cases with a selection run
 * on both attention paths (GATHERED and UNION, forced) on the same inputs. Skipped, with the reason, where no usable
 * GPU exists.
 */
class CudaMobaAttentionTest {
    private static CudaMobaAttention cuda;
    @RegisterExtension
    static final CudaTestSupport gpu = new CudaTestSupport(c -> cuda = c);

    /**
     * One oracle comparison: shape, parameters, sequence lengths and the forced attention path (null where only
     * UNION applies: dense or W == 0), all in the test's display name.
     */
    record Case(DType dtype, int heads, int kvHeads, int headDim, MobaParams params, int[] lengths,
                AttentionPath path) {
        Case(DType dtype, int heads, int kvHeads, int headDim, MobaParams params, int[] lengths) {
            this(dtype, heads, kvHeads, headDim, params, lengths, null);
        }

        /** The inputs, without the path: both paths of a case get the same random inputs. */
        String inputs() {
            return dtype.label() + " H=" + heads + "/Hkv=" + kvHeads + " D=" + headDim + ", " + params
                    + ", lengths " + Arrays.toString(lengths);
        }

        @Override
        public String toString() {
            return inputs() + (path == null ? "" : ", " + path);
        }

        boolean hasSelection() {
            return params.selectionWidth(Arrays.stream(lengths).max().orElse(0)) > 0;
        }

        AttentionPath expectedPath() {
            return path == null ? AttentionPath.UNION : path;
        }

        BatchLayout layout() {
            return new BatchLayout(dtype, heads, kvHeads, headDim);
        }

        Case withPath(AttentionPath p) {
            return new Case(dtype, heads, kvHeads, headDim, params, lengths, p);
        }
    }

    private static int[] edgeLengths(int c) {
        return new int[] {1, c - 1, c, c + 1, 3 * c + 5};
    }

    static Stream<Case> oracleCases() {
        List<Case> cases = new ArrayList<>();
        // Lengths around chunk edges, alone and packed with zero-length sequences, for every chunk size.
        for (int c : new int[] {64, 128, 512, 4096}) {
            MobaParams p = MobaParams.of(c, 3);
            for (int length : edgeLengths(c)) {
                cases.add(new Case(DType.FP16, 8, 2, 128, p, new int[] {length}));
            }
            cases.add(new Case(DType.BF16, 8, 2, 128, p, new int[] {0, 1, c - 1, 0, c, c + 1, 3 * c + 5, 0}));
        }
        // Head dims, dtypes and GQA groupings on a mix with a sequence of more than 32 chunks.
        int[] mix = {0, 64 * 40 + 17, 1, 700};
        for (DType dtype : DType.values()) {
            for (int d : new int[] {64, 128}) {
                for (int[] heads : new int[][] {{4, 4}, {8, 2}, {32, 8}}) {
                    cases.add(new Case(dtype, heads[0], heads[1], d, MobaParams.of(64, 3), mix));
                }
            }
        }
        // topk from own-chunk-only to beyond the gate's fast path (W > 16).
        for (int topk : new int[] {1, 2, 3, 8, 16, 24, 64}) {
            cases.add(new Case(DType.FP16, 8, 2, 64, MobaParams.of(64, topk), new int[] {64 * 40 + 17, 300, 0, 129}));
        }
        cases.add(new Case(DType.BF16, 4, 2, 128, MobaParams.of(128, 8), new int[] {128 * 36 + 3, 5000, 77}));
        // Dense causal baseline.
        for (DType dtype : DType.values()) {
            cases.add(new Case(dtype, 8, 2, 128, MobaParams.denseCausal(64), new int[] {0, 1, 63, 64, 65, 2000}));
            cases.add(new Case(dtype, 4, 4, 64, MobaParams.denseCausal(128), new int[] {7000, 129}));
        }
        // Long sequences (checked on sampled rows).
        cases.add(new Case(DType.BF16, 4, 2, 128, MobaParams.of(512, 8), new int[] {65536}));
        cases.add(new Case(DType.FP16, 4, 1, 64, MobaParams.of(64, 8), new int[] {131072}));
        cases.add(new Case(DType.BF16, 4, 2, 128, MobaParams.of(4096, 3), new int[] {131072, 1000}));
        // The FlashMoBA configuration (chunk 128, topk 8: the gathered kernel keeps 8 query tiles per chunk).
        cases.add(new Case(DType.FP16, 16, 16, 128, MobaParams.of(128, 8), new int[] {8192, 8192}));
        return cases.stream().flatMap(c -> c.hasSelection()
                ? Stream.of(c.withPath(AttentionPath.GATHERED), c.withPath(AttentionPath.UNION)) : Stream.of(c));
    }

    /**
     * One forward call with MoBA calls that have a selection forced onto {@code path} (null: by budget), asserting
     * the path it ran.
     */
    private static MobaOutput forward(PackedBatch batch, MobaParams params, AttentionPath path,
                                      AttentionPath expected, String label) {
        try (DeviceBatch resident = cuda.upload(batch, params, path)) {
            assertEquals(expected, resident.attentionPath(), label + ": " + resident.attentionPathReason());
            return resident.runAndDownload();
        }
    }

    @Tag("gpu")
    @ParameterizedTest(name = "{0}")
    @MethodSource("oracleCases")
    void matchesFloat64Oracle(Case c) {
        gpu.requireDevice();
        SplittableRandom rng = rng(c.inputs());
        PackedBatch batch = randomBatch(rng, c.layout(), c.lengths());
        MobaOutput out = forward(batch, c.params(), c.path(), c.expectedPath(), c.toString());
        OracleCheck.assertMatchesOracle(batch, c.params(), out, c + " (seed " + SEED + ")", rng);
        for (String phase : List.of("h2d", "chunk_means", "gate_topk", "attention", "d2h")) {
            assertTrue(out.timings().asMap().containsKey(phase), c + ": no timing for " + phase);
        }
    }

    @Tag("gpu")
    @ParameterizedTest
    @EnumSource(AttentionPath.class)
    void sequenceGivesBitIdenticalResultsAlonePackedAndRepeated(AttentionPath path) {
        gpu.requireDevice();
        BatchLayout layout = new BatchLayout(DType.BF16, 8, 2, 128);
        MobaParams params = MobaParams.of(64, 4);
        SplittableRandom rng = rng("packing");
        int length = 3 * 64 + 5;
        Sequence target = SyntheticSequences.random(rng, layout, "target", length);
        List<Sequence> group = List.of(SyntheticSequences.random(rng, layout, "before", 1000), target,
                SyntheticSequences.random(rng, layout, "after", 77));
        PackedBatch packed = new SequencePacker(layout, Integer.MAX_VALUE).concat(group).batch();
        // The same max_seqlen (an upper bound) gives both calls the same selection width.
        PackedBatch alone = PackedBatch.of(layout, new int[] {0, length}, packed.maxSeqlen(), target.q(),
                target.k(), target.v());
        MobaOutput a = forward(alone, params, path, path, "alone");
        MobaOutput p = forward(packed, params, path, path, "packed");
        int start = packed.seqStart(1);
        int h = layout.heads();
        int qRow = layout.qElementsPerToken();
        int w = a.selectionWidth();
        assertArrayEquals(a.out(), Arrays.copyOfRange(p.out(), start * qRow, (start + length) * qRow),
                path + ": out alone vs packed (seed " + SEED + ")");
        assertArrayEquals(a.lse(), Arrays.copyOfRange(p.lse(), start * h, (start + length) * h),
                path + ": lse alone vs packed (seed " + SEED + ")");
        assertArrayEquals(a.selected(), Arrays.copyOfRange(p.selected(), start * h * w, (start + length) * h * w),
                path + ": selection alone vs packed (seed " + SEED + ")");

        MobaOutput again = forward(packed, params, path, path, "packed again");
        assertArrayEquals(p.out(), again.out(), path + ": out of two identical calls (seed " + SEED + ")");
        assertArrayEquals(p.lse(), again.lse(), path + ": lse of two identical calls (seed " + SEED + ")");
        assertArrayEquals(p.selected(), again.selected(),
                path + ": selection of two identical calls (seed " + SEED + ")");
    }

    /**
     * A batch whose tensors live in direct byte buffers (as score reads them from files) uploads straight from them
     * and gives bit for bit the outputs of the same batch in arrays, forward and against dense attention.
     */
    @Tag("gpu")
    @Test
    void batchInDirectBuffersGivesTheArrayBatchResultsBitForBit() {
        gpu.requireDevice();
        BatchLayout layout = new BatchLayout(DType.FP16, 8, 2, 128);
        MobaParams params = MobaParams.of(128, 3);
        SplittableRandom rng = rng("direct buffers");
        PackedBatch arrays = randomBatch(rng, layout, 1000, 1, 129, 700);
        PackedBatch buffers = PackedBatch.ofBuffers(layout, arrays.cuSeqlens(), arrays.maxSeqlen(),
                direct(arrays.qBytes()), direct(arrays.kBytes()), direct(arrays.vBytes()));
        MobaOutput a = cuda.forward(arrays, params);
        MobaOutput b = cuda.forward(buffers, params);
        assertArrayEquals(a.out(), b.out(), "out (seed " + SEED + ")");
        assertArrayEquals(a.lse(), b.lse(), "lse (seed " + SEED + ")");
        assertArrayEquals(a.selected(), b.selected(), "selection (seed " + SEED + ")");
        org.moba.kernels.DenseComparison fromArrays = cuda.compareWithDense(arrays, params, true);
        org.moba.kernels.DenseComparison fromBuffers = cuda.compareWithDense(buffers, params, true);
        assertArrayEquals(fromArrays.moba().out(), fromBuffers.moba().out(), "out of compareWithDense");
        for (int s = 0; s < arrays.numSequences(); s++) {
            assertArrayEquals(fromArrays.metrics().get(s).relError(), fromBuffers.metrics().get(s).relError(),
                    "sequence " + s + " rel_error (seed " + SEED + ")");
        }
    }

    private static java.nio.ByteBuffer direct(java.nio.ByteBuffer bytes) {
        java.nio.ByteBuffer d = java.nio.ByteBuffer.allocateDirect(bytes.remaining());
        d.put(bytes.duplicate()).flip();
        return d;
    }

    /**
     * The gathered path places rows in buckets with atomics, so their order changes run to run; outputs must not.
     * Crowded buckets (2 x 8K tokens, 16 heads, topk 8: ~900 rows per (head, chunk) bucket) on one resident batch
     * run five times (each run re-zeroes the bucket counts) and in a fresh call; the selection equals UNION's.
     */
    @Tag("gpu")
    @Test
    void gatheredPathIsBitIdenticalRunToRunDespiteAtomicRouting() {
        gpu.requireDevice();
        BatchLayout layout = new BatchLayout(DType.FP16, 16, 16, 128);
        MobaParams params = MobaParams.of(128, 8);
        SplittableRandom rng = rng("gathered determinism");
        PackedBatch batch = randomBatch(rng, layout, 8192, 8192);
        MobaOutput first;
        try (DeviceBatch resident = cuda.upload(batch, params, AttentionPath.GATHERED)) {
            assertEquals(AttentionPath.GATHERED, resident.attentionPath(), resident.attentionPathReason());
            resident.run();
            first = resident.download();
            for (int i = 1; i < 5; i++) {
                resident.run();
                MobaOutput again = resident.download();
                assertArrayEquals(first.out(), again.out(), "out of run " + i + " vs run 0 (seed " + SEED + ")");
                assertArrayEquals(first.lse(), again.lse(), "lse of run " + i + " vs run 0 (seed " + SEED + ")");
                assertArrayEquals(first.selected(), again.selected(), "selection of run " + i + " (seed " + SEED
                        + ")");
            }
        }
        MobaOutput fresh = forward(batch, params, AttentionPath.GATHERED, AttentionPath.GATHERED, "fresh call");
        assertArrayEquals(first.out(), fresh.out(), "out of a fresh call (seed " + SEED + ")");
        assertArrayEquals(first.lse(), fresh.lse(), "lse of a fresh call (seed " + SEED + ")");
        MobaOutput union = forward(batch, params, AttentionPath.UNION, AttentionPath.UNION, "union");
        assertArrayEquals(union.selected(), first.selected(), "selection GATHERED vs UNION (seed " + SEED + ")");
        OracleCheck.assertMatchesOracle(batch, params, first, "gathered, crowded buckets (seed " + SEED + ")", rng);
    }

    /**
     * {@link MobaAttention#prepare} uploads once: its runs report the kernel phases only, and its download is what
     * {@link CudaMobaAttention#forward} returns for the batch, with the copy times of the upload and the download.
     */
    @Tag("gpu")
    @Test
    void preparedBatchRunsOnlyTheKernelsAndDownloadsWhatForwardReturns() {
        gpu.requireDevice();
        BatchLayout layout = new BatchLayout(DType.BF16, 4, 2, 64);
        MobaParams params = MobaParams.of(64, 3);
        PackedBatch batch = randomBatch(rng("prepared batch"), layout, 300, 1000);
        MobaAttention backend = cuda;
        try (PreparedBatch prepared = backend.prepare(batch, params)) {
            for (int r = 0; r < 3; r++) {
                PhaseTimings t = prepared.run();
                assertEquals(Set.of("chunk_means", "gate_topk", "attention"), t.asMap().keySet(),
                        "run " + r + ": kernel phases only, " + t);
            }
            MobaOutput downloaded = prepared.download();
            MobaOutput direct = cuda.forward(batch, params);
            assertArrayEquals(direct.out(), downloaded.out(), "out (seed " + SEED + ")");
            assertArrayEquals(direct.lse(), downloaded.lse(), "lse (seed " + SEED + ")");
            assertArrayEquals(direct.selected(), downloaded.selected(), "selection (seed " + SEED + ")");
            assertTrue(downloaded.timings().get("h2d") > 0 && downloaded.timings().get("d2h") > 0,
                    "copy times of the upload and the download: " + downloaded.timings());
        }
    }

    /**
     * A max_seqlen above every length gives W > 0 although no sequence has a full chunk (NFC = 0): the selection is
     * all padding and attention is the own chunk, on both paths.
     */
    @Tag("gpu")
    @ParameterizedTest
    @EnumSource(AttentionPath.class)
    void selectionWidthWithoutAnyFullChunk(AttentionPath path) {
        gpu.requireDevice();
        MobaParams params = MobaParams.of(64, 3);
        SplittableRandom rng = rng("no full chunk");
        PackedBatch batch = CudaTestSupport.withoutFullChunk(rng);
        assertEquals(2, params.selectionWidth(batch.maxSeqlen()));
        MobaOutput out = forward(batch, params, path, path, "NFC = 0");
        assertTrue(Arrays.stream(out.selected()).allMatch(x -> x == -1), "selection must be all padding");
        OracleCheck.assertMatchesOracle(batch, params, out, "NFC = 0, " + path + " (seed " + SEED + ")", rng);
    }

    @Tag("gpu")
    @Test
    void concurrentCallersGetTheSameResultsAsOneCaller() throws Exception {
        gpu.requireDevice();
        BatchLayout layout = new BatchLayout(DType.FP16, 4, 2, 64);
        MobaParams params = MobaParams.of(64, 3);
        SplittableRandom rng = rng("threads");
        List<PackedBatch> batches = new ArrayList<>();
        List<MobaOutput> sequential = new ArrayList<>();
        for (int i = 0; i < 16; i++) {
            batches.add(randomBatch(rng, layout, rng.nextInt(1, 2000), rng.nextInt(0, 700)));
            sequential.add(cuda.forward(batches.get(i), params));
        }
        ExecutorService pool = Executors.newFixedThreadPool(4);
        try {
            List<Future<MobaOutput>> futures = new ArrayList<>();
            for (PackedBatch b : batches) {
                futures.add(pool.submit(() -> cuda.forward(b, params)));
            }
            for (int i = 0; i < batches.size(); i++) {
                MobaOutput got = futures.get(i).get();
                assertArrayEquals(sequential.get(i).out(), got.out(), "batch " + i + " out (seed " + SEED + ")");
                assertArrayEquals(sequential.get(i).lse(), got.lse(), "batch " + i + " lse (seed " + SEED + ")");
                assertArrayEquals(sequential.get(i).selected(), got.selected(), "batch " + i + " selection");
            }
        } finally {
            pool.shutdown();
        }
    }

    @Tag("gpu")
    @Test
    void tenThousandSmallBatchesLeakNoDeviceMemory() {
        gpu.requireDevice();
        BatchLayout layout = new BatchLayout(DType.BF16, 4, 2, 64);
        MobaParams params = MobaParams.of(64, 3);
        SplittableRandom rng = rng("leak");
        List<PackedBatch> batches = new ArrayList<>();
        for (int i = 0; i < 64; i++) {
            batches.add(randomBatch(rng, layout, rng.nextInt(1, 300), rng.nextInt(0, 300), rng.nextInt(1, 40)));
        }
        for (PackedBatch b : batches) { // warm-up: the pool reaches its steady state
            cuda.forward(b, params);
        }
        long freeBefore = cuda.cudaDevice().freeMemory();
        MobaOutput last = null;
        for (int i = 0; i < 10_000; i++) {
            last = cuda.forward(batches.get(i % batches.size()), params);
        }
        long freeAfter = cuda.cudaDevice().freeMemory();
        assertNotNull(last);
        OracleCheck.assertWellFormed(batches.get((10_000 - 1) % batches.size()), params, last, "last batch");
        assertEquals(freeBefore, freeAfter, "device free memory before vs after 10,000 batches (bytes)");
    }

    @Tag("gpu")
    @Test
    void batchWithoutTokensGivesEmptyOutputs() {
        gpu.requireDevice();
        BatchLayout layout = new BatchLayout(DType.FP16, 4, 2, 128);
        PackedBatch empty = randomBatch(rng("empty"), layout, 0, 0);
        MobaOutput out = cuda.forward(empty, MobaParams.of(64, 3));
        assertEquals(0, out.out().length);
        assertEquals(0, out.lse().length);
        assertEquals(0, out.selected().length);
    }

    @Tag("gpu")
    @Test
    void unsupportedShapesAreRejectedWithWhatIsSupported() {
        gpu.requireDevice();
        SplittableRandom rng = rng("unsupported");
        PackedBatch d96 = randomBatch(rng, new BatchLayout(DType.FP16, 2, 1, 96), 10);
        MobaInputException e = assertThrows(MobaInputException.class, () -> cuda.forward(d96, MobaParams.of(64, 2)));
        assertTrue(e.getMessage().contains("head_dim (D) = 96") && e.getMessage().contains("64, 128"),
                e.getMessage());
        PackedBatch d64 = randomBatch(rng, new BatchLayout(DType.BF16, 2, 1, 64), 10);
        e = assertThrows(MobaInputException.class, () -> cuda.forward(d64, MobaParams.of(100, 2)));
        assertTrue(e.getMessage().contains("chunk_size = 100")
                && e.getMessage().contains("multiple of 64 up to 65536"), e.getMessage());
    }

    @Tag("gpu")
    @Test
    void deviceDescriptionNamesGpuOrdinalArchitectureAndBus() {
        gpu.requireDevice();
        CudaDevice d = cuda.cudaDevice();
        assertEquals("cuda", cuda.name());
        assertEquals(d.name() + " (cuda:" + CudaTestSupport.ORDINAL + ", sm_" + d.computeCapability() + ", bus " + d.pciBusId()
                + ")", cuda.device());
        assertTrue(d.computeCapability() >= 80 && d.multiprocessors() > 0 && d.totalMemory() > 0, d.describe());
    }

    @Test
    void unavailableReasonNamesTheOrdinalAndTheCause() {
        // Runs everywhere: without a driver the cause is the driver; with one, the missing device.
        String missing = CudaMobaAttention.unavailableReason(999);
        assertNotNull(missing, "there is no cuda:999");
        assertTrue(missing.startsWith("cuda:999 "), missing);
        if (CudaDriver.unavailableReason() != null) {
            assertTrue(missing.contains("CUDA driver"), missing);
        } else {
            assertTrue(missing.contains("does not exist"), missing);
        }
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> CudaMobaAttention.open(999));
        assertEquals(missing, e.getMessage());
    }
}
