package org.moba.kernels.cpu;

import org.moba.kernels.PhaseTimings;

/**
 * A CPU backward result before the gradients are rounded to the batch dtype.
 *
 * @param dq      {@code [T, H, D]} fp32
 * @param dk      {@code [T, Hkv, D]} fp32, summed over each kv head's query heads
 * @param dv      {@code [T, Hkv, D]} fp32, summed over each kv head's query heads
 * @param timings per-phase milliseconds
 */
public record CpuGradients(float[] dq, float[] dk, float[] dv, PhaseTimings timings) {
}
