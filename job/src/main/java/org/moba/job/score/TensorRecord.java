package org.moba.job.score;

import java.io.Serializable;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.Sequence;

/**
 * One stored sequence as read from Parquet or safetensors: its id, declared shape and the raw little-endian bytes
 * of {@code q [L, H, D]}, {@code k, v [L, Hkv, D]}.
 */
public record TensorRecord(String id, int length, String dtype, int heads, int kvHeads, int headDim, byte[] q,
                           byte[] k, byte[] v, String problem) implements Serializable {

    public static TensorRecord of(String id, int length, String dtype, int heads, int kvHeads, int headDim, byte[] q,
                                  byte[] k, byte[] v) {
        return new TensorRecord(id, length, dtype, heads, kvHeads, headDim, q, k, v, null);
    }

    /** A record whose container was already found unreadable (e.g. a safetensors file with bad cu_seqlens). */
    public static TensorRecord broken(String id, String problem) {
        return new TensorRecord(id, -1, null, 0, 0, 0, null, null, null, problem);
    }

    /**
     * Decodes and validates the record; every problem becomes a {@link BadRecordException} naming the record id,
     * the field and the value.
     */
    public Sequence decode(boolean checkFinite) {
        if (problem != null) {
            throw new BadRecordException(id, problem);
        }
        try {
            if (length < 0) {
                throw new MobaInputException("length must be >= 0, got " + length);
            }
            BatchLayout layout = layout();
            long qBytes = 2L * length * layout.qElementsPerToken();
            long kvBytes = 2L * length * layout.kvElementsPerToken();
            checkBytes("q", q, qBytes);
            checkBytes("k", k, kvBytes);
            checkBytes("v", v, kvBytes);
            Sequence s = new Sequence(id, length, shorts(q), shorts(k), shorts(v));
            if (checkFinite) {
                checkFinite(layout.dtype(), "q", s.q(), layout.heads());
                checkFinite(layout.dtype(), "k", s.k(), layout.kvHeads());
                checkFinite(layout.dtype(), "v", s.v(), layout.kvHeads());
            }
            return s;
        } catch (MobaInputException e) {
            throw new BadRecordException(id, e.getMessage());
        }
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

    private void checkFinite(DType dt, String field, short[] data, int fieldHeads) {
        int i = dt.firstNonFinite(data);
        if (i >= 0) {
            throw new MobaInputException(field + " holds " + dt.toFloat(data[i]) + " at token "
                    + i / (fieldHeads * headDim) + ", head " + (i / headDim) % fieldHeads + ", dim " + i % headDim);
        }
    }

    static short[] shorts(byte[] bytes) {
        short[] out = new short[bytes.length / 2];
        ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asShortBuffer().get(out);
        return out;
    }

    static byte[] bytes(short[] values) {
        return bytes(values, 0, values.length);
    }

    static byte[] bytes(float[] values) {
        return bytes(values, 0, values.length);
    }

    /** {@code values[from, from + count)} as little-endian bytes. */
    static byte[] bytes(short[] values, int from, int count) {
        ByteBuffer b = ByteBuffer.allocate(count * 2).order(ByteOrder.LITTLE_ENDIAN);
        b.asShortBuffer().put(values, from, count);
        return b.array();
    }

    /** {@code values[from, from + count)} as little-endian bytes. */
    static byte[] bytes(float[] values, int from, int count) {
        ByteBuffer b = ByteBuffer.allocate(count * 4).order(ByteOrder.LITTLE_ENDIAN);
        b.asFloatBuffer().put(values, from, count);
        return b.array();
    }
}
