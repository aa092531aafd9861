package org.moba.kernels.bench;

import java.util.Arrays;

/** Percentiles of timing samples, interpolated linearly between the two nearest ranks (the median of an even count
 * is the mean of the middle two). */
public final class Percentiles {
    private Percentiles() {
    }

    /** The {@code q}-quantile ({@code 0 <= q <= 1}) of {@code values}, which are left unchanged. */
    public static double of(double[] values, double q) {
        double[] sorted = values.clone();
        Arrays.sort(sorted);
        double pos = q * (sorted.length - 1);
        int lo = (int) Math.floor(pos);
        int hi = Math.min(sorted.length - 1, lo + 1);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
    }
}
