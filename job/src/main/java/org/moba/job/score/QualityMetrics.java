package org.moba.job.score;

import org.moba.kernels.DType;

/**
 * Per-head quality of MoBA against dense causal attention for one sequence: recall
 * ({@code mean exp(lse_moba - lse_dense)}, the share of the full softmax mass MoBA kept), cosine similarity and
 * relative L2 error of the outputs.
 */
record QualityMetrics(double[] recall, double[] cosine, double[] relError) {

    static QualityMetrics of(DType dtype, int length, int heads, int headDim, short[] mobaOut, float[] mobaLse,
                             short[] denseOut, float[] denseLse) {
        double[] recall = new double[heads];
        double[] cosine = new double[heads];
        double[] relError = new double[heads];
        for (int h = 0; h < heads; h++) {
            double kept = 0;
            double dot = 0;
            double mm = 0;
            double dd = 0;
            double diff = 0;
            for (int t = 0; t < length; t++) {
                kept += Math.exp((double) mobaLse[t * heads + h] - denseLse[t * heads + h]);
                int base = (t * heads + h) * headDim;
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
                dot += rowDot;
                mm += rowMm;
                dd += rowDd;
                diff += rowDiff;
            }
            recall[h] = length == 0 ? 1 : kept / length;
            cosine[h] = mm == 0 || dd == 0 ? (mm == dd ? 1 : 0) : dot / Math.sqrt(mm * dd);
            relError[h] = dd == 0 ? Math.sqrt(diff) : Math.sqrt(diff / dd);
        }
        return new QualityMetrics(recall, cosine, relError);
    }
}
