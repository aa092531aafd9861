package org.moba.job.score;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.HostMemory;
import org.moba.kernels.MobaAttention;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.PackedBatch;

/**
 * Loads records of one layout into one packed batch whose tensors live in direct host buffers (one per tensor)
 * ({@link PackedBatch#ofBuffers}): bytes held in a record are copied in once; bytes still in a file are read
 * straight into place ({@link FileRanges}), with no array per record. Each record is checked where it landed (size,
 * and NaN/infinity when asked); a bad one is rejected or, with {@code failOnBad}, stops the load. Keeps the files it
 * reads open until {@link #close()}. One thread at a time.
 */
public final class BatchLoader implements AutoCloseable {
    private final Configuration hadoop;
    private final boolean checkFinite;
    private final boolean failOnBad;
    private final HostBuffers buffers;
    private final HostMemory memory;
    private final Map<String, FileRanges> open = new HashMap<>();

    /** A record that did not make it into the batch, and why. */
    public record Rejected(int index, String reason) {
    }

    /**
     * The loaded batch (null when every record was rejected), the indexes of the records it holds, in order, and
     * the rejected ones. {@link #release()} gives the buffers back once the batch has run.
     */
    public record Loaded(PackedBatch batch, List<Integer> kept, List<Rejected> rejected, long bytes,
                         List<ByteBuffer> buffers, HostBuffers owner) {
        public void release() {
            buffers.forEach(owner::give);
        }
    }

    /**
     * Why a record of {@code length} tokens cannot be loaded at all, or null: its q must fit one host buffer
     * ({@link HostBuffers#MAX_BYTES}; k and v are no larger). Part of {@link TensorRecord#validate}, so that such
     * a record is a bad record, not a failed batch.
     */
    public static String tooLarge(int length, BatchLayout layout) {
        long bytes = 2L * length * layout.qElementsPerToken();
        return bytes <= HostBuffers.MAX_BYTES ? null : "q of " + length + " tokens x " + layout.heads()
                + " heads x " + layout.headDim() + " dims x 2 bytes = " + bytes + " bytes exceeds the "
                + HostBuffers.MAX_BYTES + " bytes one host buffer holds";
    }

    /**
     * @param buffers where the batches' host buffers come from
     * @param memory  the backend's page locking ({@link MobaAttention#hostMemory()}): buffers are locked by it, so
     *                that the backend uploads straight from them; {@link HostMemory#PAGEABLE} where nothing uploads
     */
    public BatchLoader(Configuration hadoop, boolean checkFinite, boolean failOnBad, HostBuffers buffers,
                       HostMemory memory) {
        this.hadoop = hadoop;
        this.checkFinite = checkFinite;
        this.failOnBad = failOnBad;
        this.buffers = buffers;
        this.memory = memory;
    }

    /**
     * Loads {@code records}, all {@link TensorRecord#validate validated} and of {@code layout}, into one batch.
     *
     * @throws BadRecordException with {@code failOnBad}, for the first record that cannot be read or holds a
     *                            non-finite value
     */
    public Loaded load(List<TensorRecord> records, BatchLayout layout) {
        long qRow = 2L * layout.qElementsPerToken();
        long kvRow = 2L * layout.kvElementsPerToken();
        long tokens = records.stream().mapToLong(TensorRecord::length).sum();
        if (tokens * qRow > HostBuffers.MAX_BYTES) {
            throw new MobaInputException("sequence '" + records.get(0).id() + "': batch of " + tokens
                    + " tokens exceeds the " + HostBuffers.MAX_BYTES + " bytes of q one host buffer holds; lower"
                    + " the token budget");
        }
        List<ByteBuffer> taken = new ArrayList<>(3);
        boolean done = false;
        try {
            ByteBuffer q = take(taken, tokens * qRow);
            ByteBuffer k = take(taken, tokens * kvRow);
            ByteBuffer v = take(taken, tokens * kvRow);
            List<Integer> kept = new ArrayList<>();
            List<Rejected> rejected = new ArrayList<>();
            List<Integer> cu = new ArrayList<>(List.of(0));
            int at = 0;
            int maxLen = 0;
            for (int i = 0; i < records.size(); i++) {
                TensorRecord r = records.get(i);
                ByteBuffer rq = region(q, at * qRow, r.length() * qRow);
                ByteBuffer rk = region(k, at * kvRow, r.length() * kvRow);
                ByteBuffer rv = region(v, at * kvRow, r.length() * kvRow);
                try {
                    place(r, rq, rk, rv);
                    if (checkFinite) {
                        r.checkFinite(rq.flip(), rk.flip(), rv.flip());
                    }
                } catch (BadRecordException e) {
                    if (failOnBad) {
                        throw e;
                    }
                    rejected.add(new Rejected(i, e.reason()));
                    continue; // the next record overwrites this one's bytes
                }
                kept.add(i);
                at += r.length();
                cu.add(at);
                maxLen = Math.max(maxLen, r.length());
            }
            Loaded loaded;
            if (kept.isEmpty()) {
                taken.forEach(buffers::give);
                loaded = new Loaded(null, kept, rejected, 0, List.of(), buffers);
            } else {
                PackedBatch batch = PackedBatch.ofBuffers(layout, cu.stream().mapToInt(Integer::intValue).toArray(),
                        maxLen, region(q, 0, at * qRow), region(k, 0, at * kvRow), region(v, 0, at * kvRow));
                loaded = new Loaded(batch, kept, rejected, at * (qRow + 2 * kvRow), taken, buffers);
            }
            done = true;
            return loaded;
        } finally {
            if (!done) {
                taken.forEach(buffers::give);
            }
        }
    }

    /** A host buffer of {@code bytes}, positioned at 0, remembered in {@code taken}. */
    private ByteBuffer take(List<ByteBuffer> taken, long bytes) {
        ByteBuffer b = buffers.take(bytes, memory);
        taken.add(b);
        return region(b, 0, bytes);
    }

    /** {@code length} bytes of {@code b} from {@code offset}, as a buffer positioned at 0. */
    private static ByteBuffer region(ByteBuffer b, long offset, long length) {
        return b.slice((int) offset, (int) length);
    }

    /** Puts the record's tensors into its regions (each filled to its limit). */
    private void place(TensorRecord r, ByteBuffer q, ByteBuffer k, ByteBuffer v) {
        if (r.file() == null) {
            q.put(r.q());
            k.put(r.k());
            v.put(r.v());
            return;
        }
        TensorRecord.FileTensors f = r.file();
        String field = "q";
        try {
            FileRanges in = open(f.path());
            in.readFully(f.qPosition(), q);
            field = "k";
            in.readFully(f.kPosition(), k);
            field = "v";
            in.readFully(f.vPosition(), v);
        } catch (IOException | RuntimeException e) {
            throw new BadRecordException(r.id(), field + " cannot be read from " + f.path() + ": " + e);
        }
    }

    private FileRanges open(String path) throws IOException {
        FileRanges in = open.get(path);
        if (in == null) {
            in = FileRanges.open(path, hadoop);
            open.put(path, in);
        }
        return in;
    }

    @Override
    public void close() {
        for (FileRanges in : open.values()) {
            try {
                in.close();
            } catch (IOException e) {
                // Read-only files: nothing is lost when closing one fails.
            }
        }
        open.clear();
    }
}
