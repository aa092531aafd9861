package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.LongSupplier;

import org.junit.jupiter.api.Test;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;

/** The attention path choice, the gathered scratch sizes and the launch constants of ABI.md; no GPU needed. */
class AttentionPathTest {
    private static final long GIB = 1L << 30;
    private static final LongSupplier PLENTY = () -> 80 * GIB;

    private static PackedBatch batchOf(int heads, int headDim, int maxSeqlen, int... lengths) {
        BatchLayout layout = new BatchLayout(DType.FP16, heads, 1, headDim);
        int[] cu = new int[lengths.length + 1];
        for (int i = 0; i < lengths.length; i++) {
            cu[i + 1] = cu[i] + lengths[i];
        }
        int t = cu[lengths.length];
        return PackedBatch.of(layout, cu, maxSeqlen, new short[t * heads * headDim], new short[t * headDim],
                new short[t * headDim]);
    }

    private static AttentionPath.Choice choose(PackedBatch batch, MobaParams params, AttentionPath forced,
                                               LongSupplier available) {
        return AttentionPath.choose(BatchPlan.of(batch, params), batch.totalTokens(), batch.heads(),
                batch.headDim(), forced, available, AttentionPath.PairCosts.MMA_SYNC);
    }

    @Test
    void gatheredScratchAtTheFlashMobaShape() {
        // FlashMoBA 2x64K: B=2, H=16, D=128, chunk 128, topk 8 -> W = 7, NFC = 2 * 512, T = 131072.
        GatheredScratch s = GatheredScratch.of(131072, 16, 7, 128, 1024);
        assertEquals(16 * 1024, s.buckets());
        assertEquals(131072L * 16 * 7, s.entries());
        assertEquals(14_680_064L, s.entries());
        assertEquals(4L * 16384, s.bucketCountBytes());
        assertEquals(4L * 16385, s.bucketPrefixBytes());
        assertEquals(4L * 16384, s.bucketCursorBytes());
        assertEquals(58_720_256L, s.rowsBytes());
        assertEquals(3_758_096_384L, s.partialOutBytes(), "partial_o = T*H*W*D*2 = 3.5 GiB");
        assertEquals(58_720_256L, s.partialLseBytes());
        assertEquals(3_758_096_384L + 2 * 58_720_256L + 4 * 65536 + 8, s.totalBytes());
    }

    @Test
    void gatheredScratchFollowsTheAbiTable() {
        PackedBatch batch = batchOf(4, 64, 300, 300, 0, 129);
        MobaParams params = MobaParams.of(64, 3);
        AttentionPath.Choice c = choose(batch, params, AttentionPath.GATHERED, PLENTY);
        GatheredScratch s = c.scratch();
        int w = params.selectionWidth(300);
        assertEquals(2, w);
        assertEquals(4L * (300 / 64 + 129 / 64), s.buckets(), "H * NFC");
        assertEquals(429L * 4 * w, s.entries(), "T * H * W");
        assertEquals(2L * s.entries() * 64, s.partialOutBytes());
        assertEquals(s.totalBytes(), c.scratchBytes());
    }

    @Test
    void denseAndOwnChunkOnlyRunUnionWithoutAskingForMemory() {
        PackedBatch batch = batchOf(2, 64, 500, 10, 500);
        LongSupplier fail = () -> {
            throw new AssertionError("free memory queried for a call that has no selection");
        };
        for (AttentionPath forced : new AttentionPath[] {null, AttentionPath.GATHERED, AttentionPath.UNION}) {
            AttentionPath.Choice dense = choose(batch, MobaParams.denseCausal(64), forced, fail);
            assertEquals(AttentionPath.UNION, dense.path());
            assertNull(dense.scratch());
            assertEquals(0, dense.scratchBytes());
            assertFalse(dense.fellBack());
            AttentionPath.Choice own = choose(batch, MobaParams.of(64, 1), forced, fail);
            assertEquals(AttentionPath.UNION, own.path(), "topk 1: W = 0");
            assertFalse(own.fellBack());
        }
        assertEquals(AttentionPath.UNION, choose(batchOf(2, 64, 64, 10, 64), MobaParams.of(64, 3), null, fail).path(),
                "no query has a candidate: W = 0");
    }

    @Test
    void mobaWithASelectionRunsGatheredWhenTheScratchFitsTheBudget() {
        PackedBatch batch = batchOf(2, 128, 8192, 8192, 77);
        AttentionPath.Choice c = choose(batch, MobaParams.of(128, 8), null, PLENTY);
        assertEquals(AttentionPath.GATHERED, c.path(), c.reason());
        assertEquals(20 * GIB, c.budgetBytes(), "25% of the available memory");
        assertFalse(c.fellBack());
        assertTrue(c.scratchBytes() > 2L * 8269 * 2 * 7 * 128, "partial_o alone");
    }

    /** Lengths of kernel_check's many-short timing case: its generator, the first {@code n} of its 512. */
    private static int[] manyShortLengths(int n) {
        int[] lengths = new int[n];
        int x = 12345;
        for (int i = 0; i < n; i++) {
            x = x * 1664525 + 1013904223;
            lengths[i] = 256 + (int) (Integer.toUnsignedLong(x) >>> 8) % 1793;
        }
        return lengths;
    }

    @Test
    void unionRunsWhereItIsEstimatedCheaperAndWithoutAskingForMemory() {
        LongSupplier fail = () -> {
            throw new AssertionError("free memory queried for a call that runs UNION by cost");
        };
        // Measured on an H100 (docs/perf.md): union 17.7 ms, gathered 20.1 ms on 512 sequences of 256..2048 tokens.
        int[] lengths = manyShortLengths(128);
        PackedBatch many = batchOf(1, 64, java.util.Arrays.stream(lengths).max().orElseThrow(), lengths);
        AttentionPath.Choice c = choose(many, MobaParams.of(128, 4), null, fail);
        assertEquals(AttentionPath.UNION, c.path(), c.reason());
        assertFalse(c.fellBack(), "chosen by cost, not a fallback");
        assertEquals(0, c.scratchBytes());
        assertTrue(c.reason().contains("estimated cheaper"), c.reason());
        // Gathered where rows have many more past chunks than they select: FlashMoBA 2x8K (union 2.55 ms, gathered
        // 1.46 ms), chunk 4096 with the gathered pair on wgmma, and one head of 32K tokens at chunk 512.
        assertEquals(AttentionPath.GATHERED, choose(batchOf(1, 64, 8192, 8192, 8192), MobaParams.of(128, 8), null,
                PLENTY).path());
        PackedBatch long64k = batchOf(1, 64, 65536, 65536);
        assertEquals(AttentionPath.GATHERED, AttentionPath.choose(BatchPlan.of(long64k, MobaParams.of(4096, 3)),
                long64k.totalTokens(), 1, 64, null, PLENTY,
                new AttentionPath.PairCosts(1.0, AttentionPath.WIDE_UNION_PAIR_COST,
                        AttentionPath.WIDE_GATHERED_PAIR_COST)).path());
        assertEquals(AttentionPath.GATHERED, choose(batchOf(1, 64, 32768, 32768), MobaParams.of(512, 3), null,
                PLENTY).path());
    }

    @Test
    void onTheWgmmaEngineTheCheaperUnionWalkWinsMoreShapesButNotLongOnes() {
        PairCostsCheck wgmma = new PairCostsCheck(new AttentionPath.PairCosts(AttentionPath.WIDE_UNION_PAIR_COST, 1.0,
                AttentionPath.GATHERED_PAIR_COST));
        int[] lengths = manyShortLengths(128);
        assertEquals(AttentionPath.UNION, wgmma.choose(batchOf(1, 64, 2048, lengths), MobaParams.of(128, 4)));
        assertEquals(AttentionPath.GATHERED, wgmma.choose(batchOf(1, 64, 8192, 8192, 8192), MobaParams.of(128, 8)),
                "FlashMoBA 2x8K: rows select 7 of ~32 past chunks");
    }

    /** The choice under given pair costs, with plenty of memory. */
    private record PairCostsCheck(AttentionPath.PairCosts costs) {
        AttentionPath choose(PackedBatch batch, MobaParams params) {
            return AttentionPath.choose(BatchPlan.of(batch, params), batch.totalTokens(), batch.heads(),
                    batch.headDim(), null, PLENTY, costs).path();
        }
    }

    @Test
    void scratchBeyondTheBudgetFallsBackToUnion() {
        PackedBatch batch = batchOf(2, 128, 8192, 8192, 77);
        MobaParams params = MobaParams.of(128, 8);
        long scratch = choose(batch, params, null, PLENTY).scratch().totalBytes();
        // The budget is a quarter of what is available: exactly 4x the scratch fits, one byte less does not.
        assertEquals(AttentionPath.GATHERED, choose(batch, params, null, () -> 4 * scratch).path());
        AttentionPath.Choice c = choose(batch, params, null, () -> 4 * scratch - 4);
        assertEquals(AttentionPath.UNION, c.path());
        assertTrue(c.fellBack());
        assertTrue(c.reason().contains(Long.toString(scratch)) && c.reason().contains(Long.toString(4 * scratch - 4))
                && c.reason().contains("25%"), c.reason());
        assertEquals(0, c.scratchBytes());
    }

    @Test
    void forcedPathOverridesTheBudgetAndSkipsTheMemoryQuery() {
        PackedBatch batch = batchOf(2, 64, 4096, 4096);
        MobaParams params = MobaParams.of(64, 4);
        AtomicInteger queries = new AtomicInteger();
        LongSupplier none = () -> {
            queries.incrementAndGet();
            return 0;
        };
        AttentionPath.Choice gathered = choose(batch, params, AttentionPath.GATHERED, none);
        assertEquals(AttentionPath.GATHERED, gathered.path());
        AttentionPath.Choice union = choose(batch, params, AttentionPath.UNION, none);
        assertEquals(AttentionPath.UNION, union.path());
        assertFalse(union.fellBack(), "a forced UNION is no fallback");
        assertEquals(0, queries.get());
        assertEquals(AttentionPath.UNION, choose(batch, params, null, none).path(), "nothing available");
        assertEquals(1, queries.get());
    }

    @Test
    void entriesBeyondThirtyTwoBitsRunUnionEvenWhenForced() {
        PackedBatch small = batchOf(2, 64, 4096, 4096);
        BatchPlan plan = BatchPlan.of(small, MobaParams.of(64, 4)); // W = 3
        long tokens = (1L << 30) + 1; // T*H*W = 6 * 2^30 + 6 entries
        for (AttentionPath forced : new AttentionPath[] {null, AttentionPath.GATHERED}) {
            AttentionPath.Choice c = AttentionPath.choose(plan, tokens, 2, 64, forced, () -> Long.MAX_VALUE, AttentionPath.PairCosts.MMA_SYNC);
            assertEquals(AttentionPath.UNION, c.path());
            assertTrue(c.fellBack());
            assertTrue(c.reason().contains("32-bit"), c.reason());
        }
        long justFits = AttentionPath.MAX_GATHERED_ENTRIES / 6;
        assertEquals(AttentionPath.GATHERED,
                AttentionPath.choose(plan, justFits, 2, 64, null, () -> Long.MAX_VALUE, AttentionPath.PairCosts.MMA_SYNC).path());
    }

    @Test
    void sharedMemoryMatchesTheNumbersOfAbiMd() {
        assertEquals(57728, MobaKernels.SharedMemory.gate(64));
        assertEquals(94592, MobaKernels.SharedMemory.gate(128));
        assertEquals(40960, MobaKernels.SharedMemory.attention(64));
        assertEquals(81920, MobaKernels.SharedMemory.attention(128));
        assertEquals(49152, MobaKernels.SharedMemory.selected(64));
        assertEquals(98304, MobaKernels.SharedMemory.selected(128));
        assertEquals(MobaKernels.SharedMemory.attention(128), MobaKernels.SharedMemory.ownCombine(128));
        assertEquals(115872, MobaKernels.SharedMemory.wideAttention(64), "sm_90a forward, union step slots included");
        assertEquals(230560, MobaKernels.SharedMemory.wideAttention(128));
        assertEquals(24 * 4, MobaKernels.SharedMemory.selectionSort(24));
    }

    @Test
    void rowsPerGroupAndSelectedGrid() {
        assertEquals(512, MobaKernels.rowsPerGroup(64));
        assertEquals(512, MobaKernels.rowsPerGroup(128));
        assertEquals(64, MobaKernels.rowsPerGroup(192));
        assertEquals(64, MobaKernels.rowsPerGroup(4096));
        // ceil(entries / rows_per_group) + H * NFC
        assertEquals(28672 + 16384, MobaKernels.selectedGrid(14_680_064, 512, 16, 1024));
        assertEquals(2 + 6, MobaKernels.selectedGrid(65, 64, 2, 3));
        assertEquals(0, MobaKernels.selectedGrid(0, 64, 2, 0));
    }
}
