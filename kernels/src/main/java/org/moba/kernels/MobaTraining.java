package org.moba.kernels;

/**
 * A MoBA backend that also computes gradients. Separate from {@link MobaAttention} so that a backend without a
 * backward pass does not have to pretend to have one.
 */
public interface MobaTraining extends MobaAttention {

    /**
     * Backward pass (docs/semantics.md "Backward"): gradients of {@code sum(out * dout)} with respect to q, k and v,
     * using the forward's {@code out}, {@code lse} and selection (no gradient flows through the gate), with
     * {@code delta = rowsum(dout * out)} taken from the forward's {@code out} as returned (in the batch's dtype).
     *
     * @param batch   the batch the forward ran on
     * @param params  the parameters the forward ran with
     * @param forward what {@link #forward} returned for {@code batch} and {@code params}
     * @param dout    {@code [T, H, D]} gradient of the output, in the batch's dtype (raw bits)
     * @throws MobaInputException when {@code dout} or the forward's arrays do not have the batch's shapes
     */
    MobaGradients backward(PackedBatch batch, MobaParams params, MobaOutput forward, short[] dout);
}
