package org.moba.kernels;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * A packed variable-length batch in the FlashAttention "varlen" layout (docs/semantics.md "Inputs"):
 * {@code q [T, H, D]}, {@code k, v [T, Hkv, D]} as raw fp16/bf16 bits, row-major, with {@code cu_seqlens [B+1]}.
 * Instances are validated on construction and immutable by contract (the arrays are not copied).
 *
 * <p>The tensors live either in Java arrays ({@link #of}) or in little-endian byte buffers, typically direct ones
 * filled straight from a file ({@link #ofBuffers}): a device backend copies buffers to the device as they are
 * ({@link #qBytes()}), while code that needs arrays gets them from {@link #q()}, converted once on first use.
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
    private short[] q;
    private short[] k;
    private short[] v;
    /** The tensors' little-endian bytes when the batch was built from buffers, else null. */
    private final ByteBuffer qBuffer;
    private final ByteBuffer kBuffer;
    private final ByteBuffer vBuffer;

    private PackedBatch(BatchLayout layout, int[] cuSeqlens, int maxSeqlen, short[] q, short[] k, short[] v) {
        this(layout, cuSeqlens, maxSeqlen, q, k, v, null, null, null);
    }

    private PackedBatch(BatchLayout layout, int[] cuSeqlens, int maxSeqlen, short[] q, short[] k, short[] v,
                        ByteBuffer qBuffer, ByteBuffer kBuffer, ByteBuffer vBuffer) {
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
        this.qBuffer = qBuffer;
        this.kBuffer = kBuffer;
        this.vBuffer = vBuffer;
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
        checkShape(layout, cuSeqlens, maxSeqlen, (field, elements, formula) -> checkSize(field,
                field.equals("q") ? q : field.equals("k") ? k : v, elements, formula));
        return new PackedBatch(layout, cuSeqlens, maxSeqlen, q, k, v);
    }

    /**
     * A batch over little-endian 16-bit tensors in byte buffers (heap or direct), each from its position to its
     * limit, with the same checks as {@link #of}. The buffers are not copied: do not change them while the batch is
     * in use.
     */
    public static PackedBatch ofBuffers(BatchLayout layout, int[] cuSeqlens, int maxSeqlen, ByteBuffer q,
                                        ByteBuffer k, ByteBuffer v) {
        checkShape(layout, cuSeqlens, maxSeqlen, (field, elements, formula) -> checkBytes(field,
                field.equals("q") ? q : field.equals("k") ? k : v, elements, formula));
        return new PackedBatch(layout, cuSeqlens, maxSeqlen, null, null, null, littleEndian(q), littleEndian(k),
                littleEndian(v));
    }

    /** Checks one tensor's size: {@code elements} expected, by {@code formula} (for the message). */
    private interface TensorSize {
        void check(String field, long elements, String formula);
    }

    /** Checks cu_seqlens and max_seqlen, then q's and k's and v's sizes against the layout's. */
    private static void checkShape(BatchLayout layout, int[] cuSeqlens, int maxSeqlen, TensorSize size) {
        checkCuSeqlens(cuSeqlens, maxSeqlen);
        int tokens = cuSeqlens[cuSeqlens.length - 1];
        int h = layout.heads();
        int hkv = layout.kvHeads();
        int d = layout.headDim();
        size.check("q", (long) tokens * h * d, "T*H*D = " + tokens + "*" + h + "*" + d);
        size.check("k", (long) tokens * hkv * d, "T*Hkv*D = " + tokens + "*" + hkv + "*" + d);
        size.check("v", (long) tokens * hkv * d, "T*Hkv*D = " + tokens + "*" + hkv + "*" + d);
    }

    private static ByteBuffer littleEndian(ByteBuffer b) {
        return b.slice().order(ByteOrder.LITTLE_ENDIAN);
    }

    private static void checkBytes(String field, ByteBuffer data, long expectedElements, String formula) {
        if (data == null) {
            throw new MobaInputException(field + " is missing");
        }
        if (data.remaining() != 2 * expectedElements) {
            throw new MobaInputException(field + " has " + data.remaining() + " bytes, expected 2 x (" + formula
                    + " = " + expectedElements + ") = " + 2 * expectedElements);
        }
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
        if (qBuffer != null) {
            checkFinite("q", qBuffer, heads);
            checkFinite("k", kBuffer, kvHeads);
            checkFinite("v", vBuffer, kvHeads);
        } else {
            checkFinite("q", q, heads);
            checkFinite("k", k, kvHeads);
            checkFinite("v", v, kvHeads);
        }
    }

    private void checkFinite(String field, short[] data, int fieldHeads) {
        int i = dtype.firstNonFinite(data);
        if (i >= 0) {
            throw nonFinite(field, i, data[i], fieldHeads);
        }
    }

    private void checkFinite(String field, ByteBuffer data, int fieldHeads) {
        int i = dtype.firstNonFinite(data);
        if (i >= 0) {
            throw nonFinite(field, i, data.getShort(2 * i), fieldHeads);
        }
    }

    private MobaInputException nonFinite(String field, int element, short bits, int fieldHeads) {
        int rowElems = fieldHeads * headDim;
        int token = element / rowElems;
        int b = sequenceOf(token);
        return new MobaInputException("sequence " + b + ": " + field + " holds " + dtype.toFloat(bits)
                + " at token " + (token - cuSeqlens[b]) + ", head " + (element % rowElems) / headDim + ", dim "
                + element % headDim);
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

    /** q as an array; for a batch built from buffers, converted on the first call (a copy of the buffer). */
    public synchronized short[] q() {
        if (q == null) {
            q = shorts(qBuffer);
        }
        return q;
    }

    /** k as an array (see {@link #q()}). */
    public synchronized short[] k() {
        if (k == null) {
            k = shorts(kBuffer);
        }
        return k;
    }

    /** v as an array (see {@link #q()}). */
    public synchronized short[] v() {
        if (v == null) {
            v = shorts(vBuffer);
        }
        return v;
    }

    private static short[] shorts(ByteBuffer littleEndian) {
        short[] out = new short[littleEndian.remaining() / 2];
        littleEndian.duplicate().order(ByteOrder.LITTLE_ENDIAN).asShortBuffer().get(out);
        return out;
    }

    /** Whether the tensors live in byte buffers ({@link #ofBuffers}) rather than arrays. */
    public boolean inBuffers() {
        return qBuffer != null;
    }

    /** q's little-endian bytes: a read-only view of the batch's own buffer, or a copy of the array as bytes. */
    public ByteBuffer qBytes() {
        return bytes(qBuffer, q);
    }

    public ByteBuffer kBytes() {
        return bytes(kBuffer, k);
    }

    public ByteBuffer vBytes() {
        return bytes(vBuffer, v);
    }

    private static ByteBuffer bytes(ByteBuffer buffer, short[] array) {
        if (buffer != null) {
            return buffer.asReadOnlyBuffer().order(ByteOrder.LITTLE_ENDIAN);
        }
        ByteBuffer b = ByteBuffer.allocate(2 * array.length).order(ByteOrder.LITTLE_ENDIAN);
        b.asShortBuffer().put(array);
        return b;
    }

    /** Elements of q: {@code T x H x D}. */
    public long qElements() {
        return (long) totalTokens() * heads * headDim;
    }

    /** Elements of k (and of v): {@code T x Hkv x D}. */
    public long kvElements() {
        return (long) totalTokens() * kvHeads * headDim;
    }

    @Override
    public String toString() {
        return "PackedBatch[" + dtype.label() + ", B=" + numSequences() + ", T=" + totalTokens() + ", H=" + heads
                + ", Hkv=" + kvHeads + ", D=" + headDim + ", max_seqlen=" + maxSeqlen + "]";
    }
}
