package org.moba.kernels.reference;

import java.util.Arrays;
import org.moba.kernels.MobaParams;

/**
 * The MoBA gate (docs/semantics.md "Chunks and the gate"), in float64: the key mean of every full chunk of every
 * sequence and kv head, and per query the top {@code topk - 1} full chunks before its own, ties to the lower chunk
 * index.
 */
final class ChunkGate {
    /**
     * The chunks one query attends besides its own.
     *
     * @param chunks local chunk indices, ascending
     * @param margin {@code (s_weakest_selected - s_strongest_unselected) / max(|both|, 1e-30)}; {@code +Inf} when the
     *               choice does not depend on the scores (nothing left out, or nothing to select)
     */
    record Choice(int[] chunks, double margin) {
    }

    private static final double MARGIN_FLOOR = 1e-30;

    private final VarlenDoubles x;
    private final int chunkSize;
    private final int topk;
    /** {@code means[b * Hkv + hk]} is {@code [full chunks of b, D]}; only full chunks can ever be candidates. */
    private final double[][] means;

    ChunkGate(VarlenDoubles x, MobaParams params) {
        this.x = x;
        this.chunkSize = params.chunkSize();
        this.topk = params.topk();
        this.means = new double[x.numSequences() * x.kvHeads()][];
        for (int b = 0; b < x.numSequences(); b++) {
            for (int hk = 0; hk < x.kvHeads(); hk++) {
                means[b * x.kvHeads() + hk] = chunkMeans(b, hk);
            }
        }
    }

    private double[] chunkMeans(int b, int hk) {
        int d = x.headDim();
        int fullChunks = x.seqLength(b) / chunkSize;
        double[] mu = new double[fullChunks * d];
        for (int j = 0; j < fullChunks; j++) {
            for (int i = 0; i < d; i++) {
                double sum = 0;
                for (int pos = j * chunkSize; pos < (j + 1) * chunkSize; pos++) {
                    sum += x.k()[((x.seqStart(b) + pos) * x.kvHeads() + hk) * d + i];
                }
                mu[j * d + i] = sum / chunkSize;
            }
        }
        return mu;
    }

    /** The choice for query head {@code h} of global token {@code token}, which sits in chunk {@code ownChunk}. */
    Choice choose(int b, int ownChunk, int token, int h) {
        int candidates = ownChunk;
        int selectCount = (int) Math.min(topk - 1L, candidates);
        if (selectCount == 0 || selectCount == candidates) {
            return new Choice(ascending(selectCount), Double.POSITIVE_INFINITY);
        }
        double[] scores = scores(b, candidates, token, h);
        Integer[] order = new Integer[candidates];
        Arrays.setAll(order, j -> j);
        Arrays.sort(order, (a, c) -> {
            // "+ 0.0" folds -0.0 into 0.0 so that equal scores tie (Double.compare orders -0.0 below 0.0).
            int byScore = Double.compare(scores[c] + 0.0, scores[a] + 0.0);
            return byScore != 0 ? byScore : Integer.compare(a, c);
        });
        int[] chunks = new int[selectCount];
        for (int i = 0; i < selectCount; i++) {
            chunks[i] = order[i];
        }
        Arrays.sort(chunks);
        double weakestSelected = scores[order[selectCount - 1]];
        double strongestUnselected = scores[order[selectCount]];
        double magnitude = Math.max(Math.max(Math.abs(weakestSelected), Math.abs(strongestUnselected)), MARGIN_FLOOR);
        return new Choice(chunks, (weakestSelected - strongestUnselected) / magnitude);
    }

    /**
     * Gate scores {@code dot(q[token, h], mu[j])} of chunks {@code 0 .. candidates-1} (unscaled, as in
     * docs/semantics.md).
     */
    private double[] scores(int b, int candidates, int token, int h) {
        int d = x.headDim();
        double[] mu = means[b * x.kvHeads() + x.kvHeadOf(h)];
        int qOffset = (token * x.heads() + h) * d;
        double[] scores = new double[candidates];
        for (int j = 0; j < candidates; j++) {
            double dot = 0;
            for (int i = 0; i < d; i++) {
                dot += x.q()[qOffset + i] * mu[j * d + i];
            }
            scores[j] = dot;
        }
        return scores;
    }

    private static int[] ascending(int count) {
        int[] chunks = new int[count];
        Arrays.setAll(chunks, j -> j);
        return chunks;
    }
}
