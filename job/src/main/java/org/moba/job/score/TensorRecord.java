package org.moba.job.score;

import java.io.Serializable;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaInputException;

/**
 * One stored sequence as read from Parquet or safetensors: its id, declared shape and its tensors {@code q [L, H,
 * D]}, {@code k, v [L, Hkv, D]} as little-endian bytes, either in the record ({@code q, k, v}) or still in a file
 * ({@code file}: a task reads them into the batch's buffers, {@link BatchLoader}).
 */
public record TensorRecord(String id, int length, String dtype, int heads, int kvHeads, int headDim, byte[] q,
                           byte[] k, byte[] v, FileTensors file, String problem) implements Serializable {

    /** Where a sequence's tensors lie in a file: its path and the byte positions where its q, k and v start. */
    public record FileTensors(String path, long qPosition, long kPosition, long vPosition) implements Serializable {
    }

    public static TensorRecord of(String id, int length, String dtype, int heads, int kvHeads, int headDim, byte[] q,
                                  byte[] k, byte[] v) {
        return new TensorRecord(id, length, dtype, heads, kvHeads, headDim, q, k, v, null, null);
    }

    /** A record whose tensors are read from {@code file} when its batch is loaded. */
    public static TensorRecord inFile(String id, int length, String dtype, int heads, int kvHeads, int headDim,
                                      FileTensors file) {
        return new TensorRecord(id, length, dtype, heads, kvHeads, headDim, null, null, null, file, null);
    }

    /** A record whose container was already found unreadable (e.g. a safetensors file with bad cu_seqlens). */
    public static TensorRecord broken(String id, String problem) {
        return new TensorRecord(id, -1, null, 0, 0, 0, null, null, null, null, problem);
    }

    /**
     * Validates the record's declared shape (including that it fits a batch's host buffers,
     * {@link BatchLoader#tooLarge}) and, for tensors held in the record, their sizes and (when asked)
     * values, without converting them: every problem becomes a {@link BadRecordException} naming the record id, the
     * field and the value. Tensors still in a file are checked once loaded ({@link #checkFinite}).
     */
    public void validate(boolean checkFinite) {
        if (problem != null) {
            throw new BadRecordException(id, problem);
        }
        try {
            if (length < 0) {
                throw new MobaInputException("length must be >= 0, got " + length);
            }
            BatchLayout layout = layout();
            String tooLarge = BatchLoader.tooLarge(length, layout);
            if (tooLarge != null) {
                throw new MobaInputException(tooLarge);
            }
            if (file != null) {
                return;
            }
            long qBytes = 2L * length * layout.qElementsPerToken();
            long kvBytes = 2L * length * layout.kvElementsPerToken();
            checkBytes("q", q, qBytes);
            checkBytes("k", k, kvBytes);
            checkBytes("v", v, kvBytes);
        } catch (MobaInputException e) {
            throw new BadRecordException(id, e.getMessage());
        }
        if (checkFinite) {
            checkFinite(ByteBuffer.wrap(q), ByteBuffer.wrap(k), ByteBuffer.wrap(v));
        }
    }

    /**
     * Checks this record's tensors, as {@code q}, {@code k}, {@code v} buffers of little-endian values (each from
     * its position to its limit), for NaN and infinity; the {@link BadRecordException} names the field, token,
     * head and dim.
     */
    public void checkFinite(ByteBuffer q, ByteBuffer k, ByteBuffer v) {
        DType dt = layout().dtype();
        checkFinite(dt, "q", q, heads);
        checkFinite(dt, "k", k, kvHeads);
        checkFinite(dt, "v", v, kvHeads);
    }

    public BatchLayout layout() {
        return new BatchLayout(DType.parse(dtype == null ? "<missing>" : dtype), heads, kvHeads, headDim);
    }

    private void checkBytes(String field, byte[] data, long expected) {
        if (data == null) {
            throw new MobaInputException(field + " is missing");
        }
        if (data.length != expected) {
            throw new MobaInputException(field + " has " + data.length + " bytes, expected " + expected + " (length "
                    + length + " x " + (field.equals("q") ? "heads " + heads : "kv_heads " + kvHeads) + " x head_dim "
                    + headDim + " x 2 bytes)");
        }
    }

    private void checkFinite(DType dt, String field, ByteBuffer data, int fieldHeads) {
        int i = dt.firstNonFinite(data);
        if (i >= 0) {
            throw nonFinite(field, data, i);
        }
    }

    /**
     * The bad-record error for the non-finite value at element {@code index} of {@code field} ({@code q}, {@code k}
     * or {@code v}), whose little-endian values {@code data} holds from its position: names the value, token, head
     * and dim.
     */
    public BadRecordException nonFinite(String field, ByteBuffer data, int index) {
        DType dt = layout().dtype();
        int fieldHeads = field.equals("q") ? heads : kvHeads;
        short bits = data.duplicate().order(ByteOrder.LITTLE_ENDIAN).getShort(data.position() + 2 * index);
        return new BadRecordException(id, field + " holds " + dt.toFloat(bits) + " at token "
                + index / (fieldHeads * headDim) + ", head " + (index / headDim) % fieldHeads + ", dim "
                + index % headDim);
    }

    public static short[] shorts(byte[] bytes) {
        short[] out = new short[bytes.length / 2];
        ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asShortBuffer().get(out);
        return out;
    }

    public static byte[] bytes(short[] values) {
        return bytes(values, 0, values.length);
    }

    public static byte[] bytes(float[] values) {
        return bytes(values, 0, values.length);
    }

    /** {@code values[from, from + count)} as little-endian bytes. */
    public static byte[] bytes(short[] values, int from, int count) {
        ByteBuffer b = ByteBuffer.allocate(count * 2).order(ByteOrder.LITTLE_ENDIAN);
        b.asShortBuffer().put(values, from, count);
        return b.array();
    }

    /** {@code values[from, from + count)} as little-endian bytes. */
    public static byte[] bytes(float[] values, int from, int count) {
        ByteBuffer b = ByteBuffer.allocate(count * 4).order(ByteOrder.LITTLE_ENDIAN);
        b.asFloatBuffer().put(values, from, count);
        return b.array();
    }
}
