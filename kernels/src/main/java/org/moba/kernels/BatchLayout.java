package org.moba.kernels;

import java.util.Arrays;

/** The per-token tensor shape shared by every sequence of a batch: dtype, H, Hkv and D. */
public record BatchLayout(DType dtype, int heads, int kvHeads, int headDim) {

    public BatchLayout {
        if (dtype == null) {
            throw new MobaInputException("dtype is missing");
        }
        if (heads <= 0) {
            throw new MobaInputException("heads (H) must be > 0, got " + heads);
        }
        if (kvHeads <= 0) {
            throw new MobaInputException("kv_heads (Hkv) must be > 0, got " + kvHeads);
        }
        if (heads % kvHeads != 0) {
            throw new MobaInputException("heads (H) = " + heads + " is not divisible by kv_heads (Hkv) = " + kvHeads);
        }
        if (Arrays.stream(PackedBatch.SUPPORTED_HEAD_DIMS).noneMatch(d -> d == headDim)) {
            throw new MobaInputException("unsupported head_dim (D) = " + headDim + " (supported: "
                    + Arrays.toString(PackedBatch.SUPPORTED_HEAD_DIMS) + ")");
        }
    }

    public int qElementsPerToken() {
        return heads * headDim;
    }

    public int kvElementsPerToken() {
        return kvHeads * headDim;
    }

    /** Checks a sequence's tensors against this layout; the error names the sequence id and field. */
    public void check(Sequence s) {
        if (s.length() < 0) {
            throw new MobaInputException("sequence '" + s.id() + "': length must be >= 0, got " + s.length());
        }
        checkField(s, "q", s.q(), (long) s.length() * qElementsPerToken());
        checkField(s, "k", s.k(), (long) s.length() * kvElementsPerToken());
        checkField(s, "v", s.v(), (long) s.length() * kvElementsPerToken());
    }

    private static void checkField(Sequence s, String field, short[] data, long expected) {
        if (data == null) {
            throw new MobaInputException("sequence '" + s.id() + "': " + field + " is missing");
        }
        if (data.length != expected) {
            throw new MobaInputException("sequence '" + s.id() + "': " + field + " has " + data.length
                    + " elements, expected " + expected + " for length " + s.length());
        }
    }
}
