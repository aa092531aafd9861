package org.moba.kernels;

/**
 * What a MoBA forward pass returns for a {@link PackedBatch}.
 *
 * @param out            {@code [T, H, D]} in the batch's dtype (raw bits)
 * @param lse            {@code [T, H]} natural log of the softmax denominator of the scaled scores, fp32
 * @param selected       {@code [T, H, selectionWidth]} the selected chunks per query and head (local chunk indices
 *                       within the sequence, ascending, padded with -1 when fewer exist); empty for dense attention
 * @param selectionWidth entries per (token, head) in {@code selected}, see {@link MobaParams#selectionWidth(int)}
 * @param timings        per-phase times of the call
 */
public record MobaOutput(short[] out, float[] lse, int[] selected, int selectionWidth, PhaseTimings timings) {
}
