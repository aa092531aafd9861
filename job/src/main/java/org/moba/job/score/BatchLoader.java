package org.moba.job.score;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ForkJoinPool;
import org.apache.hadoop.conf.Configuration;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.HostMemory;
import org.moba.kernels.MobaAttention;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.PackedBatch;

/**
 * Loads records of one layout into one packed batch whose tensors live in direct host buffers (one per tensor)
 * ({@link PackedBatch#ofBuffers}): bytes held in a record are copied in once; bytes still in a file are read
 * straight into place ({@link FileRanges}), with no array per record. Records are read and checked in pieces of at
 * most {@value #PIECE_BYTES} bytes on a process-wide pool, all pieces of a batch at once (reading at ~1.3 GB/s, one
 * thread per task was the slowest stage of score on a 16-core GPU host). Each record is checked where it landed
 * (NaN/infinity when asked); a bad one is rejected (the records after it move down over its bytes) or, with
 * {@code failOnBad}, stops the load, with the same reason a one-record-at-a-time load would give. Keeps the files
 * it reads open until {@link #close()}. One thread at a time.
 */
public final class BatchLoader implements AutoCloseable {
    private final Configuration hadoop;
    private final boolean checkFinite;
    private final boolean failOnBad;
    private final HostBuffers buffers;
    private final HostMemory memory;
    private final Map<String, FileRanges> open = new HashMap<>();
    /** Loads read in pieces of at most this many bytes, so that one long record still loads on several threads. */
    static final int PIECE_BYTES = 8 << 20;
    private static final String[] FIELDS = {"q", "k", "v"};
    /**
     * The threads that read and check the pieces of every loader of this process: as many as cores, shared, so
     * that a few tasks with large batches use the whole host and many tasks do not oversubscribe it.
     */
    private static final ForkJoinPool LOAD_POOL = new ForkJoinPool(Runtime.getRuntime().availableProcessors());

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
            ByteBuffer[] tensors = {take(taken, tokens * qRow), take(taken, tokens * kvRow),
                    take(taken, tokens * kvRow)};
            long[] rowBytes = {qRow, kvRow, kvRow};
            int n = records.size();
            // Every record first lands where it would be if all were good; pieces of all of them load in parallel.
            int[] start = new int[n];
            for (int i = 1; i < n; i++) {
                start[i] = start[i - 1] + records.get(i - 1).length();
            }
            RecordFailures failures = new RecordFailures(n);
            List<Runnable> pieces = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                TensorRecord r = records.get(i);
                FileRanges in = null;
                if (r.file() != null) {
                    try {
                        in = open(r.file().path()); // on this thread: the map of open files is not thread-safe
                    } catch (IOException | RuntimeException e) {
                        failures.unreadable(i, 0, new BadRecordException(r.id(), "q cannot be read from "
                                + r.file().path() + ": " + e));
                        continue;
                    }
                }
                for (int field = 0; field < 3; field++) {
                    ByteBuffer region = region(tensors[field], start[i] * rowBytes[field],
                            r.length() * rowBytes[field]);
                    for (int at = 0; at < region.capacity(); at += PIECE_BYTES) {
                        pieces.add(piece(r, i, field, in, region, at,
                                Math.min(PIECE_BYTES, region.capacity() - at), layout.dtype(), failures));
                    }
                }
            }
            // join, not get: the pieces write into the buffers, so they must all be done before a failure gives the
            // buffers back, even when this thread is interrupted.
            LOAD_POOL.submit(() -> pieces.parallelStream().forEach(Runnable::run)).join();
            List<Integer> kept = new ArrayList<>();
            List<Rejected> rejected = new ArrayList<>();
            List<Integer> cu = new ArrayList<>(List.of(0));
            int at = 0;
            int maxLen = 0;
            for (int i = 0; i < n; i++) {
                TensorRecord r = records.get(i);
                BadRecordException bad = failures.of(i);
                if (bad != null) {
                    if (failOnBad) {
                        throw bad;
                    }
                    rejected.add(new Rejected(i, bad.reason()));
                    continue;
                }
                if (start[i] != at) { // an earlier record was rejected: close the gap it left
                    for (int field = 0; field < 3; field++) {
                        moveDown(tensors[field], start[i] * rowBytes[field], at * rowBytes[field],
                                r.length() * rowBytes[field]);
                    }
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
                        maxLen, region(tensors[0], 0, at * qRow), region(tensors[1], 0, at * kvRow),
                        region(tensors[2], 0, at * kvRow));
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

    /**
     * One piece of a record's field: {@code bytes} from {@code offset} of its {@code region}, read from the file (or
     * copied from the record's array), then checked for NaN/infinity of {@code dtype} when asked. Failures go to
     * {@code failures}.
     */
    private Runnable piece(TensorRecord r, int index, int field, FileRanges in, ByteBuffer region, int offset,
                           int bytes, DType dtype, RecordFailures failures) {
        return () -> {
            ByteBuffer dst = region.slice(offset, bytes);
            try {
                if (in == null) {
                    dst.put(0, fieldBytes(r, field), offset, bytes);
                } else {
                    TensorRecord.FileTensors f = r.file();
                    long position = field == 0 ? f.qPosition() : field == 1 ? f.kPosition() : f.vPosition();
                    in.readFully(position + offset, dst.duplicate());
                }
            } catch (IOException | RuntimeException e) {
                failures.unreadable(index, field, new BadRecordException(r.id(), FIELDS[field]
                        + " cannot be read from " + r.file().path() + ": " + e));
                return;
            }
            if (checkFinite) {
                int i = dtype.firstNonFinite(dst);
                if (i >= 0) {
                    int element = offset / 2 + i;
                    failures.nonFinite(index, field, element, r.nonFinite(FIELDS[field], region, element));
                }
            }
        };
    }

    private static byte[] fieldBytes(TensorRecord r, int field) {
        return field == 0 ? r.q() : field == 1 ? r.k() : r.v();
    }

    /** Moves {@code bytes} of {@code b} from {@code from} down to {@code to} (the ranges may overlap). */
    private static void moveDown(ByteBuffer b, long from, long to, long bytes) {
        byte[] copy = new byte[(int) bytes];
        b.get((int) from, copy);
        b.put((int) to, copy);
    }

    /**
     * Per record, the failure the sequential load would have reported: an unreadable field before any value check
     * (all reads came first), the earlier field first, and within a field the first non-finite element. Thread-safe.
     */
    private static final class RecordFailures {
        private final BadRecordException[] failure;
        private final long[] rank;

        RecordFailures(int records) {
            failure = new BadRecordException[records];
            rank = new long[records];
        }

        void unreadable(int record, int field, BadRecordException e) {
            offer(record, field, e);
        }

        void nonFinite(int record, int field, int element, BadRecordException e) {
            offer(record, (1L + field) << 32 | element, e);
        }

        private synchronized void offer(int record, long order, BadRecordException e) {
            long r = order + 1; // 0 means none yet
            if (failure[record] == null || r < rank[record]) {
                failure[record] = e;
                rank[record] = r;
            }
        }

        synchronized BadRecordException of(int record) {
            return failure[record];
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
