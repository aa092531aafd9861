package org.moba.kernels;

/**
 * A packed variable-length batch in the FlashAttention "varlen" layout (docs/semantics.md "Inputs"):
 * {@code q [T, H, D]}, {@code k, v [T, Hkv, D]} as raw fp16/bf16 bits, row-major, with {@code cu_seqlens [B+1]}.
 * Instances are validated on construction and immutable by contract (the arrays are not copied).
 */
public final class PackedBatch {
    /** Head dimensions the batch model accepts; a backend may support fewer and says so. */
    public static final int[] SUPPORTED_HEAD_DIMS = {32, 64, 96, 128, 256};

    private final BatchLayout layout;
    private final DType dtype;
    private final int heads;
    private final int kvHeads;
    private final int headDim;
    private final int[] cuSeqlens;
    private final int maxSeqlen;
    private final short[] q;
    private final short[] k;
    private final short[] v;

    private PackedBatch(BatchLayout layout, int[] cuSeqlens, int maxSeqlen, short[] q, short[] k, short[] v) {
        this.layout = layout;
        this.dtype = layout.dtype();
        this.heads = layout.heads();
        this.kvHeads = layout.kvHeads();
        this.headDim = layout.headDim();
        this.cuSeqlens = cuSeqlens;
        this.maxSeqlen = maxSeqlen;
        this.q = q;
        this.k = k;
        this.v = v;
    }

    /**
     * Builds a batch after checking every structural rule, with an error naming the field and value.
     * Values are not scanned for NaN/Inf here; call {@link #checkFinite()} for that.
     */
    public static PackedBatch of(DType dtype, int heads, int kvHeads, int headDim, int[] cuSeqlens, int maxSeqlen,
                                 short[] q, short[] k, short[] v) {
        return of(new BatchLayout(dtype, heads, kvHeads, headDim), cuSeqlens, maxSeqlen, q, k, v);
    }

    public static PackedBatch of(BatchLayout layout, int[] cuSeqlens, int maxSeqlen, short[] q, short[] k,
                                 short[] v) {
        checkCuSeqlens(cuSeqlens, maxSeqlen);
        int tokens = cuSeqlens[cuSeqlens.length - 1];
        int h = layout.heads();
        int hkv = layout.kvHeads();
        int d = layout.headDim();
        checkSize("q", q, (long) tokens * h * d, "T*H*D = " + tokens + "*" + h + "*" + d);
        checkSize("k", k, (long) tokens * hkv * d, "T*Hkv*D = " + tokens + "*" + hkv + "*" + d);
        checkSize("v", v, (long) tokens * hkv * d, "T*Hkv*D = " + tokens + "*" + hkv + "*" + d);
        return new PackedBatch(layout, cuSeqlens, maxSeqlen, q, k, v);
    }

    /**
     * Checks {@code cu_seqlens} and {@code max_seqlen} (docs/semantics.md "Inputs"); shared with the other varlen
     * containers.
     */
    public static void checkCuSeqlens(int[] cu, int maxSeqlen) {
        if (cu == null || cu.length < 1) {
            throw new MobaInputException("cu_seqlens must have at least one entry (B+1 >= 1)");
        }
        if (cu[0] != 0) {
            throw new MobaInputException("cu_seqlens[0] must be 0, got " + cu[0]);
        }
        if (maxSeqlen < 0) {
            throw new MobaInputException("max_seqlen must be >= 0, got " + maxSeqlen);
        }
        for (int b = 0; b + 1 < cu.length; b++) {
            int length = cu[b + 1] - cu[b];
            if (cu[b + 1] < cu[b]) {
                throw new MobaInputException("cu_seqlens decreases at sequence " + b + ": cu_seqlens[" + b + "] = "
                        + cu[b] + ", cu_seqlens[" + (b + 1) + "] = " + cu[b + 1]);
            }
            if (length > maxSeqlen) {
                throw new MobaInputException("sequence " + b + " has length " + length + ", more than max_seqlen = "
                        + maxSeqlen);
            }
        }
    }

    private static void checkSize(String field, short[] data, long expected, String formula) {
        if (data == null) {
            throw new MobaInputException(field + " is missing");
        }
        if (data.length != expected) {
            throw new MobaInputException(field + " has " + data.length + " elements, expected " + formula + " = "
                    + expected);
        }
    }

    /** Scans q, k and v for NaN or infinity; the error names the sequence, field, token and head. */
    public void checkFinite() {
        checkFinite("q", q, heads);
        checkFinite("k", k, kvHeads);
        checkFinite("v", v, kvHeads);
    }

    private void checkFinite(String field, short[] data, int fieldHeads) {
        int i = dtype.firstNonFinite(data);
        if (i >= 0) {
            int rowElems = fieldHeads * headDim;
            int token = i / rowElems;
            int b = sequenceOf(token);
            throw new MobaInputException("sequence " + b + ": " + field + " holds " + dtype.toFloat(data[i])
                    + " at token " + (token - cuSeqlens[b]) + ", head " + (i % rowElems) / headDim + ", dim "
                    + i % headDim);
        }
    }

    /** The sequence that owns global token {@code t} (the last one when zero-length sequences share a start). */
    public int sequenceOf(int token) {
        int lo = 0;
        int hi = cuSeqlens.length - 2;
        while (lo < hi) {
            int mid = (lo + hi + 1) >>> 1;
            if (cuSeqlens[mid] <= token) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        return lo;
    }

    public BatchLayout layout() {
        return layout;
    }

    public DType dtype() {
        return dtype;
    }

    public int heads() {
        return heads;
    }

    public int kvHeads() {
        return kvHeads;
    }

    /** Query heads per kv head (the GQA group size). */
    public int groupSize() {
        return heads / kvHeads;
    }

    public int headDim() {
        return headDim;
    }

    public int numSequences() {
        return cuSeqlens.length - 1;
    }

    public int totalTokens() {
        return cuSeqlens[cuSeqlens.length - 1];
    }

    public int maxSeqlen() {
        return maxSeqlen;
    }

    public int seqStart(int b) {
        return cuSeqlens[b];
    }

    public int seqLength(int b) {
        return cuSeqlens[b + 1] - cuSeqlens[b];
    }

    /** The cu_seqlens array itself (not a copy; do not modify). */
    public int[] cuSeqlens() {
        return cuSeqlens;
    }

    public short[] q() {
        return q;
    }

    public short[] k() {
        return k;
    }

    public short[] v() {
        return v;
    }

    @Override
    public String toString() {
        return "PackedBatch[" + dtype.label() + ", B=" + numSequences() + ", T=" + totalTokens() + ", H=" + heads
                + ", Hkv=" + kvHeads + ", D=" + headDim + ", max_seqlen=" + maxSeqlen + "]";
    }
}
