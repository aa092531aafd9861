package org.moba.kernels.cpu;

import java.util.Arrays;

/**
 * Attention of one row block (docs/semantics.md "Attention"): each row attends the keys of its selected chunks and the
 * causal prefix of its own chunk, as one online softmax in fp32 (scores in base 2, with {@code scale * log2(e)}
 * folded into q). Work is ordered chunk by chunk: the rows that attend a chunk are processed back to back, two at a
 * time, so its key and value tiles stay in cache and each pass over a tile serves two rows ({@link RowBlockPass}).
 * One instance per worker thread (it holds scratch).
 */
final class BlockAttention extends RowBlockPass {
    private final float[] out;
    private final float[] lse;

    private final float[] rowMax;
    private final float[] rowSum;

    BlockAttention(ForwardPlan plan, float scale, int[] selected, float[] out, float[] lse) {
        super(plan, scale * VectorMath.LOG2E, selected);
        this.out = out;
        this.lse = lse;
        int rows = plan.blocks().maxRows();
        this.rowMax = new float[rows];
        this.rowSum = new float[rows];
    }

    @Override
    void startRow(int r, int token, int h, int off) {
        rowMax[r] = Float.NEGATIVE_INFINITY;
        rowSum[r] = 0f;
    }

    @Override
    void pairChunk(int ra, int rb, int g, int globalChunk, int keysA, int keysB) {
        int d = plan.headDim();
        for (int s = x.segmentBase[globalChunk], start = 0; s < x.segmentBase[globalChunk + 1];
             s++, start += VectorMath.SEGMENT) {
            int nb = Math.min(x.valueRows[g][s].length, Math.max(0, keysB - start));
            int na = Math.min(nb, Math.max(0, keysA - start));
            if (nb == 0) {
                return; // keysA <= keysB: neither row reaches this segment or any later one
            }
            VectorMath.pairTimesTile(scaledQ[ra], scaledQ[rb], x.keyTiles[g][s], nb, pairScores);
            float correctionA = softmaxStep(ra, 0, na, nb);
            float correctionB = ra == rb ? 0f : softmaxStep(rb, SECOND, nb, nb);
            if (ra == rb) {
                Arrays.fill(pairScores, SECOND, SECOND + nb, 0f);
            }
            Arrays.fill(pairValues, 0f);
            VectorMath.pairAccumulateWeightedRows(pairScores, x.valueRows[g][s], nb, d, pairValues);
            merge(acc[ra], correctionA, 0);
            if (ra != rb) {
                merge(acc[rb], correctionB, VectorMath.ACC_STRIDE);
            }
        }
    }

    /**
     * Turns the scores {@code pairScores[off, off + keys)} of row {@code r} into weights relative to the row's new
     * running max (zero up to {@code off + width}) and updates its max and sum; returns the factor that rescales
     * the row's accumulator to the new max.
     */
    private float softmaxStep(int r, int off, int keys, int width) {
        Arrays.fill(pairScores, off + keys, off + width, 0f);
        if (keys == 0) {
            return 1f;
        }
        float previous = rowMax[r];
        float max = Math.max(previous, VectorMath.max(pairScores, off, off + keys));
        float sum = VectorMath.exp2InPlace(pairScores, off, off + keys, max);
        float correction;
        if (previous == Float.NEGATIVE_INFINITY) {
            correction = 0f; // nothing accumulated yet
            rowSum[r] = sum;
        } else if (max > previous) {
            correction = VectorMath.exp2(previous - max);
            rowSum[r] = rowSum[r] * correction + sum;
        } else {
            correction = 1f;
            rowSum[r] += sum;
        }
        rowMax[r] = max;
        return correction;
    }

    private void merge(float[] rowAcc, float correction, int off) {
        for (int i = 0; i < rowAcc.length; i++) {
            rowAcc[i] = rowAcc[i] * correction + pairValues[off + i];
        }
    }

    @Override
    void finishRow(int r, int token, int h, int off) {
        float inverse = 1f / rowSum[r];
        float[] a = acc[r];
        for (int i = 0; i < a.length; i++) {
            out[off + i] = a[i] * inverse;
        }
        lse[token * plan.heads() + h] = (float) (rowMax[r] * VectorMath.LN2 + Math.log(rowSum[r]));
    }
}
