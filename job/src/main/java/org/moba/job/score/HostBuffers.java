package org.moba.job.score;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import org.moba.kernels.HostMemory;

/**
 * The executor's direct host buffers for loaded batches, reused across batches and tasks: allocating (and zeroing)
 * hundreds of megabytes per batch would cost as much as reading them. A buffer is taken whole by one batch and given
 * back when the batch has run; idle buffers are kept up to a quarter of the maximum heap size in all (direct memory
 * is bounded by the heap size unless set otherwise), the oldest beyond that left to the garbage collector.
 * Sizes are rounded up to {@value #GRANULE} bytes so that batches of similar size share buffers.
 * <p>A buffer is page-locked by the backend it is taken for ({@link HostMemory}, e.g. the CUDA backend's, so that
 * the batch is uploaded straight from it) and stays locked while the pool keeps it: locking costs about as much as
 * reading the bytes, once per buffer. A locked buffer is unlocked before the pool drops it. Thread-safe.
 */
public final class HostBuffers {
    private static final long GRANULE = 8L << 20;
    /** The most one buffer holds (a Java buffer's limit, rounded down to whole granules). */
    public static final long MAX_BYTES = Integer.MAX_VALUE / GRANULE * GRANULE;
    private static final HostBuffers EXECUTOR = new HostBuffers(Runtime.getRuntime().maxMemory() / 4);

    private final long keptBytes;
    private final List<ByteBuffer> idle = new ArrayList<>();
    /**
     * The buffers a backend locked, and whose locking service unlocks them. By identity, as {@link #idle} is
     * searched: a ByteBuffer's equals compares contents, so two idle buffers of equal bytes would be mistaken.
     */
    private final Map<ByteBuffer, HostMemory> locked = new IdentityHashMap<>();
    private long idleBytes;

    /** A pool keeping up to {@code keptBytes} of idle buffers. */
    HostBuffers(long keptBytes) {
        this.keptBytes = keptBytes;
    }

    /** The buffers of this JVM (an executor, or the driver in local mode). */
    public static HostBuffers executor() {
        return EXECUTOR;
    }

    /** A direct buffer of at least {@code bytes} (position 0, limit {@code bytes}), idle or new; not locked. */
    public ByteBuffer take(long bytes) {
        return take(bytes, HostMemory.PAGEABLE);
    }

    /**
     * A direct buffer of at least {@code bytes} (position 0, limit {@code bytes}), idle or new, page-locked by
     * {@code memory} where it can (else pageable, as {@link HostMemory#pin} never fails the caller).
     */
    public ByteBuffer take(long bytes, HostMemory memory) {
        if (bytes > MAX_BYTES) {
            throw new IllegalArgumentException("a host buffer holds at most " + MAX_BYTES + " bytes, asked for "
                    + bytes + ": lower the token budget");
        }
        ByteBuffer b = idleOrNew(bytes);
        if (memory.pin(b)) { // a no-op for a buffer locked already
            synchronized (idle) {
                locked.put(b, memory);
            }
        }
        return b;
    }

    private ByteBuffer idleOrNew(long bytes) {
        synchronized (idle) {
            int best = -1;
            for (int i = 0; i < idle.size(); i++) {
                int capacity = idle.get(i).capacity();
                if (capacity >= bytes && (best < 0 || capacity < idle.get(best).capacity())) {
                    best = i;
                }
            }
            if (best >= 0) {
                ByteBuffer b = idle.remove(best);
                idleBytes -= b.capacity();
                return b.clear().limit((int) bytes);
            }
        }
        long rounded = (bytes + GRANULE - 1) / GRANULE * GRANULE;
        return ByteBuffer.allocateDirect((int) Math.max(rounded, GRANULE)).limit((int) bytes);
    }

    /** Gives a buffer from {@link #take} back; it must not be used afterwards, nor any transfer read from it. */
    public void give(ByteBuffer buffer) {
        List<Map.Entry<ByteBuffer, HostMemory>> unlock = new ArrayList<>();
        synchronized (idle) {
            idle.add(buffer);
            idleBytes += buffer.capacity();
            while (idleBytes > keptBytes && !idle.isEmpty()) {
                ByteBuffer oldest = idle.remove(0);
                idleBytes -= oldest.capacity();
                HostMemory memory = locked.remove(oldest);
                if (memory != null) {
                    unlock.add(Map.entry(oldest, memory));
                }
            }
        }
        // Unlocked before the garbage collector may free it (outside the lock: unlocking takes a while).
        unlock.forEach(e -> e.getValue().unpin(e.getKey()));
    }
}
