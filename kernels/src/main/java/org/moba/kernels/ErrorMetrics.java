package org.moba.kernels;

/** Error measures of a backend's result against the float64 oracle, and the widening they need. */
public final class ErrorMetrics {
    private ErrorMetrics() {
    }

    /**
     * {@code ||actual - reference|| / ||reference||} (L2 norms). A non-finite element on either side gives
     * {@code +Inf}, so a NaN can never pass a tolerance. An all-zero reference gives 0 when {@code actual} is also
     * all zero and {@code +Inf} otherwise (no finite relative size exists).
     */
    public static double relativeL2(double[] reference, double[] actual) {
        checkSameLength(reference, actual);
        // Both norms are taken of values divided by the largest magnitude involved, so that neither tiny differences
        // underflow to zero nor huge ones overflow when squared.
        double scale = 0;
        for (int i = 0; i < reference.length; i++) {
            if (!Double.isFinite(reference[i]) || !Double.isFinite(actual[i])) {
                return Double.POSITIVE_INFINITY;
            }
            scale = Math.max(scale, Math.max(Math.abs(reference[i]), Math.abs(actual[i] - reference[i])));
        }
        if (scale == 0) {
            return 0;
        }
        double diffSquares = 0;
        double referenceSquares = 0;
        for (int i = 0; i < reference.length; i++) {
            double diff = (actual[i] - reference[i]) / scale;
            double ref = reference[i] / scale;
            diffSquares += diff * diff;
            referenceSquares += ref * ref;
        }
        if (diffSquares == 0) {
            return 0;
        }
        return referenceSquares == 0 ? Double.POSITIVE_INFINITY : Math.sqrt(diffSquares / referenceSquares);
    }

    /**
     * {@link #relativeL2}, except where the reference is exactly zero everywhere (a gradient that cancels, e.g. dq and
     * dk of a batch of length-1 sequences, whose one key gets all the weight): there the RMS of {@code actual}, a
     * relative size for inputs of unit scale. An empty reference gives 0.
     */
    public static double relativeL2OrRms(double[] reference, double[] actual) {
        boolean zero = true;
        for (double r : reference) {
            zero &= r == 0;
        }
        if (!zero) {
            return relativeL2(reference, actual);
        }
        double squares = 0;
        for (double a : actual) {
            squares += a * a;
        }
        return reference.length == 0 ? 0 : Math.sqrt(squares / reference.length);
    }

    /** {@code max |actual - reference|}; a non-finite element on either side gives {@code +Inf}. */
    public static double maxAbs(double[] reference, double[] actual) {
        checkSameLength(reference, actual);
        double max = 0;
        for (int i = 0; i < reference.length; i++) {
            if (!Double.isFinite(reference[i]) || !Double.isFinite(actual[i])) {
                return Double.POSITIVE_INFINITY;
            }
            max = Math.max(max, Math.abs(actual[i] - reference[i]));
        }
        return max;
    }

    /** Raw fp16/bf16 bits widened exactly to double. */
    public static double[] toDouble(short[] bits, DType dtype) {
        double[] out = new double[bits.length];
        for (int i = 0; i < bits.length; i++) {
            out[i] = dtype.toFloat(bits[i]);
        }
        return out;
    }

    public static double[] toDouble(float[] values) {
        double[] out = new double[values.length];
        for (int i = 0; i < values.length; i++) {
            out[i] = values[i];
        }
        return out;
    }

    private static void checkSameLength(double[] reference, double[] actual) {
        if (reference.length != actual.length) {
            throw new IllegalArgumentException("reference has " + reference.length + " elements, actual has "
                    + actual.length);
        }
    }
}
