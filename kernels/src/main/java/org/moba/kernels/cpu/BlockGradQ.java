package org.moba.kernels.cpu;

import java.util.Arrays;
import java.util.function.IntConsumer;

/**
 * {@code dq} of one row block (MOBA.md "Backward"), query-block-stationary like {@link BlockAttention}: for every
 * attended key, {@code p = 2^(s - lse2)}, {@code dS = p (dout . v - delta)}, {@code dq += dS k}, then
 * {@code dq *= scale}. Rows are grouped by the chunk they attend and processed two at a time per pass over a tile,
 * as in the forward. Each row's sum runs over its chunks in ascending order, then its own chunk's causal prefix, so
 * the result does not depend on threads. One instance per worker thread (it holds scratch).
 */
final class BlockGradQ implements IntConsumer {
    private static final int SECOND = VectorMath.SEGMENT;

    private final BackwardPlan bp;
    private final ForwardPlan plan;
    private final FloatTensors x;
    private final int[] selected;
    private final float[] dq;

    private final float[][] scaledQ;
    private final float[][] doutRows;
    private final float[][] acc;
    private final float[] rowLse2;
    private final float[] rowDelta;
    /** Scores, then dS, of a row pair: first row at 0, second at {@link VectorMath#SEGMENT}. */
    private final float[] pairScores = new float[2 * VectorMath.SEGMENT];
    /** {@code dout . v} of a row pair, same layout. */
    private final float[] pairDp = new float[2 * VectorMath.SEGMENT];
    private final float[] pairValues = new float[2 * VectorMath.ACC_STRIDE];
    private final int[] rowsOfChunkStart;
    private final int[] rowsOfChunk;

    BlockGradQ(BackwardPlan bp, int[] selected, float[] dq) {
        this.bp = bp;
        this.plan = bp.fwd;
        this.x = plan.x();
        this.selected = selected;
        this.dq = dq;
        int rows = plan.blocks().maxRows();
        int d = plan.headDim();
        this.scaledQ = new float[rows][d];
        this.doutRows = new float[rows][d];
        this.acc = new float[rows][d];
        this.rowLse2 = new float[rows];
        this.rowDelta = new float[rows];
        this.rowsOfChunkStart = new int[plan.maxChunks() + 1];
        int perRow = selected == null ? plan.maxCandidates() : Math.min(plan.width(), plan.maxCandidates());
        this.rowsOfChunk = new int[rows * perRow];
    }

    @Override
    public void accept(int task) {
        RowBlocks blocks = plan.blocks();
        int chunkSize = plan.chunkSize();
        int b = blocks.sequence(task);
        int h = blocks.head(task);
        int g = h / plan.groupSize();
        int first = blocks.firstRow(task);
        int rows = blocks.rowCount(task);
        int ownChunk = first / chunkSize;
        int chunkBase = x.chunkBase[b];
        int tokenBase = plan.cuSeqlens()[b] + first;
        int d = plan.headDim();
        for (int r = 0; r < rows; r++) {
            int off = plan.rowOffset(tokenBase + r, h);
            float[] qr = scaledQ[r];
            float[] dr = doutRows[r];
            for (int i = 0; i < d; i++) {
                qr[i] = x.q[off + i] * bp.qFactor;
                dr[i] = bp.dout[off + i];
            }
            int row = (tokenBase + r) * plan.heads() + h;
            rowLse2[r] = bp.lse2[row];
            rowDelta[r] = bp.delta[row];
            Arrays.fill(acc[r], 0f);
        }
        groupRowsByChunk(tokenBase, h, rows, ownChunk);
        for (int j = 0; j < ownChunk; j++) {
            int from = rowsOfChunkStart[j];
            int to = rowsOfChunkStart[j + 1];
            for (int i = from; i < to; i += 2) {
                int ra = rowsOfChunk[i];
                int rb = i + 1 < to ? rowsOfChunk[i + 1] : ra;
                gradChunk(ra, rb, g, chunkBase + j, Integer.MAX_VALUE, Integer.MAX_VALUE);
            }
        }
        int rowInChunk = first - ownChunk * chunkSize;
        for (int r = 0; r < rows; r += 2) {
            int rb = Math.min(r + 1, rows - 1);
            gradChunk(r, rb, g, chunkBase + ownChunk, rowInChunk + r + 1, rowInChunk + rb + 1);
        }
        for (int r = 0; r < rows; r++) {
            int off = plan.rowOffset(tokenBase + r, h);
            float[] a = acc[r];
            for (int i = 0; i < d; i++) {
                dq[off + i] = a[i] * bp.scale;
            }
        }
    }

    /** As {@link BlockAttention}: the block's (row, attended earlier chunk) pairs sorted by chunk. */
    private void groupRowsByChunk(int tokenBase, int h, int rows, int ownChunk) {
        Arrays.fill(rowsOfChunkStart, 0, ownChunk + 1, 0);
        int width = plan.width();
        for (int r = 0; r < rows; r++) {
            int base = plan.selectionOffset(tokenBase + r, h);
            for (int i = 0; i < (selected == null ? ownChunk : width); i++) {
                int j = selected == null ? i : selected[base + i];
                if (j < 0) {
                    break;
                }
                rowsOfChunkStart[j + 1]++;
            }
        }
        for (int j = 0; j < ownChunk; j++) {
            rowsOfChunkStart[j + 1] += rowsOfChunkStart[j];
        }
        for (int r = 0; r < rows; r++) {
            int base = plan.selectionOffset(tokenBase + r, h);
            for (int i = 0; i < (selected == null ? ownChunk : width); i++) {
                int j = selected == null ? i : selected[base + i];
                if (j < 0) {
                    break;
                }
                rowsOfChunk[rowsOfChunkStart[j]++] = r;
            }
        }
        for (int j = ownChunk; j > 0; j--) {
            rowsOfChunkStart[j] = rowsOfChunkStart[j - 1];
        }
        rowsOfChunkStart[0] = 0;
    }

    /** Adds the first {@code keysA} (row ra) and {@code keysB} (row rb) keys' share of dq; ra == rb is one row. */
    private void gradChunk(int ra, int rb, int g, int globalChunk, int keysA, int keysB) {
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
}
