package org.moba.kernels;

/**
 * What a MoBA backward pass returns (docs/semantics.md "Backward"): the gradients of {@code sum(out * dout)} with the
 * forward's selection held fixed.
 *
 * @param dq      {@code [T, H, D]} in the batch's dtype (raw bits)
 * @param dk      {@code [T, Hkv, D]} in the batch's dtype, summed over the query heads of each kv head
 * @param dv      {@code [T, Hkv, D]} in the batch's dtype, summed over the query heads of each kv head
 * @param timings per-phase times of the call
 */
public record MobaGradients(short[] dq, short[] dk, short[] dv, PhaseTimings timings) {
}
