package org.moba.job.score;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.PackedBatch;

/**
 * Reads and writes the {@code score} job's safetensors layout: one file holds a packed batch, tensors {@code q}
 * {@code [T, H, D]}, {@code k}, {@code v} {@code [T, Hkv, D]} (F16 or BF16) and optionally {@code cu_seqlens}
 * (I32 {@code [B+1]}; without it the file is one sequence). Sequence {@code b} of file {@code name} gets the id
 * {@code name#b}. The format: an 8-byte little-endian header length, a JSON header mapping tensor names to
 * {@code dtype}, {@code shape} and {@code data_offsets}, then the data.
 */
public final class Safetensors {
    private static final ObjectMapper JSON = new ObjectMapper();

    private Safetensors() {
    }

    /** Splits one file into records; a file that cannot be read yields one broken record naming the problem. */
    public static List<TensorRecord> read(String name, byte[] file) {
        try {
            return parse(name, file);
        } catch (IOException | RuntimeException e) {
            return List.of(TensorRecord.broken(name, "unreadable safetensors file: " + e.getMessage()));
        }
    }

    private static List<TensorRecord> parse(String name, byte[] file) throws IOException {
        if (file.length < 8) {
            throw new MobaInputException("file has " + file.length + " bytes, less than its 8-byte header length");
        }
        long headerLength = ByteBuffer.wrap(file, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        if (headerLength < 2 || 8 + headerLength > file.length) {
            throw new MobaInputException("header length " + headerLength + " does not fit the file's "
                    + file.length + " bytes");
        }
        JsonNode header = JSON.readTree(new String(file, 8, (int) headerLength, StandardCharsets.UTF_8));
        int dataStart = 8 + (int) headerLength;
        JsonNode q = tensor(header, "q");
        String dtype = q.get("dtype").asText();
        String dt = switch (dtype.toUpperCase(Locale.ROOT)) {
            case "F16" -> "fp16";
            case "BF16" -> "bf16";
            default -> throw new MobaInputException("q has unsupported dtype " + dtype + " (supported: F16, BF16)");
        };
        long[] qShape = shape(q, "q", 3);
        long[] kShape = shape(tensor(header, "k"), "k", 3);
        long[] vShape = shape(tensor(header, "v"), "v", 3);
        if (!Arrays.equals(kShape, vShape) || kShape[0] != qShape[0] || kShape[2] != qShape[2]) {
            throw new MobaInputException("shapes disagree: q " + Arrays.toString(qShape) + ", k "
                    + Arrays.toString(kShape) + ", v " + Arrays.toString(vShape));
        }
        for (String t : new String[] {"k", "v"}) {
            if (!tensor(header, t).get("dtype").asText().equals(dtype)) {
                throw new MobaInputException(t + " has dtype " + tensor(header, t).get("dtype").asText()
                        + ", q has " + dtype);
            }
        }
        int tokens = (int) qShape[0];
        int[] cu = header.has("cu_seqlens") ? cuSeqlens(header.get("cu_seqlens"), file, dataStart)
                : new int[] {0, tokens};
        BatchLayout layout = new BatchLayout(org.moba.kernels.DType.parse(dt), (int) qShape[1], (int) kShape[1],
                (int) qShape[2]);
        int maxLen = 0;
        for (int b = 0; b + 1 < cu.length; b++) {
            maxLen = Math.max(maxLen, cu[b + 1] - cu[b]);
        }
        byte[] qb = bytes(q, file, dataStart);
        byte[] kb = bytes(tensor(header, "k"), file, dataStart);
        byte[] vb = bytes(tensor(header, "v"), file, dataStart);
        // Validates cu_seqlens and sizes against T with the batch model's own rules and messages.
        PackedBatch batch = PackedBatch.of(layout, cu, maxLen, TensorRecord.shorts(qb), TensorRecord.shorts(kb),
                TensorRecord.shorts(vb));
        List<TensorRecord> out = new ArrayList<>();
        int qRow = layout.qElementsPerToken() * 2;
        int kvRow = layout.kvElementsPerToken() * 2;
        for (int b = 0; b < batch.numSequences(); b++) {
            int s = batch.seqStart(b);
            int e = s + batch.seqLength(b);
            out.add(TensorRecord.of(name + "#" + b, e - s, dt, layout.heads(), layout.kvHeads(), layout.headDim(),
                    Arrays.copyOfRange(qb, s * qRow, e * qRow), Arrays.copyOfRange(kb, s * kvRow, e * kvRow),
                    Arrays.copyOfRange(vb, s * kvRow, e * kvRow)));
        }
        return out;
    }

    private static JsonNode tensor(JsonNode header, String name) {
        JsonNode t = header.get(name);
        if (t == null || !t.has("dtype") || !t.has("shape") || !t.has("data_offsets")) {
            throw new MobaInputException("tensor '" + name + "' is missing or lacks dtype/shape/data_offsets");
        }
        return t;
    }

    private static long[] shape(JsonNode t, String name, int rank) {
        JsonNode s = t.get("shape");
        if (s.size() != rank) {
            throw new MobaInputException(name + " has shape " + s + ", expected rank " + rank);
        }
        long[] out = new long[rank];
        for (int i = 0; i < rank; i++) {
            out[i] = s.get(i).asLong();
        }
        return out;
    }

    private static byte[] bytes(JsonNode t, byte[] file, int dataStart) {
        long begin = t.get("data_offsets").get(0).asLong();
        long end = t.get("data_offsets").get(1).asLong();
        if (begin < 0 || end < begin || dataStart + end > file.length) {
            throw new MobaInputException("data_offsets " + t.get("data_offsets") + " fall outside the file");
        }
        return Arrays.copyOfRange(file, dataStart + (int) begin, dataStart + (int) end);
    }

    private static int[] cuSeqlens(JsonNode t, byte[] file, int dataStart) {
        if (!t.get("dtype").asText().equals("I32")) {
            throw new MobaInputException("cu_seqlens has dtype " + t.get("dtype").asText() + ", expected I32");
        }
        byte[] raw = bytes(t, file, dataStart);
        int[] cu = new int[raw.length / 4];
        ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN).asIntBuffer().get(cu);
        return cu;
    }

    /** Writes a packed batch in this layout (used by {@code gen} and tests). */
    public static byte[] write(PackedBatch batch) throws IOException {
        String dt = batch.dtype() == org.moba.kernels.DType.FP16 ? "F16" : "BF16";
        byte[] q = TensorRecord.bytes(batch.q());
        byte[] k = TensorRecord.bytes(batch.k());
        byte[] v = TensorRecord.bytes(batch.v());
        ByteBuffer cuBuf = ByteBuffer.allocate(batch.cuSeqlens().length * 4).order(ByteOrder.LITTLE_ENDIAN);
        cuBuf.asIntBuffer().put(batch.cuSeqlens());
        byte[] cu = cuBuf.array();
        ObjectNode header = JSON.createObjectNode();
        long offset = 0;
        int t = batch.totalTokens();
        offset = entry(header, "q", dt, new long[] {t, batch.heads(), batch.headDim()}, offset, q.length);
        offset = entry(header, "k", dt, new long[] {t, batch.kvHeads(), batch.headDim()}, offset, k.length);
        offset = entry(header, "v", dt, new long[] {t, batch.kvHeads(), batch.headDim()}, offset, v.length);
        entry(header, "cu_seqlens", "I32", new long[] {cu.length / 4}, offset, cu.length);
        byte[] json = JSON.writeValueAsBytes(header);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(json.length).array());
        out.write(json);
        out.write(q);
        out.write(k);
        out.write(v);
        out.write(cu);
        return out.toByteArray();
    }

    private static long entry(ObjectNode header, String name, String dtype, long[] shape, long offset, int bytes) {
        ObjectNode e = header.putObject(name);
        e.put("dtype", dtype);
        var s = e.putArray("shape");
        for (long d : shape) {
            s.add(d);
        }
        var o = e.putArray("data_offsets");
        o.add(offset);
        o.add(offset + bytes);
        return offset + bytes;
    }
}
