package org.moba.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.SplittableRandom;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** The NaN/Inf scan on little-endian bytes (four values per word) finds exactly what the scan on values finds. */
class DTypeFiniteScanTest {

    private static byte[] bytes(short[] values) {
        ByteBuffer b = ByteBuffer.allocate(values.length * 2).order(ByteOrder.LITTLE_ENDIAN);
        b.asShortBuffer().put(values);
        return b.array();
    }

    @ParameterizedTest(name = "{0}: every bit pattern, alone at every lane of a word and in the tail")
    @EnumSource(DType.class)
    void everyPatternAtEveryPosition(DType dt) {
        for (int length : new int[] {1, 4, 7}) {
            for (int at = 0; at < length; at++) {
                short[] values = new short[length];
                for (int pattern = 0; pattern < 0x10000; pattern++) {
                    values[at] = (short) pattern;
                    int expected = dt.firstNonFinite(values);
                    assertEquals(expected, dt.firstNonFinite(bytes(values)),
                            dt + " pattern 0x" + Integer.toHexString(pattern) + " at " + at + " of " + length);
                }
            }
        }
    }

    @ParameterizedTest(name = "{0}: random values with a few NaN and infinities")
    @EnumSource(DType.class)
    void randomArrays(DType dt) {
        SplittableRandom rng = new SplittableRandom(42);
        short nan = dt == DType.FP16 ? (short) 0x7E00 : (short) 0x7FC0;
        short negInf = dt == DType.FP16 ? (short) 0xFC00 : (short) 0xFF80;
        for (int trial = 0; trial < 300; trial++) {
            short[] values = new short[rng.nextInt(1, 200)];
            for (int i = 0; i < values.length; i++) {
                values[i] = dt.fromFloat((float) (rng.nextGaussian() * Math.pow(10, rng.nextInt(-3, 4))));
            }
            if (trial % 3 != 0) {
                values[rng.nextInt(values.length)] = trial % 2 == 0 ? nan : negInf;
            }
            assertEquals(dt.firstNonFinite(values), dt.firstNonFinite(bytes(values)));
        }
        assertEquals(-1, dt.firstNonFinite(new byte[0]));
    }
}
