package org.moba.job.score;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.channels.Channels;
import java.nio.channels.WritableByteChannel;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.PackedBatch;

/**
 * Reads and writes the {@code score} job's safetensors layout: one file holds a packed batch, tensors {@code q}
 * {@code [T, H, D]}, {@code k}, {@code v} {@code [T, Hkv, D]} (F16 or BF16) and optionally {@code cu_seqlens}
 * (I32 {@code [B+1]}; without it the file is one sequence). Sequence {@code b} of file {@code name} gets the id
 * {@code name#b}. The format: an 8-byte little-endian header length, a JSON header mapping tensor names to
 * {@code dtype}, {@code shape} and {@code data_offsets}, then the data. Reading takes the header only
 * ({@link #describe}): the tensors stay in the file until a task reads its sequences' byte ranges.
 */
public final class Safetensors {
    private static final ObjectMapper JSON = new ObjectMapper();
    /** Headers above this size are refused rather than read into memory. */
    private static final long MAX_HEADER = 100L << 20;

    private Safetensors() {
    }

    /**
     * What one file holds: the layout of its tensors, its {@code cu_seqlens} and the absolute byte positions where
     * q, k and v begin. Sequence {@code b}'s q lies at {@code qStart + cu[b] x qRowBytes}, for {@code length x
     * qRowBytes} bytes; k and v likewise with the kv row.
     */
    public record Contents(BatchLayout layout, int[] cuSeqlens, long qStart, long kStart, long vStart)
            implements java.io.Serializable {
        public int sequences() {
            return cuSeqlens.length - 1;
        }

        public int length(int b) {
            return cuSeqlens[b + 1] - cuSeqlens[b];
        }

        /** Where sequence {@code b}'s q, k and v start in the file. */
        public long[] positions(int b) {
            long qRow = 2L * layout.qElementsPerToken();
            long kvRow = 2L * layout.kvElementsPerToken();
            return new long[] {qStart + cuSeqlens[b] * qRow, kStart + cuSeqlens[b] * kvRow,
                    vStart + cuSeqlens[b] * kvRow};
        }
    }

    /**
     * Reads a file's header (and cu_seqlens) and checks that its tensors agree with each other and lie inside the
     * file, with the batch model's own rules and messages for cu_seqlens.
     *
     * @throws IOException        when the file cannot be read
     * @throws MobaInputException when the header does not describe a valid batch
     */
    public static Contents describe(FileRanges file) throws IOException {
        long fileLength = file.length();
        if (fileLength < 8) {
            throw new MobaInputException("file has " + fileLength + " bytes, less than its 8-byte header length");
        }
        long headerLength = read(file, 0, 8).getLong();
        if (headerLength < 2 || headerLength > MAX_HEADER || 8 + headerLength > fileLength) {
            throw new MobaInputException("header length " + headerLength + " does not fit the file's "
                    + fileLength + " bytes");
        }
        ByteBuffer headerBytes = read(file, 8, (int) headerLength);
        JsonNode header = JSON.readTree(new String(headerBytes.array(), StandardCharsets.UTF_8));
        long dataStart = 8 + headerLength;
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
        int tokens = Math.toIntExact(qShape[0]);
        BatchLayout layout = new BatchLayout(org.moba.kernels.DType.parse(dt), Math.toIntExact(qShape[1]),
                Math.toIntExact(kShape[1]), Math.toIntExact(qShape[2]));
        long qStart = start(q, "q", 2L * tokens * layout.qElementsPerToken(), dataStart, fileLength);
        long kStart = start(tensor(header, "k"), "k", 2L * tokens * layout.kvElementsPerToken(), dataStart,
                fileLength);
        long vStart = start(tensor(header, "v"), "v", 2L * tokens * layout.kvElementsPerToken(), dataStart,
                fileLength);
        int[] cu = header.has("cu_seqlens") ? cuSeqlens(header.get("cu_seqlens"), file, dataStart, fileLength)
                : new int[] {0, tokens};
        int maxLen = 0;
        for (int b = 0; b + 1 < cu.length; b++) {
            maxLen = Math.max(maxLen, cu[b + 1] - cu[b]);
        }
        PackedBatch.checkCuSeqlens(cu, maxLen);
        if (cu[cu.length - 1] != tokens) {
            throw new MobaInputException("cu_seqlens ends at " + cu[cu.length - 1] + ", but q holds " + tokens
                    + " tokens");
        }
        return new Contents(layout, cu, qStart, kStart, vStart);
    }

    private static ByteBuffer read(FileRanges file, long position, int bytes) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(bytes);
        file.readFully(position, b);
        return b.flip().order(ByteOrder.LITTLE_ENDIAN);
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

    /** The absolute start of a tensor of {@code bytes} bytes, checked to lie inside the file. */
    private static long start(JsonNode t, String name, long bytes, long dataStart, long fileLength) {
        long begin = t.get("data_offsets").get(0).asLong();
        long end = t.get("data_offsets").get(1).asLong();
        if (begin < 0 || end < begin || dataStart + end > fileLength) {
            throw new MobaInputException(name + " has data_offsets " + t.get("data_offsets")
                    + ", outside the file's " + (fileLength - dataStart) + " data bytes");
        }
        if (end - begin != bytes) {
            throw new MobaInputException(name + " has " + (end - begin) + " bytes, expected " + bytes
                    + " for its shape " + t.get("shape"));
        }
        return dataStart + begin;
    }

    private static int[] cuSeqlens(JsonNode t, FileRanges file, long dataStart, long fileLength) throws IOException {
        if (!t.has("dtype") || !t.get("dtype").asText().equals("I32")) {
            throw new MobaInputException("cu_seqlens has dtype " + t.get("dtype") + ", expected I32");
        }
        long count = shape(t, "cu_seqlens", 1)[0];
        long start = start(t, "cu_seqlens", 4 * count, dataStart, fileLength);
        int[] cu = new int[Math.toIntExact(count)];
        read(file, start, 4 * cu.length).asIntBuffer().get(cu);
        return cu;
    }

    /** Writes a packed batch in this layout (used by {@code gen} and tests). */
    public static byte[] write(PackedBatch batch) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        write(batch, out);
        return out.toByteArray();
    }

    /** Writes a packed batch in this layout to {@code out}, tensor by tensor (no copy of the whole file). */
    public static void write(PackedBatch batch, OutputStream out) throws IOException {
        String dt = dtype(batch.dtype());
        int t = batch.totalTokens();
        write(out, List.of(new Tensor("q", dt, new long[] {t, batch.heads(), batch.headDim()}, batch.qBytes()),
                new Tensor("k", dt, new long[] {t, batch.kvHeads(), batch.headDim()}, batch.kBytes()),
                new Tensor("v", dt, new long[] {t, batch.kvHeads(), batch.headDim()}, batch.vBytes()),
                cuSeqlens(batch.cuSeqlens())), Map.of());
    }

    /** The {@code cu_seqlens} tensor (I32 {@code [B+1]}) of a file. */
    public static Tensor cuSeqlens(int[] cuSeqlens) {
        ByteBuffer cu = ByteBuffer.allocate(cuSeqlens.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        cu.asIntBuffer().put(cuSeqlens);
        return new Tensor("cu_seqlens", "I32", new long[] {cuSeqlens.length}, cu);
    }

    /** The safetensors name of a 16-bit type. */
    public static String dtype(org.moba.kernels.DType dtype) {
        return dtype == org.moba.kernels.DType.FP16 ? "F16" : "BF16";
    }

    /** One tensor to write: its name, safetensors dtype ({@code F16, BF16, F32, I32}), shape and little-endian bytes
     *  (from position to limit). */
    public record Tensor(String name, String dtype, long[] shape, ByteBuffer bytes) {
    }

    /**
     * Writes {@code tensors} in order, with {@code metadata} (string values) under {@code __metadata__}; returns
     * the absolute file position where each tensor's data starts.
     */
    public static long[] write(OutputStream out, List<Tensor> tensors, Map<String, String> metadata)
            throws IOException {
        ObjectNode header = JSON.createObjectNode();
        if (!metadata.isEmpty()) {
            ObjectNode m = header.putObject("__metadata__");
            metadata.forEach(m::put);
        }
        long offset = 0;
        long[] offsets = new long[tensors.size()];
        for (int i = 0; i < tensors.size(); i++) {
            Tensor t = tensors.get(i);
            offsets[i] = offset;
            offset = entry(header, t.name(), t.dtype(), t.shape(), offset, t.bytes().remaining());
        }
        byte[] json = JSON.writeValueAsBytes(header);
        out.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(json.length).array());
        out.write(json);
        WritableByteChannel channel = Channels.newChannel(out);
        for (Tensor t : tensors) {
            ByteBuffer bytes = t.bytes().duplicate();
            while (bytes.hasRemaining()) {
                channel.write(bytes);
            }
        }
        out.flush();
        for (int i = 0; i < offsets.length; i++) {
            offsets[i] += 8 + json.length;
        }
        return offsets;
    }

    private static long entry(ObjectNode header, String name, String dtype, long[] shape, long offset, long bytes) {
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
