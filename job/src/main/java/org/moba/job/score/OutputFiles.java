package org.moba.job.score;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.moba.kernels.BatchLayout;

/**
 * One batch's outputs as one safetensors file: {@code out [T, H, D]} in the batch's dtype, {@code lse [T, H]} F32,
 * {@code cu_seqlens [B+1]} I32 and the sequences' ids as a JSON list under the metadata key {@value #IDS_KEY}. The
 * file is written under a hidden temporary name and renamed into place, so a reader never sees half a file and a
 * retried task (same partition, same batches, bit-identical outputs) replaces it with the same bytes.
 */
public final class OutputFiles {
    /** The metadata key holding the sequences' ids, in batch order. */
    public static final String IDS_KEY = "ids";
    private static final ObjectMapper JSON = new ObjectMapper();

    private OutputFiles() {
    }

    /** Where a written file's tensors start: sequence b's out is at {@code outStart + cu[b] x H x D x 2}. */
    public record Written(long outStart, long lseStart) {
        /** {@code [out, lse]} positions of the sequence starting at token {@code start}. */
        public long[] positions(BatchLayout layout, int start) {
            return new long[] {outStart + 2L * start * layout.qElementsPerToken(),
                    lseStart + 4L * start * layout.heads()};
        }
    }

    /**
     * Lays out {@code folder/name} (header and tensor positions known at once, so rows can point into the file before
     * it is written) and returns the file; {@link File#write} writes it.
     *
     * @param out little-endian bits of {@code [T, H, D]}
     * @param lse {@code [T, H]}
     */
    public static File of(String folder, String name, BatchLayout layout, int[] cuSeqlens, List<String> ids,
                          short[] out, float[] lse) throws IOException {
        int t = cuSeqlens[cuSeqlens.length - 1];
        List<Safetensors.Tensor> tensors = List.of(
                new Safetensors.Tensor("out", Safetensors.dtype(layout.dtype()),
                        new long[] {t, layout.heads(), layout.headDim()}, ByteBuffer.wrap(TensorRecord.bytes(out))),
                new Safetensors.Tensor("lse", "F32", new long[] {t, layout.heads()},
                        ByteBuffer.wrap(TensorRecord.bytes(lse))),
                Safetensors.cuSeqlens(cuSeqlens));
        Map<String, String> metadata = Map.of(IDS_KEY, JSON.writeValueAsString(ids));
        long[] starts = Safetensors.write(OutputStream.nullOutputStream(), tensors, metadata);
        return new File(folder, name, tensors, metadata, new Written(starts[0], starts[1]));
    }

    /** A laid-out output file: where its tensors will be, and how to write it. */
    public record File(String folder, String name, List<Safetensors.Tensor> tensors, Map<String, String> metadata,
                       Written layout) {
        /**
         * Writes the file under a hidden temporary name of this {@code attempt}, then renames it into place
         * (replacing an earlier attempt's file, which holds the same bytes).
         */
        public void write(Configuration hadoop, String attempt) throws IOException {
            Path target = new Path(folder, name);
            Path temporary = new Path(folder, "." + name + "." + attempt + ".tmp");
            FileSystem fs = target.getFileSystem(hadoop);
            try (FSDataOutputStream os = fs.create(temporary, true)) {
                Safetensors.write(os, tensors, metadata);
            }
            if (fs.exists(target)) {
                fs.delete(target, false);
            }
            if (!fs.rename(temporary, target)) {
                throw new IOException("could not rename " + temporary + " to " + target);
            }
        }
    }
}
