package org.moba.kernels.cpu;

import org.moba.kernels.PhaseTimings;

/**
 * A CPU forward result before the output is rounded to the batch dtype.
 *
 * @param out            {@code [T, H, D]} fp32
 * @param lse            {@code [T, H]} natural log of the softmax denominator of the scaled scores
 * @param selected       {@code [T, H, selectionWidth]} ascending local chunk indices padded with -1; empty for dense
 * @param selectionWidth entries per (token, head) in {@code selected}
 * @param timings        per-phase milliseconds
 */
public record CpuForward(float[] out, float[] lse, int[] selected, int selectionWidth, PhaseTimings timings) {
}
