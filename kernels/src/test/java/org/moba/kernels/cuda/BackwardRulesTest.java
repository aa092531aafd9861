package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.SplittableRandom;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.cpu.CpuMobaAttention;

/**
 * The host side of the CUDA backward, without a GPU: input validation ({@link CudaInputRules#checkBackward}, with
 * the CPU backend's forward as a well-formed forward), the scratch sizes and {@code group_tokens} rule
 * ({@link BackwardScratch}), and the launch shared memory of ABI.md "# Backward".
 */
class BackwardRulesTest {

    private static PackedBatch randomBatch(BatchLayout layout, int... lengths) {
        return CudaTestSupport.randomBatch(new SplittableRandom(11), layout, lengths);
    }

    /** Sequences of 70 and 200 tokens (270 in all; the second starts at token 70), H 4/2, D 64. */
    private static PackedBatch twoSequences(DType dtype) {
        return randomBatch(new BatchLayout(dtype, 4, 2, 64), 70, 200);
    }

    /** The CPU backend's forward of {@code batch}: a well-formed forward for the rules to accept. */
    private static MobaOutput cpuForward(PackedBatch batch, MobaParams params) {
        try (CpuMobaAttention cpu = new CpuMobaAttention(1)) {
            return cpu.forward(batch, params);
        }
    }

    @Test
    void backwardInputsAreCheckedWithFieldAndValue() {
        PackedBatch batch = twoSequences(DType.BF16);
        MobaParams params = MobaParams.of(64, 3);
        MobaOutput fwd = cpuForward(batch, params);
        short[] dout = batch.q().clone();
        assertDoesNotThrow(() -> CudaInputRules.checkBackward(batch, params, fwd, dout));

        assertMessage(() -> CudaInputRules.checkBackward(batch, params, fwd, Arrays.copyOf(dout, dout.length - 1)),
                "dout has " + (dout.length - 1) + " elements, expected T*H*D = " + dout.length);
        assertMessage(() -> CudaInputRules.checkBackward(batch, params, fwd, null), "dout is missing");
        assertMessage(() -> CudaInputRules.checkBackward(batch, params, null, dout), "forward is missing");
        assertMessage(() -> CudaInputRules.checkBackward(null, params, fwd, dout), "batch is missing");
        assertMessage(() -> CudaInputRules.checkBackward(batch, null, fwd, dout), "params are missing");
        MobaOutput shortOut = new MobaOutput(Arrays.copyOf(fwd.out(), 5), fwd.lse(), fwd.selected(),
                fwd.selectionWidth(), fwd.timings());
        assertMessage(() -> CudaInputRules.checkBackward(batch, params, shortOut, dout),
                "forward.out has 5 elements, expected T*H*D = " + dout.length);
        MobaOutput shortLse = new MobaOutput(fwd.out(), Arrays.copyOf(fwd.lse(), 3), fwd.selected(),
                fwd.selectionWidth(), fwd.timings());
        assertMessage(() -> CudaInputRules.checkBackward(batch, params, shortLse, dout),
                "forward.lse has 3 elements, expected T*H = " + 270 * 4);
        assertMessage(() -> CudaInputRules.checkBackward(batch, MobaParams.of(64, 2), fwd, dout),
                "forward.selectionWidth is 2, expected 1");
        MobaOutput shortSelection = new MobaOutput(fwd.out(), fwd.lse(), new int[7], fwd.selectionWidth(),
                fwd.timings());
        assertMessage(() -> CudaInputRules.checkBackward(batch, params, shortSelection, dout),
                "forward.selected has 7 elements, expected T*H*selectionWidth = " + 270 * 4 * 2);
        // The CUDA rules still apply.
        assertMessage(() -> CudaInputRules.checkBackward(batch, MobaParams.of(100, 3), fwd, dout), "chunk_size = 100");
    }

    @Test
    void selectionsTheKernelsCannotRouteAreRejected() {
        PackedBatch batch = twoSequences(DType.FP16);
        MobaParams params = MobaParams.of(64, 3);
        MobaOutput fwd = cpuForward(batch, params);
        short[] dout = batch.q().clone();
        int w = fwd.selectionWidth();
        int h = batch.heads();
        // Sequence 1 (starts at token 70), position 199: own chunk 3, candidates 0..2.
        int row = ((70 + 199) * h + 3) * w;
        int[][] bad = {{3, -1}, {2, 1}, {1, 1}, {-1, 0}, {-2, -1}, {7, -1}};
        String[] expected = {"slot 0 holds 3", "slot 1 holds 1,", "slot 1 holds 1,", "slot 1 holds 0",
            "slot 0 holds -2", "slot 0 holds 7"};
        for (int i = 0; i < bad.length; i++) {
            int[] sel = fwd.selected().clone();
            sel[row] = bad[i][0];
            sel[row + 1] = bad[i][1];
            MobaOutput f = new MobaOutput(fwd.out(), fwd.lse(), sel, w, fwd.timings());
            assertMessage(() -> CudaInputRules.checkBackward(batch, params, f, dout),
                    "forward.selected: sequence 1, token 199, head 3, " + expected[i]);
        }
        // Position 5 of sequence 0 has no candidate: any chunk there is out of range.
        int[] sel = fwd.selected().clone();
        sel[(5 * h) * w] = 0;
        MobaOutput f = new MobaOutput(fwd.out(), fwd.lse(), sel, w, fwd.timings());
        assertMessage(() -> CudaInputRules.checkBackward(batch, params, f, dout),
                "forward.selected: sequence 0, token 5, head 0, slot 0 holds 0, expected -1 or an earlier chunk in "
                        + "[0, 0)");
        // Fewer picks than topk - 1 (trailing padding) are accepted.
        int[] fewer = fwd.selected().clone();
        fewer[row + 1] = -1;
        fewer[row] = Math.max(0, fewer[row]);
        MobaOutput ok = new MobaOutput(fwd.out(), fwd.lse(), fewer, w, fwd.timings());
        assertDoesNotThrow(() -> CudaInputRules.checkBackward(batch, params, ok, dout));
    }

    @Test
    void denseBackwardTakesNoSelection() {
        BatchLayout layout = new BatchLayout(DType.BF16, 2, 2, 128);
        PackedBatch batch = randomBatch(layout, 130);
        MobaParams dense = MobaParams.denseCausal(64);
        MobaOutput fwd = cpuForward(batch, dense);
        assertEquals(0, fwd.selectionWidth());
        assertDoesNotThrow(() -> CudaInputRules.checkBackward(batch, dense, fwd, batch.q()));
    }

    @Test
    void groupTokensIsTheSmallestPowerOfTwoOfAtLeast64WithinTheCellLimit() {
        assertEquals(64, BackwardScratch.groupTokens(1, 1));
        // 2 x 64K tokens, H = 16, chunk 128: 16384 buckets; 2^24 / 16384 = 1024 groups -> 128 tokens per group.
        assertEquals(128, BackwardScratch.groupTokens(131072, 16L * 1024));
        // 2 x 512K tokens, H = 16, chunk 128: 131072 buckets; at most 128 groups -> 8192 tokens per group.
        assertEquals(8192, BackwardScratch.groupTokens(1L << 20, 16L * 8192));
        for (long tokens : new long[] {1, 63, 64, 65, 1000, 1 << 17, 3_000_001}) {
            for (long buckets : new long[] {1, 7, 4096, 1 << 20, 1 << 24}) {
                int g = BackwardScratch.groupTokens(tokens, buckets);
                assertTrue(g >= 64 && Integer.bitCount(g) == 1, "power of two >= 64: " + g);
                assertTrue(buckets * ((tokens + g - 1) / g) <= 1L << 24, tokens + " tokens, " + buckets + ": " + g);
                assertTrue(g == 64 || buckets * ((tokens + g / 2 - 1) / (g / 2)) > 1L << 24,
                        "smallest: " + tokens + " tokens, " + buckets + " buckets, " + g);
            }
        }
        MobaInputException e = assertThrows(MobaInputException.class,
                () -> BackwardScratch.groupTokens(1 << 30, (1L << 24) + 1));
        assertTrue(e.getMessage().contains("H*NFC = 16777217") && e.getMessage().contains("split the batch"),
                e.getMessage());
    }

    @Test
    void scratchFollowsTheAbiTable() {
        BatchLayout layout = new BatchLayout(DType.FP16, 8, 2, 128);
        PackedBatch batch = randomBatch(layout, 64 * 5 + 3, 100);
        MobaParams params = MobaParams.of(64, 4);
        BatchPlan plan = BatchPlan.of(batch, params);
        BackwardScratch s = BackwardScratch.of(plan, batch.totalTokens(), 8, 128);
        long t = batch.totalTokens();
        int w = 3;
        long buckets = 8L * (5 + 1);
        assertTrue(s.routed());
        assertEquals(buckets, s.buckets());
        assertEquals(64, s.groupTokens());
        assertEquals((t + 63) / 64, s.numGroups());
        assertEquals(t * 8 * w, s.entries());
        assertEquals(4 * t * 8, s.deltaBytes());
        assertEquals(4 * buckets * s.numGroups(), s.groupCountBytes());
        assertEquals(4 * buckets, s.bucketCountBytes());
        assertEquals(4 * (buckets + 1), s.bucketPrefixBytes());
        assertEquals(4 * t * 8 * w, s.rowsBytes());
        assertEquals(2 * t * 8 * w * 128, s.partialDqBytes());
        assertEquals(s.deltaBytes() + s.groupCountBytes() + 2 * s.bucketCountBytes() + 2 * s.bucketPrefixBytes()
                + s.rowsBytes() + s.partialDqBytes(), s.totalBytes());

        // Dense, W == 0 and no full chunk: delta only.
        for (MobaParams p : new MobaParams[] {MobaParams.denseCausal(64), MobaParams.of(64, 1)}) {
            BackwardScratch d = BackwardScratch.of(BatchPlan.of(batch, p), t, 8, 128);
            assertFalse(d.routed(), p.toString());
            assertEquals(4 * t * 8, d.totalBytes(), p.toString());
        }
        PackedBatch short1 = randomBatch(layout, 10, 63);
        PackedBatch noFullChunk = PackedBatch.of(layout, short1.cuSeqlens(), 300, short1.q(), short1.k(), short1.v());
        BatchPlan p = BatchPlan.of(noFullChunk, params);
        assertEquals(3, p.selectionWidth);
        assertFalse(BackwardScratch.of(p, noFullChunk.totalTokens(), 8, 128).routed());
    }

    @Test
    void backwardSharedMemoryAsAbi() {
        // The totals ABI.md prints for each kernel.
        assertEquals(49152, MobaKernels.SharedMemory.backwardDq(64));
        assertEquals(98304, MobaKernels.SharedMemory.backwardDq(128));
        assertEquals(50176, MobaKernels.SharedMemory.backwardDqSelected(64));
        assertEquals(99328, MobaKernels.SharedMemory.backwardDqSelected(128));
        assertEquals(50688, MobaKernels.SharedMemory.backwardDkdv(64));
        assertEquals(99840, MobaKernels.SharedMemory.backwardDkdv(128));
    }

    private static void assertMessage(Executable call, String expected) {
        MobaInputException e = assertThrows(MobaInputException.class, call);
        assertTrue(e.getMessage().contains(expected), "message '" + e.getMessage() + "' lacks '" + expected + "'");
    }
}
