package org.moba.kernels.cpu;

import java.util.Arrays;
import org.moba.kernels.PackedBatch;

/**
 * The inner loops of the CPU backend, written so that HotSpot's C2 compiler turns them into SIMD code.
 *
 * <p>C2 (as of Java 17) only vectorizes a loop when every array in it is indexed by the loop variable with the same
 * offset, so every hot loop here walks whole rows ({@code float[]} of their own, offset 0) and takes its scalar
 * operands from arrays with arbitrary offsets only outside the inner loop. Dot products are therefore computed in
 * "axpy" form against transposed tiles: float reductions are not vectorized by C2.
 *
 * <p>Two query rows are processed per pass over a key or value tile, halving the tile traffic from L2 (the limit of
 * these loops): C2 vectorizes two outputs in one loop only when they lie in one array at a distance it knows at
 * compile time, hence the constant strides {@link #SEGMENT} and {@link #ACC_STRIDE}. Measured on the bench machine
 * (hot L2, 512 keys, D = 128): Q.K 38 -> 50 GF/s, P.V 25 -> 34 GF/s per core.
 */
final class VectorMath {
    static final double LN2 = Math.log(2.0);
    static final float LOG2E = 1.4426950408889634f;
    /** Below this base-2 exponent the result is subnormal: 2^-126 is treated as the floor (never reached in use). */
    private static final float MIN_EXP2 = -126f;
    /** 1.5 * 2^23: adding it rounds a float of magnitude < 2^22 to an integer held in the low mantissa bits. */
    private static final float ROUND_MAGIC = 12582912f;

    /** Keys per tile segment, and the distance between the two rows of a pair's scores. */
    static final int SEGMENT = 512;
    /** Distance between the two rows of a pair's accumulators: the largest head dim a batch may have. */
    static final int ACC_STRIDE = Arrays.stream(PackedBatch.SUPPORTED_HEAD_DIMS).max().orElseThrow();

    private VectorMath() {
    }

    /**
     * {@code out[k] = sum_i x[xOff + i] * tile[i][k]} for {@code k < n}: one row times a {@code [rows, >= n]} tile
     * stored as one array per row. {@code tile.length} must be a multiple of 4 (true of every head dim
     * {@link PackedBatch} accepts).
     */
    static void rowTimesTile(float[] x, int xOff, float[][] tile, int n, float[] out) {
        for (int k = 0; k < n; k++) {
            out[k] = 0f;
        }
        for (int i = 0; i < tile.length; i += 4) {
            float a0 = x[xOff + i];
            float a1 = x[xOff + i + 1];
            float a2 = x[xOff + i + 2];
            float a3 = x[xOff + i + 3];
            float[] t0 = tile[i];
            float[] t1 = tile[i + 1];
            float[] t2 = tile[i + 2];
            float[] t3 = tile[i + 3];
            for (int k = 0; k < n; k++) {
                out[k] += a0 * t0[k] + a1 * t1[k] + a2 * t2[k] + a3 * t3[k];
            }
        }
    }

    /**
     * Scores of two rows against one tile: {@code out[k] = xa . tile[.][k]} and {@code out[SEGMENT + k] = xb .
     * tile[.][k]} for {@code k < n <= SEGMENT}; {@code tile.length} must be a multiple of 4.
     */
    static void pairTimesTile(float[] xa, float[] xb, float[][] tile, int n, float[] out) {
        for (int k = 0; k < n; k++) {
            out[k] = 0f;
            out[k + SEGMENT] = 0f;
        }
        for (int i = 0; i < tile.length; i += 4) {
            float a0 = xa[i];
            float a1 = xa[i + 1];
            float a2 = xa[i + 2];
            float a3 = xa[i + 3];
            float b0 = xb[i];
            float b1 = xb[i + 1];
            float b2 = xb[i + 2];
            float b3 = xb[i + 3];
            float[] t0 = tile[i];
            float[] t1 = tile[i + 1];
            float[] t2 = tile[i + 2];
            float[] t3 = tile[i + 3];
            for (int k = 0; k < n; k++) {
                float u0 = t0[k];
                float u1 = t1[k];
                float u2 = t2[k];
                float u3 = t3[k];
                out[k] += a0 * u0 + a1 * u1 + a2 * u2 + a3 * u3;
                out[k + SEGMENT] += b0 * u0 + b1 * u1 + b2 * u2 + b3 * u3;
            }
        }
    }

    /**
     * Weighted sums of value rows for two query rows: {@code acc[i] += sum_k w[k] rows[k][i]} and
     * {@code acc[ACC_STRIDE + i] += sum_k w[SEGMENT + k] rows[k][i]} for {@code k < n}, {@code i < d}.
     */
    static void pairAccumulateWeightedRows(float[] w, float[][] rows, int n, int d, float[] acc) {
        int k = 0;
        for (; k + 4 <= n; k += 4) {
            float a0 = w[k];
            float a1 = w[k + 1];
            float a2 = w[k + 2];
            float a3 = w[k + 3];
            float b0 = w[SEGMENT + k];
            float b1 = w[SEGMENT + k + 1];
            float b2 = w[SEGMENT + k + 2];
            float b3 = w[SEGMENT + k + 3];
            float[] r0 = rows[k];
            float[] r1 = rows[k + 1];
            float[] r2 = rows[k + 2];
            float[] r3 = rows[k + 3];
            for (int i = 0; i < d; i++) {
                float v0 = r0[i];
                float v1 = r1[i];
                float v2 = r2[i];
                float v3 = r3[i];
                acc[i] += a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3;
                acc[i + ACC_STRIDE] += b0 * v0 + b1 * v1 + b2 * v2 + b3 * v3;
            }
        }
        for (; k < n; k++) {
            float a0 = w[k];
            float b0 = w[SEGMENT + k];
            float[] r0 = rows[k];
            for (int i = 0; i < d; i++) {
                acc[i] += a0 * r0[i];
                acc[i + ACC_STRIDE] += b0 * r0[i];
            }
        }
    }

    /**
     * The softmax backward of one row's scores {@code x[off, off + keys)} (base-2 scaled): with
     * {@code p = 2^(x - lse2)}, writes {@code p} into {@code probs} (when not null) and {@code dS = p (dp - delta)}
     * into {@code x}; positions {@code [keys, width)} (masked keys) get zero in both.
     */
    static void softmaxGrad(float[] x, float[] dp, int off, int keys, int width, float lse2, float delta,
                            float[] probs) {
        for (int k = off, end = off + keys; k < end; k++) {
            float p = exp2(x[k] - lse2);
            if (probs != null) {
                probs[k] = p;
            }
            x[k] = p * (dp[k] - delta);
        }
        Arrays.fill(x, off + keys, off + width, 0f);
        if (probs != null) {
            Arrays.fill(probs, off + keys, off + width, 0f);
        }
    }

    /**
     * Rank-4 update of a {@code [n][d]} accumulator: {@code acc[k][i] += w01[k] x0[i] + w01[SEGMENT + k] x1[i]
     * + w23[k] x2[i] + w23[SEGMENT + k] x3[i]} for {@code k < n}, {@code i < d}. Keys whose four weights are all
     * zero (masked for every row) are skipped. Four rows per pass over the accumulator: one row at a time would
     * load and store the accumulator once per multiply-add.
     */
    static void quadAddOuter(float[] w01, float[] w23, float[] x0, float[] x1, float[] x2, float[] x3,
                             float[][] acc, int n, int d) {
        for (int k = 0; k < n; k++) {
            float a0 = w01[k];
            float a1 = w01[SEGMENT + k];
            float a2 = w23[k];
            float a3 = w23[SEGMENT + k];
            if (a0 == 0f && a1 == 0f && a2 == 0f && a3 == 0f) {
                continue;
            }
            float[] row = acc[k];
            for (int i = 0; i < d; i++) {
                row[i] += a0 * x0[i] + a1 * x1[i] + a2 * x2[i] + a3 * x3[i];
            }
        }
    }

    /** Largest of {@code x[from, to)}; -Inf when empty. */
    static float max(float[] x, int from, int to) {
        float m = Float.NEGATIVE_INFINITY;
        for (int k = from; k < to; k++) {
            m = Math.max(m, x[k]);
        }
        return m;
    }

    /** Replaces {@code x[k]} by {@code 2^(x[k] - shift)} for {@code k} in {@code [from, to)}; returns their sum. */
    static float exp2InPlace(float[] x, int from, int to, float shift) {
        float sum = 0f;
        for (int k = from; k < to; k++) {
            float e = exp2(x[k] - shift);
            x[k] = e;
            sum += e;
        }
        return sum;
    }

    /**
     * {@code 2^y} for {@code y <= 0} to about 1e-7 relative error (faster than {@link Math#exp}, which matters:
     * there is one per attended key): split {@code y = n + f} with {@code |f| <= 1/2}, a degree-7 polynomial for
     * {@code 2^f}, and {@code 2^n} built in the exponent bits.
     */
    static float exp2(float y) {
        float c = Math.max(y, MIN_EXP2);
        float shifted = c + ROUND_MAGIC;
        int n = Float.floatToRawIntBits(shifted) - Float.floatToRawIntBits(ROUND_MAGIC);
        float f = c - (shifted - ROUND_MAGIC);
        // Taylor coefficients of 2^f = exp(f ln 2) (|f| <= 1/2: the truncation error is below float rounding).
        float p = 1.5252734e-5f;
        p = p * f + 1.5403530e-4f;
        p = p * f + 1.3333558e-3f;
        p = p * f + 9.6181291e-3f;
        p = p * f + 5.5504109e-2f;
        p = p * f + 2.4022651e-1f;
        p = p * f + 6.9314718e-1f;
        p = p * f + 1.0f;
        return p * Float.intBitsToFloat((n + 127) << 23);
    }
}
