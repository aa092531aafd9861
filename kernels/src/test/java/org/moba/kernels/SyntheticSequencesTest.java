package org.moba.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import org.junit.jupiter.api.Test;

class SyntheticSequencesTest {
    private static final BatchLayout LAYOUT = new BatchLayout(DType.BF16, 4, 2, 64);

    @Test
    void sameSeedIdAndLengthGiveTheSameTensors() {
        Sequence a = new SyntheticSequences(42, LAYOUT).generate(7, 300);
        Sequence b = new SyntheticSequences(42, LAYOUT).generate(7, 300);
        assertArrayEquals(a.q(), b.q());
        assertArrayEquals(a.k(), b.k());
        assertArrayEquals(a.v(), b.v());
    }

    @Test
    void differentSeedOrIdGiveDifferentTensors() {
        Sequence a = new SyntheticSequences(42, LAYOUT).generate(7, 300);
        assertFalse(Arrays.equals(a.k(), new SyntheticSequences(43, LAYOUT).generate(7, 300).k()));
        assertFalse(Arrays.equals(a.k(), new SyntheticSequences(42, LAYOUT).generate(8, 300).k()));
    }

    /** Keys of one segment share a topic, so chunk means differ far more than pure noise would make them. */
    @Test
    void keysHaveChunkLevelStructure() {
        int segment = 64;
        Sequence s = new SyntheticSequences(1, LAYOUT, segment).generate(0, 64 * 32);
        int d = LAYOUT.headDim();
        int hkv = LAYOUT.kvHeads();
        double meanNormSq = 0;
        for (int c = 0; c < 32; c++) {
            double[] mu = new double[d];
            for (int t = c * segment; t < (c + 1) * segment; t++) {
                for (int i = 0; i < d; i++) {
                    mu[i] += LAYOUT.dtype().toFloat(s.k()[(t * hkv) * d + i]) / segment;
                }
            }
            meanNormSq += Arrays.stream(mu).map(x -> x * x).sum() / 32;
        }
        // Pure N(0,1) noise would give E|mu|^2 = D / segment = 1; a topic of norm sqrt(D) gives about D.
        assertTrue(meanNormSq > 0.5 * d, "chunk means look like noise: E|mu|^2 = " + meanNormSq);
        for (short bits : s.q()) {
            assertTrue(Float.isFinite(LAYOUT.dtype().toFloat(bits)));
        }
    }
}
