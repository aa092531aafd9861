package org.moba.kernels.cpu;

import java.util.Arrays;

/**
 * {@code dq} of one row block (docs/semantics.md "Backward"), query-block-stationary like {@link BlockAttention} (the
 * shared walk is {@link RowBlockPass}): for every attended key, {@code p = 2^(s - lse2)}, {@code dS = p (dout . v -
 * delta)}, {@code dq += dS k}, then {@code dq *= scale}. Rows are grouped by the chunk they attend and processed two at
 * a time per pass over a tile, as in the forward. Each row's sum runs over its chunks in ascending order, then its own
 * chunk's causal prefix, so the result does not depend on threads. One instance per worker thread (it holds scratch).
 */
final class BlockGradQ extends RowBlockPass {
    private final BackwardPlan bp;
    private final float[] dq;

    private final float[][] doutRows;
    private final float[] rowLse2;
    private final float[] rowDelta;
    /** {@code dout . v} of a row pair, laid out as {@link #pairScores} (which holds the scores, then dS). */
    private final float[] pairDp = new float[2 * VectorMath.SEGMENT];

    BlockGradQ(BackwardPlan bp, int[] selected, float[] dq) {
        super(bp.fwd, bp.qFactor, selected);
        this.bp = bp;
        this.dq = dq;
        int rows = plan.blocks().maxRows();
        this.doutRows = new float[rows][plan.headDim()];
        this.rowLse2 = new float[rows];
        this.rowDelta = new float[rows];
    }

    @Override
    void startRow(int r, int token, int h, int off) {
        float[] dr = doutRows[r];
        for (int i = 0; i < dr.length; i++) {
            dr[i] = bp.dout[off + i];
        }
        int row = token * plan.heads() + h;
        rowLse2[r] = bp.lse2[row];
        rowDelta[r] = bp.delta[row];
    }

    /** Adds the first {@code keysA} (row ra) and {@code keysB} (row rb) keys' share of dq; ra == rb is one row. */
    @Override
    void pairChunk(int ra, int rb, int g, int globalChunk, int keysA, int keysB) {
        int d = plan.headDim();
        for (int s = x.segmentBase[globalChunk], start = 0; s < x.segmentBase[globalChunk + 1];
             s++, start += VectorMath.SEGMENT) {
            int nb = Math.min(x.valueRows[g][s].length, Math.max(0, keysB - start));
            int na = Math.min(nb, Math.max(0, keysA - start));
            if (nb == 0) {
                return;
            }
            VectorMath.pairTimesTile(scaledQ[ra], scaledQ[rb], x.keyTiles[g][s], nb, pairScores);
            VectorMath.pairTimesTile(doutRows[ra], doutRows[rb], bp.valueTiles[g][s], nb, pairDp);
            VectorMath.softmaxGrad(pairScores, pairDp, 0, na, nb, rowLse2[ra], rowDelta[ra], null);
            VectorMath.softmaxGrad(pairScores, pairDp, SECOND, ra == rb ? 0 : nb, nb, rowLse2[rb], rowDelta[rb],
                    null);
            Arrays.fill(pairValues, 0f);
            VectorMath.pairAccumulateWeightedRows(pairScores, bp.keyRows[g][s], nb, d, pairValues);
            float[] a = acc[ra];
            for (int i = 0; i < d; i++) {
                a[i] += pairValues[i];
            }
            if (ra != rb) {
                float[] bAcc = acc[rb];
                for (int i = 0; i < d; i++) {
                    bAcc[i] += pairValues[VectorMath.ACC_STRIDE + i];
                }
            }
        }
    }

    @Override
    void finishRow(int r, int token, int h, int off) {
        float[] a = acc[r];
        for (int i = 0; i < a.length; i++) {
            dq[off + i] = a[i] * bp.scale;
        }
    }
}
