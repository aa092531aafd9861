package org.moba.job.score;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

/**
 * The executor's direct host buffers for loaded batches, reused across batches and tasks: allocating (and zeroing)
 * hundreds of megabytes per batch would cost as much as reading them. A buffer is taken whole by one batch and given
 * back when the batch has run; idle buffers are kept up to a quarter of the maximum heap size in all (direct memory
 * is bounded by the heap size unless set otherwise), the oldest beyond that left to the garbage collector.
 * Sizes are rounded up to {@value #GRANULE} bytes so that batches of similar size share buffers. Thread-safe.
 */
public final class HostBuffers {
    private static final long KEPT_BYTES = Runtime.getRuntime().maxMemory() / 4;
    private static final long GRANULE = 8L << 20;
    /** The most one buffer holds (a Java buffer's limit, rounded down to whole granules). */
    public static final long MAX_BYTES = Integer.MAX_VALUE / GRANULE * GRANULE;
    private static final HostBuffers EXECUTOR = new HostBuffers();

    private final List<ByteBuffer> idle = new ArrayList<>();
    private long idleBytes;

    /** The buffers of this JVM (an executor, or the driver in local mode). */
    public static HostBuffers executor() {
        return EXECUTOR;
    }

    /** A direct buffer of at least {@code bytes} (position 0, limit {@code bytes}), idle or new. */
    public ByteBuffer take(long bytes) {
        if (bytes > MAX_BYTES) {
            throw new IllegalArgumentException("a host buffer holds at most " + MAX_BYTES + " bytes, asked for "
                    + bytes + ": lower the token budget");
        }
        synchronized (idle) {
            ByteBuffer best = null;
            for (ByteBuffer b : idle) {
                if (b.capacity() >= bytes && (best == null || b.capacity() < best.capacity())) {
                    best = b;
                }
            }
            if (best != null) {
                idle.remove(best);
                idleBytes -= best.capacity();
                return best.clear().limit((int) bytes);
            }
        }
        long rounded = (bytes + GRANULE - 1) / GRANULE * GRANULE;
        return ByteBuffer.allocateDirect((int) Math.max(rounded, GRANULE)).limit((int) bytes);
    }

    /** Gives a buffer from {@link #take} back; it must not be used afterwards. */
    public void give(ByteBuffer buffer) {
        synchronized (idle) {
            idle.add(buffer);
            idleBytes += buffer.capacity();
            while (idleBytes > KEPT_BYTES && !idle.isEmpty()) {
                idleBytes -= idle.remove(0).capacity(); // the oldest goes to the garbage collector
            }
        }
    }
}
