package org.moba.kernels.cpu;

import java.util.function.IntConsumer;

/**
 * The MoBA gate of one row block (docs/semantics.md "Chunks and the gate"): fp32 scores {@code q . mu} against the full
 * chunks before the own chunk, the {@code min(topk - 1, c)} best with ties to the lower chunk index, written
 * ascending into {@code selected [T, H, W]} and padded with -1. One instance per worker thread (it holds scratch).
 */
final class GateTopK implements IntConsumer {
    private final ForwardPlan plan;
    private final int[] selected;

    private final float[] scores;
    private final float[] bestScore;
    private final int[] bestChunk;

    GateTopK(ForwardPlan plan, int[] selected) {
        this.plan = plan;
        this.selected = selected;
        int keepAtMost = Math.min(plan.width(), plan.maxCandidates());
        this.scores = new float[plan.maxCandidates()];
        this.bestScore = new float[keepAtMost];
        this.bestChunk = new int[keepAtMost];
    }

    @Override
    public void accept(int task) {
        RowBlocks blocks = plan.blocks();
        int b = blocks.sequence(task);
        int h = blocks.head(task);
        int first = blocks.firstRow(task);
        int candidates = first / plan.chunkSize();
        int keep = Math.min(plan.topk() - 1, candidates);
        int width = plan.width();
        float[][] means = plan.x().meansT[b][h / plan.groupSize()];
        for (int row = first, end = first + blocks.rowCount(task); row < end; row++) {
            int token = plan.cuSeqlens()[b] + row;
            if (keep == candidates) {
                for (int j = 0; j < keep; j++) {
                    bestChunk[j] = j; // every candidate is kept: no scores needed
                }
            } else {
                VectorMath.rowTimesTile(plan.x().q, plan.rowOffset(token, h), means, candidates, scores);
                keepBest(candidates, keep);
                sortAscending(bestChunk, keep);
            }
            int out = plan.selectionOffset(token, h);
            System.arraycopy(bestChunk, 0, selected, out, keep);
            for (int i = keep; i < width; i++) {
                selected[out + i] = -1;
            }
        }
    }

    /** Top {@code keep} of {@code scores[0, candidates)} by insertion; a later equal score never displaces. */
    private void keepBest(int candidates, int keep) {
        int size = 0;
        for (int j = 0; j < candidates; j++) {
            float s = scores[j];
            if (size == keep && !(s > bestScore[keep - 1])) {
                continue;
            }
            int pos = size < keep ? size++ : keep - 1;
            while (pos > 0 && s > bestScore[pos - 1]) {
                bestScore[pos] = bestScore[pos - 1];
                bestChunk[pos] = bestChunk[pos - 1];
                pos--;
            }
            bestScore[pos] = s;
            bestChunk[pos] = j;
        }
    }

    private static void sortAscending(int[] a, int n) {
        for (int i = 1; i < n; i++) {
            int v = a[i];
            int j = i - 1;
            while (j >= 0 && a[j] > v) {
                a[j + 1] = a[j];
                j--;
            }
            a[j + 1] = v;
        }
    }
}
