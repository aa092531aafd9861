package org.moba.kernels.reference;

import org.moba.kernels.DType;
import org.moba.kernels.ErrorMetrics;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.PackedBatch;

/**
 * A varlen batch held in float64 (docs/semantics.md "Inputs"): {@code q [T, H, D]}, {@code k, v [T, Hkv, D]},
 * row-major, sequence {@code b} owning tokens {@code [cuSeqlens[b], cuSeqlens[b+1])}. Unlike {@link PackedBatch} any
 * head dimension is accepted and the values need not be representable in 16 bits, so tests can build tiny hand-made
 * cases and perturb inputs for finite differences. The arrays are not copied.
 */
public record VarlenDoubles(int[] cuSeqlens, int heads, int kvHeads, int headDim, double[] q, double[] k,
                            double[] v) {

    public VarlenDoubles {
        PackedBatch.checkCuSeqlens(cuSeqlens, Integer.MAX_VALUE);
        if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0) {
            throw new MobaInputException("heads (H) = " + heads + " must be a positive multiple of kv_heads (Hkv) = "
                    + kvHeads);
        }
        if (headDim <= 0) {
            throw new MobaInputException("head_dim (D) must be > 0, got " + headDim);
        }
        long tokens = cuSeqlens[cuSeqlens.length - 1];
        checkSize("q", q, tokens * heads * headDim);
        checkSize("k", k, tokens * kvHeads * headDim);
        checkSize("v", v, tokens * kvHeads * headDim);
    }

    private static void checkSize(String field, double[] data, long expected) {
        if (data == null || data.length != expected) {
            throw new MobaInputException(field + " has " + (data == null ? "no" : data.length) + " elements, expected "
                    + expected);
        }
    }

    /** The batch's values widened exactly to float64. */
    public static VarlenDoubles of(PackedBatch batch) {
        DType dtype = batch.dtype();
        return new VarlenDoubles(batch.cuSeqlens(), batch.heads(), batch.kvHeads(), batch.headDim(),
                ErrorMetrics.toDouble(batch.q(), dtype), ErrorMetrics.toDouble(batch.k(), dtype),
                ErrorMetrics.toDouble(batch.v(), dtype));
    }

    /** The same shape with other tensors (for perturbed copies). */
    public VarlenDoubles withTensors(double[] newQ, double[] newK, double[] newV) {
        return new VarlenDoubles(cuSeqlens, heads, kvHeads, headDim, newQ, newK, newV);
    }

    public int numSequences() {
        return cuSeqlens.length - 1;
    }

    public int totalTokens() {
        return cuSeqlens[cuSeqlens.length - 1];
    }

    public int seqStart(int b) {
        return cuSeqlens[b];
    }

    public int seqLength(int b) {
        return cuSeqlens[b + 1] - cuSeqlens[b];
    }

    /** The longest sequence's length (0 for an empty batch). */
    public int maxSeqlen() {
        int max = 0;
        for (int b = 0; b < numSequences(); b++) {
            max = Math.max(max, seqLength(b));
        }
        return max;
    }

    /** Query heads per kv head (the GQA group size). */
    public int groupSize() {
        return heads / kvHeads;
    }

    /** The kv head that query head {@code h} reads. */
    public int kvHeadOf(int h) {
        return h / groupSize();
    }
}
