package org.moba.spark;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** How the sequences of safetensors files are cut into Spark partitions ({@link MobaTensors#balancedParts}). */
class MobaTensorsPartsTest {

    private static int[] cu(int... lengths) {
        int[] cu = new int[lengths.length + 1];
        for (int i = 0; i < lengths.length; i++) {
            cu[i + 1] = cu[i] + lengths[i];
        }
        return cu;
    }

    @Test
    void partsCrossFilesAndKeepTheOrderOfSequences() {
        // Two files of 3 sequences of 100 tokens, 3 slots: 200 tokens per part, the middle part spans both files.
        List<List<int[]>> parts = MobaTensors.balancedParts(List.of(cu(100, 100, 100), cu(100, 100, 100)), 3);
        assertEquals(3, parts.size());
        assertArrayEquals(new int[] {0, 0, 2}, parts.get(0).get(0));
        assertEquals(1, parts.get(0).size());
        assertArrayEquals(new int[] {0, 2, 3}, parts.get(1).get(0));
        assertArrayEquals(new int[] {1, 0, 1}, parts.get(1).get(1));
        assertArrayEquals(new int[] {1, 1, 3}, parts.get(2).get(0));
    }

    @Test
    void fewerSequencesThanSlotsGiveOnePartEachAndEmptyFilesNone() {
        List<List<int[]>> parts = MobaTensors.balancedParts(List.of(cu(), cu(5000), cu(10)), 8);
        assertEquals(2, parts.size());
        assertArrayEquals(new int[] {1, 0, 1}, parts.get(0).get(0));
        assertArrayEquals(new int[] {2, 0, 1}, parts.get(1).get(0));
        assertTrue(MobaTensors.balancedParts(List.of(cu()), 4).isEmpty());
    }

    /** Like gen's files: 8 files of random lengths, as many slots as the score run had cores. */
    @ParameterizedTest
    @ValueSource(ints = {1, 2, 8, 16})
    void everySequenceOnceAndNoPartFarFromAnEvenShare(int slots) {
        SplittableRandom rng = new SplittableRandom(slots);
        List<int[]> files = new ArrayList<>();
        long total = 0;
        int sequences = 0;
        for (int f = 0; f < 8; f++) {
            int[] lengths = rng.ints(32, 256, 8193).toArray();
            files.add(cu(lengths));
            total += cu(lengths)[32];
            sequences += 32;
        }
        List<List<int[]>> parts = MobaTensors.balancedParts(files, slots);
        assertTrue(parts.size() <= slots, parts.size() + " parts for " + slots + " slots");
        int seen = 0;
        int lastFile = 0;
        int lastEnd = 0;
        for (List<int[]> part : parts) {
            long tokens = 0;
            for (int[] r : part) {
                if (r[0] == lastFile) {
                    assertEquals(lastEnd, r[1], "consecutive within a file");
                } else {
                    assertEquals(0, r[1], "a file starts at its first sequence");
                }
                int[] cu = files.get(r[0]);
                tokens += cu[r[2]] - cu[r[1]];
                seen += r[2] - r[1];
                lastFile = r[0];
                lastEnd = r[2];
            }
            // The middle-token rule places a cut within half a sequence (at most 8192 tokens) of the even share.
            assertTrue(Math.abs(tokens - (double) total / slots) <= 8192, tokens + " tokens against an even share "
                    + total / slots);
        }
        assertEquals(sequences, seen);
    }
}
