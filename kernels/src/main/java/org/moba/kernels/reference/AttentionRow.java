package org.moba.kernels.reference;

/**
 * Softmax attention of one query row over an explicit key list, forward and backward (docs/semantics.md "Attention",
 * "Backward"), in float64. Rows are addressed by global token and query head; kv head {@code h / groupSize}.
 */
final class AttentionRow {
    private AttentionRow() {
    }

    /**
     * Writes {@code o[token, h] = softmax(scale * q k^T) v} over {@code keys} into {@code out} at {@code outOffset}
     * and returns the natural log of the softmax denominator of the scaled scores.
     */
    static double forward(VarlenDoubles x, int token, int h, int[] keys, double scale, double[] out, int outOffset) {
        int d = x.headDim();
        int kvHead = x.kvHeadOf(h);
        double[] scores = new double[keys.length];
        double max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < keys.length; i++) {
            scores[i] = scale * dot(x.q(), (token * x.heads() + h) * d, x.k(), (keys[i] * x.kvHeads() + kvHead) * d, d);
            max = Math.max(max, scores[i]);
        }
        double denominator = 0;
        double[] weighted = new double[d];
        for (int i = 0; i < keys.length; i++) {
            double weight = Math.exp(scores[i] - max);
            denominator += weight;
            int vOffset = (keys[i] * x.kvHeads() + kvHead) * d;
            for (int j = 0; j < d; j++) {
                weighted[j] += weight * x.v()[vOffset + j];
            }
        }
        for (int j = 0; j < d; j++) {
            out[outOffset + j] = weighted[j] / denominator;
        }
        return max + Math.log(denominator);
    }

    /**
     * Backward of one row given its forward output {@code o} and {@code lse}: sets {@code dq[token, h]} and adds this
     * row's share to every attended key's rows of {@code dk} and {@code dv}, which are laid out
     * {@code [T, gradHeads, D]} and written at head {@code gradHead} (the caller keeps those additions race-free).
     */
    static void backward(VarlenDoubles x, int token, int h, int[] keys, double scale, double[] o, double lse,
                         double[] dout, double[] dq, double[] dk, double[] dv, int gradHeads, int gradHead) {
        int d = x.headDim();
        int kvHead = x.kvHeadOf(h);
        int qOffset = (token * x.heads() + h) * d;
        double delta = dot(dout, qOffset, o, qOffset, d);
        double[] dqRow = new double[d];
        for (int key : keys) {
            int kvOffset = (key * x.kvHeads() + kvHead) * d;
            int gradOffset = (key * gradHeads + gradHead) * d;
            double p = Math.exp(scale * dot(x.q(), qOffset, x.k(), kvOffset, d) - lse);
            double dScore = p * (dot(dout, qOffset, x.v(), kvOffset, d) - delta);
            for (int j = 0; j < d; j++) {
                dqRow[j] += scale * dScore * x.k()[kvOffset + j];
                dk[gradOffset + j] += scale * dScore * x.q()[qOffset + j];
                dv[gradOffset + j] += p * dout[qOffset + j];
            }
        }
        System.arraycopy(dqRow, 0, dq, qOffset, d);
    }

    private static double dot(double[] a, int aOffset, double[] b, int bOffset, int length) {
        double sum = 0;
        for (int i = 0; i < length; i++) {
            sum += a[aOffset + i] * b[bOffset + i];
        }
        return sum;
    }
}
