package org.moba.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;

class ErrorMetricsTest {
    private static final double[] REFERENCE = {3, -4, 0, 12};

    @Test
    void identicalArraysHaveZeroError() {
        assertEquals(0.0, ErrorMetrics.relativeL2(REFERENCE, REFERENCE.clone()));
        assertEquals(0.0, ErrorMetrics.maxAbs(REFERENCE, REFERENCE.clone()));
    }

    @Test
    void relativeL2OfAScaledCopyIsTheScaleMinusOne() {
        double[] scaled = new double[REFERENCE.length];
        for (int i = 0; i < scaled.length; i++) {
            scaled[i] = 1.25 * REFERENCE[i];
        }
        // ||1.25 r - r|| / ||r|| = 0.25
        assertEquals(0.25, ErrorMetrics.relativeL2(REFERENCE, scaled), 1e-15);
        // max |0.25 r| = 0.25 * 12
        assertEquals(3.0, ErrorMetrics.maxAbs(REFERENCE, scaled), 1e-15);
    }

    @Test
    void extremeMagnitudesNeitherUnderflowNorOverflow() {
        // relative error 0.5 at magnitudes whose squares leave the double range
        assertEquals(0.5, ErrorMetrics.relativeL2(new double[] {2e-300}, new double[] {3e-300}), 1e-15);
        assertEquals(0.5, ErrorMetrics.relativeL2(new double[] {2e300}, new double[] {1e300}), 1e-15);
    }

    @ParameterizedTest(name = "a {0} in actual gives +Inf")
    @ValueSource(doubles = {Double.NaN, Double.POSITIVE_INFINITY, Double.NEGATIVE_INFINITY})
    void nonFiniteActualGivesInfinity(double bad) {
        double[] actual = REFERENCE.clone();
        actual[2] = bad;
        assertEquals(Double.POSITIVE_INFINITY, ErrorMetrics.relativeL2(REFERENCE, actual));
        assertEquals(Double.POSITIVE_INFINITY, ErrorMetrics.maxAbs(REFERENCE, actual));
    }

    @Test
    void nanInReferenceGivesInfinity() {
        double[] reference = REFERENCE.clone();
        reference[0] = Double.NaN;
        assertEquals(Double.POSITIVE_INFINITY, ErrorMetrics.relativeL2(reference, REFERENCE));
        assertEquals(Double.POSITIVE_INFINITY, ErrorMetrics.maxAbs(reference, REFERENCE));
    }

    @Test
    void zeroReferenceIsExactOnlyAgainstZero() {
        double[] zeros = new double[4];
        assertEquals(0.0, ErrorMetrics.relativeL2(zeros, new double[4]));
        assertEquals(Double.POSITIVE_INFINITY, ErrorMetrics.relativeL2(zeros, new double[] {0, 1e-300, 0, 0}));
        assertEquals(Double.POSITIVE_INFINITY, ErrorMetrics.relativeL2(zeros, new double[] {0, 1e300, 1e300, 0}));
        assertEquals(0.0, ErrorMetrics.relativeL2(new double[0], new double[0]));
    }

    @Test
    void relativeL2OrRmsFallsBackToTheRmsOnlyForAnAllZeroReference() {
        double[] scaled = {3.75, -5, 0, 15}; // 1.25 * REFERENCE
        assertEquals(0.25, ErrorMetrics.relativeL2OrRms(REFERENCE, scaled), 1e-15);
        assertEquals(2.5, ErrorMetrics.relativeL2OrRms(new double[4], new double[] {3, -4, 0, 0}), 1e-15);
        assertEquals(0.0, ErrorMetrics.relativeL2OrRms(new double[0], new double[0]));
    }

    @Test
    void lengthMismatchIsRejected() {
        assertThrows(IllegalArgumentException.class, () -> ErrorMetrics.relativeL2(REFERENCE, new double[3]));
        assertThrows(IllegalArgumentException.class, () -> ErrorMetrics.maxAbs(REFERENCE, new double[5]));
    }

    @ParameterizedTest(name = "{0} bits widen exactly")
    @EnumSource(DType.class)
    void toDoubleWidensExactly(DType dtype) {
        float[] values = {1.5f, -0.0f, 0.09375f, 0x1p-14f, -3.25f, 448f};
        short[] bits = new short[values.length];
        for (int i = 0; i < values.length; i++) {
            bits[i] = dtype.fromFloat(values[i]);
        }
        double[] widened = ErrorMetrics.toDouble(bits, dtype);
        for (int i = 0; i < values.length; i++) {
            assertEquals((double) dtype.toFloat(bits[i]), widened[i], 0.0, "element " + i);
            assertEquals(Double.doubleToRawLongBits(values[i]), Double.doubleToRawLongBits(widened[i]),
                    "element " + i + " is representable and must survive the round trip");
        }
        assertEquals(-3.25, ErrorMetrics.toDouble(new float[] {-3.25f})[0], 0.0);
    }
}
