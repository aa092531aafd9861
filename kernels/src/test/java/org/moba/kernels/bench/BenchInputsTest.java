package org.moba.kernels.bench;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.List;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.PackedBatch;

/** The bench's inputs: a pure function of the seed, packed like the lengths say, and random normal. */
class BenchInputsTest {
    private static final BatchLayout LAYOUT = new BatchLayout(DType.BF16, 4, 2, 32);
    private static final int[] LENGTHS = {300, 0, 1000, 64, 2000};
    private static final int BUDGET = 1024;

    @Test
    void sameSeedGivesTheSameBatchesAndAnotherSeedOthers() {
        List<PackedBatch> a = BenchInputs.batches(7, LAYOUT, LENGTHS, BUDGET);
        List<PackedBatch> b = BenchInputs.batches(7, LAYOUT, LENGTHS, BUDGET);
        assertEquals(a.size(), b.size());
        for (int i = 0; i < a.size(); i++) {
            assertArrayEquals(a.get(i).cuSeqlens(), b.get(i).cuSeqlens(), "cu_seqlens of batch " + i);
            assertArrayEquals(a.get(i).q(), b.get(i).q(), "q of batch " + i);
            assertArrayEquals(a.get(i).k(), b.get(i).k(), "k of batch " + i);
            assertArrayEquals(a.get(i).v(), b.get(i).v(), "v of batch " + i);
        }
        assertFalse(Arrays.equals(a.get(0).q(), BenchInputs.batches(8, LAYOUT, LENGTHS, BUDGET).get(0).q()),
                "another seed, other values");
    }

    /** Consecutive groups within the budget, a longer sequence alone; each batch's arrays sized by its tokens. */
    @Test
    void batchesFollowTheLengthsAndTheTokenBudget() {
        List<PackedBatch> batches = BenchInputs.batches(1, LAYOUT, LENGTHS, BUDGET);
        int[][] cu = {{0, 300, 300}, {0, 1000}, {0, 64}, {0, 2000}};
        int[] max = {300, 1000, 64, 2000};
        assertEquals(cu.length, batches.size());
        for (int i = 0; i < cu.length; i++) {
            PackedBatch batch = batches.get(i);
            assertArrayEquals(cu[i], batch.cuSeqlens(), "cu_seqlens of batch " + i);
            assertEquals(max[i], batch.maxSeqlen(), "max_seqlen of batch " + i);
            assertEquals(LAYOUT, batch.layout());
            int tokens = cu[i][cu[i].length - 1];
            assertEquals(tokens * LAYOUT.qElementsPerToken(), batch.q().length);
            assertEquals(tokens * LAYOUT.kvElementsPerToken(), batch.k().length);
            assertEquals(tokens * LAYOUT.kvElementsPerToken(), batch.v().length);
        }
    }

    /** The shortest tape (one token's worth, for a one-token shape) still fills every element. */
    @Test
    void aOneTokenShapeIsFilled() {
        PackedBatch batch = BenchInputs.batches(5, LAYOUT, new int[] {1}, 1).get(0);
        assertArrayEquals(new int[] {0, 1}, batch.cuSeqlens());
        for (short[] tensor : new short[][] {batch.q(), batch.k(), batch.v()}) {
            long zeros = IntStream.range(0, tensor.length).filter(i -> tensor[i] == 0).count();
            assertTrue(zeros < tensor.length / 4, zeros + " zeros of " + tensor.length);
        }
    }

    /** Never zeros: standard normal values in every tensor, mean near 0 and variance near 1. */
    @Test
    void valuesAreStandardNormal() {
        PackedBatch batch = BenchInputs.batches(3, LAYOUT, new int[] {4096}, 4096).get(0);
        for (short[] tensor : new short[][] {batch.q(), batch.k(), batch.v()}) {
            double sum = 0;
            double squares = 0;
            for (short bits : tensor) {
                double x = LAYOUT.dtype().toFloat(bits);
                sum += x;
                squares += x * x;
            }
            double mean = sum / tensor.length;
            double variance = squares / tensor.length - mean * mean;
            assertTrue(Math.abs(mean) < 0.02, "mean " + mean);
            assertTrue(Math.abs(variance - 1) < 0.05, "variance " + variance);
        }
    }
}
