package org.moba.kernels.cpu;

import java.util.Arrays;
import java.util.function.IntConsumer;

/**
 * The query-block-stationary walk shared by the forward ({@link BlockAttention}) and the dq pass
 * ({@link BlockGradQ}) over one row block: load the block's scaled query rows, group the rows by the chunk they
 * attend, then hand every attended chunk to {@link #pairChunk} with two rows at a time (earlier chunks in ascending
 * order, then the own chunk's causal prefix). Each row's visits follow that fixed order, so the results do not
 * depend on threads. One instance per worker thread (it holds scratch).
 */
abstract class RowBlockPass implements IntConsumer {
    /** Offset of the second row of a pair in {@link #pairScores}. */
    static final int SECOND = VectorMath.SEGMENT;

    final ForwardPlan plan;
    final FloatTensors x;
    /** Null for dense causal attention: every earlier chunk is attended. */
    private final int[] selected;
    private final float qFactor;

    /** The block's query rows times {@code scale * log2(e)}. */
    final float[][] scaledQ;
    /** Per-row accumulators, zeroed before each block. */
    final float[][] acc;
    /** Scores of a row pair against one segment: first row at 0, second at {@link #SECOND}. */
    final float[] pairScores = new float[2 * VectorMath.SEGMENT];
    /** One segment's weighted rows of a row pair: first row at 0, second at {@link VectorMath#ACC_STRIDE}. */
    final float[] pairValues = new float[2 * VectorMath.ACC_STRIDE];
    /** Block-local rows grouped by the chunk they attend: rows of chunk j at [rowsOfChunkStart[j], [j + 1]). */
    private final int[] rowsOfChunkStart;
    private final int[] rowsOfChunk;

    RowBlockPass(ForwardPlan plan, float qFactor, int[] selected) {
        this.plan = plan;
        this.x = plan.x();
        this.selected = selected;
        this.qFactor = qFactor;
        int rows = plan.blocks().maxRows();
        this.scaledQ = new float[rows][plan.headDim()];
        this.acc = new float[rows][plan.headDim()];
        this.rowsOfChunkStart = new int[plan.maxChunks() + 1];
        int perRow = selected == null ? plan.maxCandidates() : Math.min(plan.width(), plan.maxCandidates());
        this.rowsOfChunk = new int[rows * perRow];
    }

    /** Loads block row {@code r} (token {@code token}, head {@code h}, elements at {@code off}) beyond its query. */
    abstract void startRow(int r, int token, int h, int off);

    /**
     * Processes the first {@code keysA} (row {@code ra}) and {@code keysB} (row {@code rb}, {@code keysA <= keysB})
     * keys of chunk {@code globalChunk} of kv head {@code g}, segment by segment; {@code ra == rb} is one row. Key
     * counts beyond the chunk mean "all of it". Each subclass keeps this hot loop to itself, so that C2 compiles it
     * with its own profile (a shared segment loop calling back per segment let C2 inline differently and cost the
     * dq pass up to 40%).
     */
    abstract void pairChunk(int ra, int rb, int g, int globalChunk, int keysA, int keysB);

    /** Writes block row {@code r}'s results. */
    abstract void finishRow(int r, int token, int h, int off);

    @Override
    public final void accept(int task) {
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
            int off = plan.rowOffset(tokenBase + r, h);
            float[] qr = scaledQ[r];
            for (int i = 0; i < qr.length; i++) {
                qr[i] = x.q[off + i] * qFactor;
            }
            Arrays.fill(acc[r], 0f);
            startRow(r, tokenBase + r, h, off);
        }
        groupRowsByChunk(tokenBase, h, rows, ownChunk);
        for (int j = 0; j < ownChunk; j++) {
            int from = rowsOfChunkStart[j];
            int to = rowsOfChunkStart[j + 1];
            for (int i = from; i < to; i += 2) {
                int ra = rowsOfChunk[i];
                int rb = i + 1 < to ? rowsOfChunk[i + 1] : ra;
                pairChunk(ra, rb, g, chunkBase + j, Integer.MAX_VALUE, Integer.MAX_VALUE);
            }
        }
        // Causal prefix of the own chunk: row r sees its first (rowInChunk + r + 1) keys.
        int rowInChunk = first - ownChunk * chunkSize;
        for (int r = 0; r < rows; r += 2) {
            int rb = Math.min(r + 1, rows - 1);
            pairChunk(r, rb, g, chunkBase + ownChunk, rowInChunk + r + 1, rowInChunk + rb + 1);
        }
        for (int r = 0; r < rows; r++) {
            finishRow(r, tokenBase + r, h, plan.rowOffset(tokenBase + r, h));
        }
    }

    /** Counting sort of the block's (row, attended earlier chunk) pairs by chunk; dense attends all of them. */
    private void groupRowsByChunk(int tokenBase, int h, int rows, int ownChunk) {
        Arrays.fill(rowsOfChunkStart, 0, ownChunk + 1, 0);
        visitRowChunks(tokenBase, h, rows, ownChunk, false);
        for (int j = 0; j < ownChunk; j++) {
            rowsOfChunkStart[j + 1] += rowsOfChunkStart[j];
        }
        visitRowChunks(tokenBase, h, rows, ownChunk, true);
        // The fill pass advanced each start to the next chunk's start: shift back.
        for (int j = ownChunk; j > 0; j--) {
            rowsOfChunkStart[j] = rowsOfChunkStart[j - 1];
        }
        rowsOfChunkStart[0] = 0;
    }

    /** Per (row, attended earlier chunk j): counts it in {@code rowsOfChunkStart[j + 1]}, or files the row. */
    private void visitRowChunks(int tokenBase, int h, int rows, int ownChunk, boolean fill) {
        int width = plan.width();
        for (int r = 0; r < rows; r++) {
            int base = plan.selectionOffset(tokenBase + r, h);
            for (int i = 0; i < (selected == null ? ownChunk : width); i++) {
                int j = selected == null ? i : selected[base + i];
                if (j < 0) {
                    break;
                }
                if (fill) {
                    rowsOfChunk[rowsOfChunkStart[j]++] = r;
                } else {
                    rowsOfChunkStart[j + 1]++;
                }
            }
        }
    }
}
