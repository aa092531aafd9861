package org.moba.kernels.cpu;

import java.util.Arrays;
import java.util.function.IntConsumer;

/**
 * Attention of one row block (MOBA.md "Attention"): each row attends the keys of its selected chunks and the
 * causal prefix of its own chunk, as one online softmax in fp32 (scores in base 2, with {@code scale * log2(e)}
 * folded into q). Work is ordered chunk by chunk: the rows that attend a chunk are processed back to back, two at a
 * time, so its key and value tiles stay in cache and each pass over a tile serves two rows. One instance per worker
 * thread (it holds scratch).
 */
final class BlockAttention implements IntConsumer {
    private static final int SECOND = VectorMath.SEGMENT;

    private final ForwardPlan plan;
    private final FloatTensors x;
    /** Null for dense causal attention: every earlier chunk is attended. */
    private final int[] selected;
    private final float qFactor;
    private final float[] out;
    private final float[] lse;

    private final float[][] scaledQ;
    private final float[][] acc;
    private final float[] rowMax;
    private final float[] rowSum;
    /** Scores, then weights, of a row pair: first row at 0, second at {@link VectorMath#SEGMENT}. */
    private final float[] pairScores = new float[2 * VectorMath.SEGMENT];
    /** One segment's weighted values of a row pair: first row at 0, second at {@link VectorMath#ACC_STRIDE}. */
    private final float[] pairValues = new float[2 * VectorMath.ACC_STRIDE];
    /** Block-local rows grouped by the chunk they attend: rows of chunk j at [rowsOfChunkStart[j], [j + 1]). */
    private final int[] rowsOfChunkStart;
    private final int[] rowsOfChunk;

    BlockAttention(ForwardPlan plan, float scale, int[] selected, float[] out, float[] lse) {
        this.plan = plan;
        this.x = plan.x();
        this.selected = selected;
        this.qFactor = scale * VectorMath.LOG2E;
        this.out = out;
        this.lse = lse;
        int rows = plan.blocks().maxRows();
        this.scaledQ = new float[rows][plan.headDim()];
        this.acc = new float[rows][plan.headDim()];
        this.rowMax = new float[rows];
        this.rowSum = new float[rows];
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
        for (int r = 0; r < rows; r++) {
            int qOff = plan.rowOffset(tokenBase + r, h);
            float[] qr = scaledQ[r];
            for (int i = 0; i < qr.length; i++) {
                qr[i] = x.q[qOff + i] * qFactor;
            }
            rowMax[r] = Float.NEGATIVE_INFINITY;
            rowSum[r] = 0f;
            Arrays.fill(acc[r], 0f);
        }
        groupRowsByChunk(tokenBase, h, rows, ownChunk);
        for (int j = 0; j < ownChunk; j++) {
            int from = rowsOfChunkStart[j];
            int to = rowsOfChunkStart[j + 1];
            for (int i = from; i < to; i += 2) {
                int ra = rowsOfChunk[i];
                int rb = i + 1 < to ? rowsOfChunk[i + 1] : ra;
                attendChunk(ra, rb, g, chunkBase + j, Integer.MAX_VALUE, Integer.MAX_VALUE);
            }
        }
        // Causal prefix of the own chunk: row r sees its first (rowInChunk + r + 1) keys.
        int rowInChunk = first - ownChunk * chunkSize;
        for (int r = 0; r < rows; r += 2) {
            int rb = Math.min(r + 1, rows - 1);
            attendChunk(r, rb, g, chunkBase + ownChunk, rowInChunk + r + 1, rowInChunk + rb + 1);
        }
        for (int r = 0; r < rows; r++) {
            finish(r, tokenBase + r, h);
        }
    }

    /** Counting sort of the block's (row, attended earlier chunk) pairs by chunk; dense attends all of them. */
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
        // The fill pass advanced each start to the next chunk's start: shift back.
        for (int j = ownChunk; j > 0; j--) {
            rowsOfChunkStart[j] = rowsOfChunkStart[j - 1];
        }
        rowsOfChunkStart[0] = 0;
    }

    /**
     * Folds the first {@code keysA} (row {@code ra}) and {@code keysB} (row {@code rb}) keys of a chunk into the two
     * rows' online softmax; {@code ra == rb} processes one row. Key counts beyond the chunk mean "all of it".
     */
    private void attendChunk(int ra, int rb, int g, int globalChunk, int keysA, int keysB) {
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

    private void finish(int r, int token, int h) {
        float inverse = 1f / rowSum[r];
        float[] a = acc[r];
        int o = plan.rowOffset(token, h);
        for (int i = 0; i < a.length; i++) {
            out[o + i] = a[i] * inverse;
        }
        lse[token * plan.heads() + h] = (float) (rowMax[r] * VectorMath.LN2 + Math.log(rowSum[r]));
    }
}
