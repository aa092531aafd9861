package org.moba.kernels.cpu;

import java.util.Arrays;
import java.util.function.IntConsumer;

/**
 * {@code dk} and {@code dv} of one key segment (a chunk, or a {@link VectorMath#SEGMENT}-key piece of a longer one)
 * of one kv head, key-chunk-stationary (docs/semantics.md "Backward"): the segment's accumulators stay in this worker
 * while every query row that attends it streams past, four rows per pass: {@code dv += p^T dout}, {@code dk += dS^T q},
 * then {@code dk *= scale}. The rows are, per query head of the group in ascending order, the own chunk's (causal)
 * rows, then the rows that selected the chunk (every later row for dense attention), ascending: a fixed order, so the
 * sums do not depend on threads, and each output row is written by exactly one task. One instance per worker
 * thread (it holds scratch).
 */
final class ChunkGradKV implements IntConsumer {
    private static final int QUAD = 4;

    private final BackwardPlan bp;
    private final ForwardPlan plan;
    private final FloatTensors x;
    private final float[] dk;
    private final float[] dv;
    private final int kvHeads;

    private final float[][] dkAcc;
    private final float[][] dvAcc;
    private final float[][] qRows = new float[QUAD][];
    private final float[][] scaledQ = new float[QUAD][];
    private final float[][] doutRows = new float[QUAD][];
    private final int[] pendingRow = new int[QUAD];
    private final int[] pendingKeys = new int[QUAD];
    private int pending;
    /** Scores then dS, dout . v, and p, of rows 0-1 and 2-3 (second row of a pair at SEGMENT). */
    private final float[] s01 = new float[2 * VectorMath.SEGMENT];
    private final float[] s23 = new float[2 * VectorMath.SEGMENT];
    private final float[] dp01 = new float[2 * VectorMath.SEGMENT];
    private final float[] dp23 = new float[2 * VectorMath.SEGMENT];
    private final float[] p01 = new float[2 * VectorMath.SEGMENT];
    private final float[] p23 = new float[2 * VectorMath.SEGMENT];

    // The segment being processed.
    private int g;
    private int segment;
    private int n;

    ChunkGradKV(BackwardPlan bp, int kvHeads, float[] dk, float[] dv) {
        this.bp = bp;
        this.plan = bp.fwd;
        this.x = plan.x();
        this.kvHeads = kvHeads;
        this.dk = dk;
        this.dv = dv;
        int d = plan.headDim();
        int keys = Math.min(VectorMath.SEGMENT, plan.chunkSize());
        this.dkAcc = new float[keys][d];
        this.dvAcc = new float[keys][d];
        for (int r = 0; r < QUAD; r++) {
            qRows[r] = new float[d];
            scaledQ[r] = new float[d];
            doutRows[r] = new float[d];
        }
    }

    @Override
    public void accept(int task) {
        g = task % kvHeads;
        segment = task / kvHeads;
        int chunk = bp.chunkOfSegment[segment];
        int b = bp.sequenceOfChunk[chunk];
        int j = chunk - x.chunkBase[b];
        int chunkSize = plan.chunkSize();
        int seqStart = plan.cuSeqlens()[b];
        int seqEnd = plan.cuSeqlens()[b + 1];
        int segFirst = j * chunkSize + (segment - x.segmentBase[chunk]) * VectorMath.SEGMENT; // local position
        int chunkEnd = Math.min(seqEnd - seqStart, (j + 1) * chunkSize);
        n = x.valueRows[g][segment].length;
        int d = plan.headDim();
        for (int k = 0; k < n; k++) {
            Arrays.fill(dkAcc[k], 0, d, 0f);
            Arrays.fill(dvAcc[k], 0, d, 0f);
        }
        pending = 0;
        int heads = plan.heads();
        for (int h = g * plan.groupSize(), hEnd = h + plan.groupSize(); h < hEnd; h++) {
            for (int p = segFirst; p < chunkEnd; p++) {
                add(seqStart + p, h, Math.min(n, p - segFirst + 1));
            }
            if (bp.dense) {
                for (int t = seqStart + chunkEnd; t < seqEnd; t++) {
                    add(t, h, n);
                }
            } else {
                for (int t : bp.selectedBy[chunk * heads + h]) {
                    add(t, h, n);
                }
            }
        }
        flush();
        int first = seqStart + segFirst;
        for (int k = 0; k < n; k++) {
            int off = ((first + k) * kvHeads + g) * d;
            float[] kr = dkAcc[k];
            float[] vr = dvAcc[k];
            for (int i = 0; i < d; i++) {
                dk[off + i] = kr[i] * bp.scale;
                dv[off + i] = vr[i];
            }
        }
    }

    /** Queues query row (token, head) attending the first {@code keys} keys of the segment. */
    private void add(int token, int h, int keys) {
        int d = plan.headDim();
        int off = plan.rowOffset(token, h);
        float[] qr = qRows[pending];
        float[] sq = scaledQ[pending];
        float[] dr = doutRows[pending];
        for (int i = 0; i < d; i++) {
            float q = x.q[off + i];
            qr[i] = q;
            sq[i] = q * bp.qFactor;
            dr[i] = bp.dout[off + i];
        }
        pendingRow[pending] = token * plan.heads() + h;
        pendingKeys[pending] = keys;
        if (++pending == QUAD) {
            flush();
        }
    }

    /** Folds the queued rows (up to four; missing ones get zero weights) into the accumulators. */
    private void flush() {
        if (pending == 0) {
            return;
        }
        int d = plan.headDim();
        float[][] keyTile = x.keyTiles[g][segment];
        float[][] valueTile = bp.valueTiles[g][segment];
        VectorMath.pairTimesTile(scaledQ[0], scaledQ[1], keyTile, n, s01);
        VectorMath.pairTimesTile(doutRows[0], doutRows[1], valueTile, n, dp01);
        grad(0, s01, dp01, p01, 0);
        grad(1, s01, dp01, p01, VectorMath.SEGMENT);
        if (pending > 2) {
            VectorMath.pairTimesTile(scaledQ[2], scaledQ[3], keyTile, n, s23);
            VectorMath.pairTimesTile(doutRows[2], doutRows[3], valueTile, n, dp23);
            grad(2, s23, dp23, p23, 0);
            grad(3, s23, dp23, p23, VectorMath.SEGMENT);
        } else {
            Arrays.fill(s23, 0f);
            Arrays.fill(p23, 0f);
        }
        // Missing rows have zero weights; zero rows too, so that 0 * (a stale non-finite input) cannot add a NaN.
        for (int r = pending; r < QUAD; r++) {
            Arrays.fill(qRows[r], 0f);
            Arrays.fill(doutRows[r], 0f);
        }
        VectorMath.quadAddOuter(p01, p23, doutRows[0], doutRows[1], doutRows[2], doutRows[3], dvAcc, n, d);
        VectorMath.quadAddOuter(s01, s23, qRows[0], qRows[1], qRows[2], qRows[3], dkAcc, n, d);
        pending = 0;
    }

    private void grad(int r, float[] scores, float[] dps, float[] probs, int off) {
        int keys = r < pending ? pendingKeys[r] : 0;
        int row = r < pending ? pendingRow[r] : 0;
        VectorMath.softmaxGrad(scores, dps, off, keys, n, bp.lse2[row], bp.delta[row], probs);
    }
}
