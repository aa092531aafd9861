package org.moba.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Conversions are checked on every one of the 65,536 bit patterns of each 16-bit type. */
class HalfFloatTest {

    private static boolean isNaN(DType dt, int bits) {
        int expMask = dt == DType.FP16 ? 0x7C00 : 0x7F80;
        int mantMask = dt == DType.FP16 ? 0x03FF : 0x007F;
        return (bits & expMask) == expMask && (bits & mantMask) != 0;
    }

    @ParameterizedTest(name = "{0}: every bit pattern survives widen then narrow")
    @EnumSource(DType.class)
    void everyPatternRoundTrips(DType dt) {
        for (int pattern = 0; pattern < 0x10000; pattern++) {
            int bits = pattern;
            float f = dt.toFloat((short) bits);
            short back = dt.fromFloat(f);
            if (isNaN(dt, bits)) {
                assertTrue(Float.isNaN(f), () -> "NaN pattern widened to a number: " + Integer.toHexString(bits));
                assertTrue(isNaN(dt, back & 0xFFFF), "NaN narrowed to a number");
            } else {
                assertEquals(bits, back & 0xFFFF, () -> dt + " pattern 0x" + Integer.toHexString(bits)
                        + " -> " + f + " -> 0x" + Integer.toHexString(back & 0xFFFF));
            }
        }
    }

    @ParameterizedTest(name = "{0}: widening matches the IEEE value of the pattern")
    @EnumSource(DType.class)
    void wideningIsExact(DType dt) {
        int mantBits = dt == DType.FP16 ? 10 : 7;
        int bias = dt == DType.FP16 ? 15 : 127;
        int expMax = dt == DType.FP16 ? 31 : 255;
        for (int bits = 0; bits < 0x10000; bits++) {
            if (isNaN(dt, bits)) {
                continue;
            }
            int sign = bits >>> 15;
            int exp = (bits >>> mantBits) & expMax;
            int mant = bits & ((1 << mantBits) - 1);
            double magnitude;
            if (exp == expMax) {
                magnitude = Double.POSITIVE_INFINITY;
            } else if (exp == 0) {
                magnitude = mant * Math.pow(2, 1 - bias - mantBits);
            } else {
                magnitude = (1 + mant / (double) (1 << mantBits)) * Math.pow(2, exp - bias);
            }
            double expected = sign == 1 ? -magnitude : magnitude;
            float actual = dt.toFloat((short) bits);
            assertEquals(expected, actual, 0.0, "pattern 0x" + Integer.toHexString(bits));
            assertEquals(sign == 1, (Float.floatToRawIntBits(actual) >>> 31) == 1, "sign of 0x" + Integer.toHexString(bits));
        }
    }

    /**
     * For every finite non-negative pattern a and its successor b (the next pattern up, Inf after the largest finite),
     * the exact midpoint must round to whichever has an even significand, and values a hair either side of it must
     * round to the nearer neighbour. The midpoint is exact in float for both types.
     */
    @ParameterizedTest(name = "{0}: midpoints round to even, neighbours to nearest")
    @EnumSource(DType.class)
    void roundsToNearestEven(DType dt) {
        int inf = dt == DType.FP16 ? 0x7C00 : 0x7F80;
        for (int a = 0; a < inf; a++) {
            int b = a + 1;
            for (int sign : new int[] {0, 0x8000}) {
                float fa = dt.toFloat((short) (a | sign));
                float fb = dt.toFloat((short) (b | sign));
                // Past the largest finite value the midpoint lies half an ulp above it, as if b were finite.
                double mid = b == inf ? fa + (fa - (double) dt.toFloat((short) ((a - 1) | sign))) / 2
                        : ((double) fa + fb) / 2;
                float m = (float) mid;
                assertEquals(mid, m, 0.0, "midpoint not exact in float");
                int even = (a & 1) == 0 ? a : b;
                assertEquals(even | sign, dt.fromFloat(m) & 0xFFFF,
                        "tie between 0x" + Integer.toHexString(a | sign) + " and 0x" + Integer.toHexString(b | sign));
                assertEquals(a | sign, dt.fromFloat(towardZero(m)) & 0xFFFF, "just below the midpoint of 0x"
                        + Integer.toHexString(a | sign));
                assertEquals(b | sign, dt.fromFloat(awayFromZero(m)) & 0xFFFF, "just above the midpoint of 0x"
                        + Integer.toHexString(a | sign));
            }
        }
    }

    @ParameterizedTest(name = "{0}: random floats round to the nearest representable value")
    @EnumSource(DType.class)
    void randomFloatsRoundToNearest(DType dt) {
        SplittableRandom rng = new SplittableRandom();
        for (int i = 0; i < 200_000; i++) {
            float f = Float.intBitsToFloat(rng.nextInt());
            if (Float.isNaN(f)) {
                assertTrue(Float.isNaN(dt.toFloat(dt.fromFloat(f))));
                continue;
            }
            float r = dt.toFloat(dt.fromFloat(f));
            short bits = dt.fromFloat(f);
            // No representable value lies strictly closer: check both neighbours of the result.
            for (int delta : new int[] {-1, 1}) {
                int nb = (bits & 0xFFFF) + delta;
                if (nb < 0 || nb > 0xFFFF || isNaN(dt, nb) || ((nb ^ bits) & 0x8000) != 0) {
                    continue;
                }
                float n = dt.toFloat((short) nb);
                if (Float.isInfinite(r)) {
                    continue; // overflow: checked exactly by the midpoint test
                }
                assertTrue(Math.abs((double) n - f) >= Math.abs((double) r - f),
                        "0x" + Integer.toHexString(Float.floatToRawIntBits(f)) + " rounded to " + r + " but " + n
                                + " is closer");
            }
        }
    }

    private static float towardZero(float m) {
        return m == 0 ? 0 : Math.nextAfter(m, 0.0);
    }

    private static float awayFromZero(float m) {
        return Math.nextAfter(m, m >= 0 && !isNegative(m) ? Double.POSITIVE_INFINITY : Double.NEGATIVE_INFINITY);
    }

    private static boolean isNegative(float m) {
        return (Float.floatToRawIntBits(m) >>> 31) == 1;
    }
}
