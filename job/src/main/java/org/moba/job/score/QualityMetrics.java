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
                for (int i = 0; i < headDim; i++) {
                    double m = dtype.toFloat(mobaOut[base + i]);
                    double d = dtype.toFloat(denseOut[base + i]);
                    dot += m * d;
                    mm += m * m;
                    dd += d * d;
                    diff += (m - d) * (m - d);
                }
            }
            recall[h] = length == 0 ? 1 : kept / length;
            cosine[h] = mm == 0 || dd == 0 ? (mm == dd ? 1 : 0) : dot / Math.sqrt(mm * dd);
            relError[h] = dd == 0 ? Math.sqrt(diff) : Math.sqrt(diff / dd);
        }
        return new QualityMetrics(recall, cosine, relError);
    }
}
