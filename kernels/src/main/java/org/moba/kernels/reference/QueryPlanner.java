package org.moba.kernels.reference;

import org.moba.kernels.MobaParams;

/** Decides, per (token, query head), which keys the query attends (docs/semantics.md "Attention"). */
final class QueryPlanner {
    /**
     * What one query attends.
     *
     * @param choice the gate's choice (no chunks and margin {@code +Inf} for dense causal attention)
     * @param keys   global token indices of the attended keys, ascending: the selected chunks, then the causal
     *               prefix of the own chunk
     */
    record QueryPlan(ChunkGate.Choice choice, int[] keys) {
    }

    private static final ChunkGate.Choice DENSE = new ChunkGate.Choice(new int[0], Double.POSITIVE_INFINITY);

    private final VarlenDoubles x;
    private final int chunkSize;
    private final boolean dense;
    private final ChunkGate gate;
    private final int[] sequenceOfToken;
    /** A given selection {@code [T, H, width]} (padded with -1) used instead of the gate; null to run the gate. */
    private final int[] given;
    private final int givenWidth;

    QueryPlanner(VarlenDoubles x, MobaParams params) {
        this(x, params, null, 0);
    }

    QueryPlanner(VarlenDoubles x, MobaParams params, int[] given, int givenWidth) {
        this.x = x;
        this.given = given;
        this.givenWidth = givenWidth;
        this.chunkSize = params.chunkSize();
        this.dense = params.denseCausal();
        this.gate = dense ? null : new ChunkGate(x, params);
        this.sequenceOfToken = new int[x.totalTokens()];
        for (int b = 0; b < x.numSequences(); b++) {
            for (int t = x.seqStart(b); t < x.seqStart(b) + x.seqLength(b); t++) {
                sequenceOfToken[t] = b;
            }
        }
    }

    QueryPlan plan(int token, int h) {
        int b = sequenceOfToken[token];
        int start = x.seqStart(b);
        if (dense) {
            int[] keys = new int[token + 1 - start];
            appendRange(start, token + 1, keys, 0);
            return new QueryPlan(DENSE, keys);
        }
        int ownChunk = (token - start) / chunkSize;
        ChunkGate.Choice choice = given == null ? gate.choose(b, ownChunk, token, h) : givenChoice(token, h);
        int ownChunkStart = start + ownChunk * chunkSize;
        int[] keys = new int[choice.chunks().length * chunkSize + token + 1 - ownChunkStart];
        int filled = 0;
        for (int j : choice.chunks()) {
            int chunkStart = start + j * chunkSize;
            filled = appendRange(chunkStart, chunkStart + chunkSize, keys, filled);
        }
        appendRange(ownChunkStart, token + 1, keys, filled);
        return new QueryPlan(choice, keys);
    }

    /** The given selection of (token, h) with margin NaN (not known). */
    private ChunkGate.Choice givenChoice(int token, int h) {
        int base = (token * x.heads() + h) * givenWidth;
        int count = 0;
        while (count < givenWidth && given[base + count] >= 0) {
            count++;
        }
        return new ChunkGate.Choice(java.util.Arrays.copyOfRange(given, base, base + count), Double.NaN);
    }

    /** Writes {@code from .. to-1} into {@code into} at {@code offset}; returns the offset after them. */
    private static int appendRange(int from, int to, int[] into, int offset) {
        for (int t = from; t < to; t++) {
            into[offset + t - from] = t;
        }
        return offset + to - from;
    }
}
