package org.moba.kernels.cpu;

import java.util.Arrays;
import java.util.function.IntConsumer;

/**
 * Attention of one row block (MOBA.md "Attention"): each row attends the keys of its selected chunks and the
 * causal prefix of its own chunk, as one online softmax in fp32 (scores in base 2, with {@code scale * log2(e)}
 * folded into q). Work is ordered chunk by chunk: the rows that selected a chunk are processed back to back so its
 * key and value tiles stay in cache. One instance per worker thread (it holds scratch).
 */
final class BlockAttention implements IntConsumer {
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
    private final float[] scores;
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
        this.scores = new float[plan.maxTile()];
        this.rowsOfChunkStart = new int[plan.maxChunks() + 1];
        this.rowsOfChunk = new int[selected == null ? 0 : rows * Math.min(plan.width(), plan.maxCandidates())];
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
        if (selected == null) {
            for (int j = 0; j < ownChunk; j++) {
                for (int r = 0; r < rows; r++) {
                    attendChunk(r, g, chunkBase + j, chunkSize);
                }
            }
        } else {
            groupRowsByChunk(tokenBase, h, rows, ownChunk);
            for (int j = 0; j < ownChunk; j++) {
                for (int i = rowsOfChunkStart[j]; i < rowsOfChunkStart[j + 1]; i++) {
                    attendChunk(rowsOfChunk[i], g, chunkBase + j, chunkSize);
                }
            }
        }
        int rowInChunk = first - ownChunk * chunkSize;
        for (int r = 0; r < rows; r++) {
            attendChunk(r, g, chunkBase + ownChunk, rowInChunk + r + 1); // causal prefix of the own chunk
            finish(r, tokenBase + r, h);
        }
    }

    /** Counting sort of the block's (row, selected chunk) pairs by chunk. */
    private void groupRowsByChunk(int tokenBase, int h, int rows, int ownChunk) {
        Arrays.fill(rowsOfChunkStart, 0, ownChunk + 1, 0);
        int width = plan.width();
        for (int r = 0; r < rows; r++) {
            int base = plan.selectionOffset(tokenBase + r, h);
            for (int i = 0; i < width && selected[base + i] >= 0; i++) {
                rowsOfChunkStart[selected[base + i] + 1]++;
            }
        }
        for (int j = 0; j < ownChunk; j++) {
            rowsOfChunkStart[j + 1] += rowsOfChunkStart[j];
        }
        for (int r = 0; r < rows; r++) {
            int base = plan.selectionOffset(tokenBase + r, h);
            for (int i = 0; i < width && selected[base + i] >= 0; i++) {
                int j = selected[base + i];
                rowsOfChunk[rowsOfChunkStart[j]++] = r;
            }
        }
        // The fill pass advanced each start to the next chunk's start: shift back.
        for (int j = ownChunk; j > 0; j--) {
            rowsOfChunkStart[j] = rowsOfChunkStart[j - 1];
        }
        rowsOfChunkStart[0] = 0;
    }

    /** Folds keys {@code [0, keys)} of a chunk into row {@code r}'s online softmax. */
    private void attendChunk(int r, int g, int globalChunk, int keys) {
        VectorMath.rowTimesTile(scaledQ[r], 0, x.keyTiles[g][globalChunk], keys, scores);
        float previous = rowMax[r];
        float max = Math.max(previous, VectorMath.max(scores, keys));
        float sum = VectorMath.exp2InPlace(scores, keys, max);
        if (previous == Float.NEGATIVE_INFINITY) {
            rowSum[r] = sum;
        } else if (max > previous) {
            float correction = VectorMath.exp2(previous - max);
            rowSum[r] = rowSum[r] * correction + sum;
            VectorMath.scale(acc[r], correction);
        } else {
            rowSum[r] += sum;
        }
        rowMax[r] = max;
        VectorMath.accumulateWeightedRows(scores, x.valueRows[g][globalChunk], keys, acc[r]);
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
