package org.moba.kernels;

import java.util.ArrayList;
import java.util.List;

/**
 * Per-head quality of MoBA against dense causal attention for one sequence: recall
 * ({@code mean exp(lse_moba - lse_dense)}, the share of the full softmax mass MoBA kept), cosine similarity and
 * relative L2 error of the outputs.
 *
 * <p>The one host implementation of this math. It runs in two steps so that a device can do the first:
 * {@link #sums} reduces each (sequence, head) to {@value #SUMS} sums, {@link #fromSums} turns them into the metrics.
 * Reduction order (the CUDA kernel {@code moba_score_*}, kernels/src/main/cuda/ABI.md, keeps it): per row, the
 * {@code D} products are summed in fp32 in dimension order without fused multiply-adds; rows are summed in double.
 * Only the order in which rows are added may differ on a device, which moves the sums by a few double ulps.
 */
public record QualityMetrics(double[] recall, double[] cosine, double[] relError) {
    /** Sums per (sequence, head), in this order: kept, dot, mm, dd, diff (see {@link #sums}). */
    public static final int SUMS = 5;

    /**
     * Metrics of every sequence of {@code batch}, in batch order, from a MoBA and a dense forward of it.
     */
    public static List<QualityMetrics> of(PackedBatch batch, short[] mobaOut, float[] mobaLse, short[] denseOut,
                                          float[] denseLse) {
        return fromSums(batch, sums(batch, mobaOut, mobaLse, denseOut, denseLse));
    }

    /**
     * The reduction step: {@code [B, H, SUMS]} sums, for sequence b and head h over its rows t
     * (with {@code m}, {@code d} the MoBA and dense output rows widened to fp32):
     * {@code kept = sum_t exp(lse_m - lse_d)} (in double), {@code dot = sum_t fp32(sum_i m_i d_i)},
     * {@code mm = sum_t fp32(sum_i m_i^2)}, {@code dd = sum_t fp32(sum_i d_i^2)},
     * {@code diff = sum_t fp32(sum_i (m_i - d_i)^2)}.
     */
    public static double[] sums(PackedBatch batch, short[] mobaOut, float[] mobaLse, short[] denseOut,
                                float[] denseLse) {
        int heads = batch.heads();
        double[] sums = new double[batch.numSequences() * heads * SUMS];
        for (int b = 0; b < batch.numSequences(); b++) {
            sequenceSums(batch.dtype(), batch.seqStart(b), batch.seqLength(b), heads, batch.headDim(), mobaOut,
                    mobaLse, denseOut, denseLse, sums, b * heads * SUMS);
        }
        return sums;
    }

    /** The metrics of every sequence from {@link #sums}' {@code [B, H, SUMS]} array. */
    public static List<QualityMetrics> fromSums(PackedBatch batch, double[] sums) {
        List<QualityMetrics> out = new ArrayList<>(batch.numSequences());
        for (int b = 0; b < batch.numSequences(); b++) {
            out.add(fromSums(batch.seqLength(b), batch.heads(), sums, b * batch.heads() * SUMS));
        }
        return out;
    }

    /** The metrics of one sequence of {@code length} tokens from its {@code [H, SUMS]} sums at {@code offset}. */
    public static QualityMetrics fromSums(int length, int heads, double[] sums, int offset) {
        double[] recall = new double[heads];
        double[] cosine = new double[heads];
        double[] relError = new double[heads];
        for (int h = 0; h < heads; h++) {
            int at = offset + h * SUMS;
            double kept = sums[at];
            double dot = sums[at + 1];
            double mm = sums[at + 2];
            double dd = sums[at + 3];
            double diff = sums[at + 4];
            recall[h] = length == 0 ? 1 : kept / length;
            cosine[h] = mm == 0 || dd == 0 ? (mm == dd ? 1 : 0) : dot / Math.sqrt(mm * dd);
            relError[h] = dd == 0 ? Math.sqrt(diff) : Math.sqrt(diff / dd);
        }
        return new QualityMetrics(recall, cosine, relError);
    }

    /**
     * One sequence's {@code [H, SUMS]} sums into {@code sums} at {@code offset}; its rows start at token
     * {@code start} of the packed {@code [T, H, D]} outputs and {@code [T, H]} lse.
     */
    static void sequenceSums(DType dtype, int start, int length, int heads, int headDim, short[] mobaOut,
                             float[] mobaLse, short[] denseOut, float[] denseLse, double[] sums, int offset) {
        // Token-major (the arrays' order), with one set of accumulators per head: each head's rows are still
        // added in token order.
        for (int t = start; t < start + length; t++) {
            for (int h = 0; h < heads; h++) {
                int row = t * heads + h;
                int at = offset + h * SUMS;
                sums[at] += Math.exp((double) mobaLse[row] - denseLse[row]);
                int base = row * headDim;
                // One row in float (D terms of similar size), accumulated across rows in double.
                float rowDot = 0;
                float rowMm = 0;
                float rowDd = 0;
                float rowDiff = 0;
                for (int i = 0; i < headDim; i++) {
                    float m = dtype.toFloat(mobaOut[base + i]);
                    float d = dtype.toFloat(denseOut[base + i]);
                    rowDot += m * d;
                    rowMm += m * m;
                    rowDd += d * d;
                    rowDiff += (m - d) * (m - d);
                }
                sums[at + 1] += rowDot;
                sums[at + 2] += rowMm;
                sums[at + 3] += rowDd;
                sums[at + 4] += rowDiff;
            }
        }
    }
}
