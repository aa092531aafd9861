package org.moba.job.score;

import java.io.Serializable;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.SequencePacker;

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
     * Validates the record as stored, without converting it: every problem becomes a {@link BadRecordException}
     * naming the record id, the field and the value. A valid record's bytes go straight into a batch
     * ({@link #pack}).
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
            long qBytes = 2L * length * layout.qElementsPerToken();
            long kvBytes = 2L * length * layout.kvElementsPerToken();
            checkBytes("q", q, qBytes);
            checkBytes("k", k, kvBytes);
            checkBytes("v", v, kvBytes);
            if (checkFinite) {
                checkFinite(layout.dtype(), "q", q, layout.heads());
                checkFinite(layout.dtype(), "k", k, layout.kvHeads());
                checkFinite(layout.dtype(), "v", v, layout.kvHeads());
            }
        } catch (MobaInputException e) {
            throw new BadRecordException(id, e.getMessage());
        }
    }

    /**
     * Packs {@link #validate validated} records of one {@code layout} into one batch, in order, copying their bytes
     * straight into the batch's arrays (as {@link SequencePacker#concat} does with decoded sequences, without the
     * per-record arrays in between).
     */
    public static SequencePacker.Packed pack(List<TensorRecord> records, BatchLayout layout) {
        int qRow = layout.qElementsPerToken();
        int kvRow = layout.kvElementsPerToken();
        int[] cu = new int[records.size() + 1];
        long total = 0;
        int maxLen = 0;
        for (int i = 0; i < records.size(); i++) {
            TensorRecord r = records.get(i);
            total += r.length();
            if (total > Integer.MAX_VALUE / Math.max(qRow, 1)) {
                throw new MobaInputException("sequence '" + r.id() + "': batch of " + total
                        + " tokens exceeds the largest array a batch can hold; lower the token budget");
            }
            cu[i + 1] = (int) total;
            maxLen = Math.max(maxLen, r.length());
        }
        int tokens = (int) total;
        short[] q = new short[tokens * qRow];
        short[] k = new short[tokens * kvRow];
        short[] v = new short[tokens * kvRow];
        List<String> ids = new ArrayList<>(records.size());
        for (int i = 0; i < records.size(); i++) {
            TensorRecord r = records.get(i);
            copyShorts(r.q(), q, cu[i] * qRow);
            copyShorts(r.k(), k, cu[i] * kvRow);
            copyShorts(r.v(), v, cu[i] * kvRow);
            ids.add(r.id());
        }
        return new SequencePacker.Packed(PackedBatch.of(layout, cu, maxLen, q, k, v), ids);
    }

    private static void copyShorts(byte[] littleEndian, short[] dst, int at) {
        ByteBuffer.wrap(littleEndian).order(ByteOrder.LITTLE_ENDIAN).asShortBuffer().get(dst, at,
                littleEndian.length / 2);
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

    private void checkFinite(DType dt, String field, byte[] data, int fieldHeads) {
        int i = dt.firstNonFinite(data);
        if (i >= 0) {
            short bits = (short) ((data[2 * i] & 0xFF) | (data[2 * i + 1] & 0xFF) << 8);
            throw new MobaInputException(field + " holds " + dt.toFloat(bits) + " at token "
                    + i / (fieldHeads * headDim) + ", head " + (i / headDim) % fieldHeads + ", dim " + i % headDim);
        }
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
