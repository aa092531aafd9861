package org.moba.kernels;

/**
 * Counts the (query, key) pairs a forward pass attended, over all heads: the basis of "useful TFLOP/s"
 * ({@code 4 * D * pairs / seconds}, the two matrix products of attention; the backward's five products count
 * {@code 10 * D * pairs}, 2.5 times the forward's).
 */
public final class AttendedPairs {
    private AttendedPairs() {
    }

    /** Pairs attended under {@code params}, read from the selection a MoBA forward returned. */
    public static long count(PackedBatch batch, MobaParams params, MobaOutput output) {
        int c = params.chunkSize();
        int h = batch.heads();
        int w = output.selectionWidth();
        int[] sel = output.selected();
        long pairs = 0;
        for (int b = 0; b < batch.numSequences(); b++) {
            int start = batch.seqStart(b);
            for (int p = 0; p < batch.seqLength(b); p++) {
                if (params.denseCausal()) {
                    pairs += (long) h * (p + 1);
                    continue;
                }
                pairs += (long) h * (p - (p / c) * c + 1); // the own chunk's causal prefix
                int base = (start + p) * h * w;
                for (int i = 0; i < h * w; i++) {
                    if (sel[base + i] >= 0) {
                        pairs += c; // selected chunks are always full
                    }
                }
            }
        }
        return pairs;
    }

    /** Useful floating-point operations per attended pair and head dimension: forward (QK^T, PV). */
    public static final double FORWARD_FLOPS_PER_PAIR_DIM = 4.0;
    /** Backward (recomputed QK^T, dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q): 2.5 times the forward. */
    public static final double BACKWARD_FLOPS_PER_PAIR_DIM = 10.0;

    /** Useful TFLOP/s of {@code pairs} attended pairs at head dim {@code d} in {@code millis}. */
    public static double teraflops(long pairs, int d, double millis) {
        return FORWARD_FLOPS_PER_PAIR_DIM * d * pairs / (millis * 1e-3) / 1e12;
    }

    /** Useful TFLOP/s of a backward pass over {@code pairs} attended pairs at head dim {@code d} in {@code millis}. */
    public static double backwardTeraflops(long pairs, int d, double millis) {
        return BACKWARD_FLOPS_PER_PAIR_DIM * d * pairs / (millis * 1e-3) / 1e12;
    }
}
