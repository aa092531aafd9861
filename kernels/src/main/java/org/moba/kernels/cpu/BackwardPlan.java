package org.moba.kernels.cpu;

import org.moba.kernels.BackwardInputRules;
import org.moba.kernels.PackedBatch;

/**
 * What every worker of one backward call shares: the forward's tensors in fp32 ({@link ForwardPlan} holds q and the
 * key and value tiles), the extra layouts the backward's products want, the per-row softmax constants and, for
 * MoBA, the inverted selection (which query rows selected each chunk). Built by {@link #prepare}.
 */
final class BackwardPlan {
    final ForwardPlan fwd;
    final FloatTensors x;
    final float scale;
    /** {@code scale * log2(e)}: scores in base 2, as in the forward. */
    final float qFactor;
    final float[] dout;
    /** {@code lse * log2(e)} per (token, head): {@code p = 2^(qFactor * q.k - lse2)}. */
    final float[] lse2;
    /** {@code rowsum(dout * out)} per (token, head), fp32, summed in dimension order. */
    final float[] delta;
    /** [kv head][segment][key][d]: key rows, for {@code dq += dS k}. */
    final float[][][][] keyRows;
    /** [kv head][segment][d][key]: transposed values, for {@code dout . v} in axpy form. */
    final float[][][][] valueTiles;
    /** Global chunk of every global segment, and sequence of every global chunk. */
    final int[] chunkOfSegment;
    final int[] sequenceOfChunk;
    /**
     * For MoBA: {@code selectedBy[globalChunk * H + h]} lists, ascending, the global tokens whose head {@code h}
     * selected the chunk (the own chunk is not in a selection). Null for dense attention.
     */
    final int[][] selectedBy;
    final boolean dense;

    private BackwardPlan(ForwardPlan fwd, float scale, float[] dout, boolean dense) {
        this.fwd = fwd;
        this.x = fwd.x();
        this.scale = scale;
        this.qFactor = scale * VectorMath.LOG2E;
        this.dout = dout;
        int rows = dout.length / fwd.headDim();
        this.lse2 = new float[rows];
        this.delta = new float[rows];
        int hkv = x.keyTiles.length;
        int segments = x.segmentBase[x.segmentBase.length - 1];
        this.keyRows = new float[hkv][segments][][];
        this.valueTiles = new float[hkv][segments][][];
        int chunks = x.segmentBase.length - 1;
        this.chunkOfSegment = new int[segments];
        for (int c = 0; c < chunks; c++) {
            for (int s = x.segmentBase[c]; s < x.segmentBase[c + 1]; s++) {
                chunkOfSegment[s] = c;
            }
        }
        this.sequenceOfChunk = new int[chunks];
        for (int b = 0; b + 1 < x.chunkBase.length; b++) {
            for (int c = x.chunkBase[b]; c < x.chunkBase[b + 1]; c++) {
                sequenceOfChunk[c] = b;
            }
        }
        this.dense = dense;
        this.selectedBy = dense ? null : new int[chunks * fwd.heads()][];
    }

    /**
     * Builds the plan in parallel: transposed tiles, {@code lse2} and {@code delta} from the forward's fp32
     * {@code out} and {@code lse}, and the inverted selection, validating every selection entry on the way.
     */
    static BackwardPlan prepare(ForwardPlan fwd, PackedBatch batch, float scale, boolean dense, float[] out,
                                float[] lse, int[] selected, float[] dout, ParallelLoop loop) {
        BackwardPlan p = new BackwardPlan(fwd, scale, dout, dense);
        int hkv = batch.kvHeads();
        int segments = p.chunkOfSegment.length;
        int rows = p.lse2.length;
        int rowsPerTask = 1024;
        int rowTasks = (rows + rowsPerTask - 1) / rowsPerTask;
        int tileTasks = hkv * segments;
        int heads = batch.heads();
        int indexTasks = dense ? 0 : batch.numSequences() * heads;
        loop.forEach(rowTasks + tileTasks + indexTasks, () -> task -> {
            if (task < rowTasks) {
                p.rowConstants(task * rowsPerTask, Math.min(rows, (task + 1) * rowsPerTask), out, lse);
            } else if (task < rowTasks + tileTasks) {
                int tile = task - rowTasks;
                p.transposeTiles(tile / segments, tile % segments);
            } else {
                int unit = task - rowTasks - tileTasks;
                p.invertSelection(batch, unit / heads, unit % heads, selected);
            }
        });
        return p;
    }

    private void rowConstants(int fromRow, int toRow, float[] out, float[] lse) {
        int d = fwd.headDim();
        for (int row = fromRow; row < toRow; row++) {
            float sum = 0f;
            for (int i = row * d, end = i + d; i < end; i++) {
                sum += dout[i] * out[i];
            }
            delta[row] = sum;
            lse2[row] = lse[row] * VectorMath.LOG2E;
        }
    }

    private void transposeTiles(int g, int s) {
        keyRows[g][s] = transpose(x.keyTiles[g][s]);
        valueTiles[g][s] = transpose(x.valueRows[g][s]);
    }

    private static float[][] transpose(float[][] a) {
        int rows = a.length;
        int cols = a[0].length;
        float[][] t = new float[cols][rows];
        for (int r = 0; r < rows; r++) {
            float[] row = a[r];
            for (int c = 0; c < cols; c++) {
                t[c][r] = row[c];
            }
        }
        return t;
    }

    /** Fills {@code selectedBy} for sequence {@code b}, head {@code h}: a counting pass, then a filling pass. */
    private void invertSelection(PackedBatch batch, int b, int h, int[] selected) {
        int start = batch.seqStart(b);
        int length = batch.seqLength(b);
        int chunkSize = fwd.chunkSize();
        int width = fwd.width();
        int chunks = x.chunkBase[b + 1] - x.chunkBase[b];
        int[] counts = new int[chunks];
        for (int p = 0; p < length; p++) {
            int base = fwd.selectionOffset(start + p, h);
            BackwardInputRules.checkSelectionRow(selected, base, width, p / chunkSize, b, p, h);
            for (int i = 0; i < width && selected[base + i] >= 0; i++) {
                counts[selected[base + i]]++;
            }
        }
        int[][] lists = new int[chunks][];
        for (int j = 0; j < chunks; j++) {
            lists[j] = new int[counts[j]];
            counts[j] = 0;
        }
        for (int p = 0; p < length; p++) {
            int base = fwd.selectionOffset(start + p, h);
            for (int i = 0; i < width; i++) {
                int j = selected[base + i];
                if (j < 0) {
                    break;
                }
                lists[j][counts[j]++] = start + p;
            }
        }
        for (int j = 0; j < chunks; j++) {
            selectedBy[(x.chunkBase[b] + j) * fwd.heads() + h] = lists[j];
        }
    }
}
