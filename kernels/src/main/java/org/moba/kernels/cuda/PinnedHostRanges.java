package org.moba.kernels.cuda;

import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

import jcuda.Pointer;
import jcuda.driver.CUresult;
import jcuda.driver.JCudaDriver;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The Java direct buffers this process has page-locked with {@code cuMemHostRegister}, by address range, so that an
 * upload can tell whether its source lies wholly in locked memory ({@link #covers}) and copy straight from it.
 * One per process ({@link #PROCESS}): buffers are locked {@code CU_MEMHOSTREGISTER_PORTABLE}, so every context of
 * the process sees them as locked, whichever device locked them.
 *
 * <p>A locked buffer is held here by a strong reference until it is unlocked, so the garbage collector cannot free
 * (and the allocator hand out again) memory the driver still maps as locked: a buffer its owner loses without
 * {@link #unpin} stays alive and locked, it is never read stale. A device's locks end with its context, so
 * {@link CudaDevice#close()} unlocks the buffers it locked ({@link #forget}) before releasing it.
 *
 * <p>Locked bytes are capped ({@link #limitBytes()}): {@value #LIMIT_PROPERTY} bytes if set, else a quarter of the
 * host's physical memory, so that locked pages never starve the rest of the host (the page cache the input is read
 * through, Spark's own memory); a buffer over the cap stays pageable. The first failure of {@code cuMemHostRegister}
 * (not permitted, out of lockable memory) turns locking off for the process with one warning: uploads then go
 * through the pinned slabs as before. Thread-safe.
 */
final class PinnedHostRanges {
    /** System property: the most bytes of host memory to lock (default: a quarter of physical memory). */
    static final String LIMIT_PROPERTY = "moba.cuda.maxPinnedHostBytes";
    private static final Logger LOG = LoggerFactory.getLogger(PinnedHostRanges.class);

    /** Locks and unlocks pages; the driver's, or a test's. */
    interface PageLocker {
        /** A {@link CUresult} code: locks {@code bytes} from the buffer's element 0, as {@code device}'s context. */
        int lock(CudaDevice device, ByteBuffer buffer, long bytes);

        /** A {@link CUresult} code: unlocks what {@link #lock} locked, as {@code device}'s context. */
        int unlock(CudaDevice device, ByteBuffer buffer);
    }

    private static final PageLocker DRIVER = new PageLocker() {
        @Override
        public int lock(CudaDevice device, ByteBuffer buffer, long bytes) {
            device.makeCurrent();
            return JCudaDriver.cuMemHostRegister(Pointer.to(buffer), bytes, JCudaDriver.CU_MEMHOSTREGISTER_PORTABLE);
        }

        @Override
        public int unlock(CudaDevice device, ByteBuffer buffer) {
            device.makeCurrent();
            return JCudaDriver.cuMemHostUnregister(Pointer.to(buffer));
        }
    };

    static final PinnedHostRanges PROCESS = new PinnedHostRanges(defaultLimit(), DRIVER);

    /** A locked range; {@code buffer} keeps its memory alive while it is locked. */
    private record Range(long start, long bytes, ByteBuffer buffer, CudaDevice lockedBy) {
    }

    private final long limitBytes;
    private final PageLocker locker;
    /** Locked ranges by start address; they never overlap. */
    private final TreeMap<Long, Range> ranges = new TreeMap<>();
    /** Start addresses being locked right now (outside the lock: locking a gigabyte takes a while). */
    private final Set<Long> locking = new HashSet<>();
    private long lockedBytes;
    private long lockingBytes;
    private String failure;
    private boolean loggedLimit;

    PinnedHostRanges(long limitBytes, PageLocker locker) {
        this.limitBytes = limitBytes;
        this.locker = locker;
    }

    private static long defaultLimit() {
        Long set = Long.getLong(LIMIT_PROPERTY);
        if (set != null) {
            return set;
        }
        long physical = ManagementFactory.getOperatingSystemMXBean() instanceof com.sun.management.OperatingSystemMXBean os
                ? os.getTotalMemorySize() : Runtime.getRuntime().maxMemory();
        return physical / 4;
    }

    /**
     * Locks the whole of {@code buffer} (element 0 to capacity) as {@code device}'s context, unless it is locked
     * already; false, leaving it pageable, when it is not direct, overlaps another locked range, would pass the cap,
     * or locking failed now or earlier in the process.
     */
    boolean pin(ByteBuffer buffer, CudaDevice device) {
        long start = DirectBufferAddress.of(buffer);
        long bytes = buffer.capacity();
        if (start == 0 || bytes == 0) {
            if (buffer.isDirect() && bytes > 0) {
                fail(DirectBufferAddress.unavailableReason());
            }
            return false;
        }
        synchronized (this) {
            Range same = ranges.get(start);
            if (same != null) {
                return same.bytes() >= bytes;
            }
            if (failure != null || locking.contains(start) || overlaps(start, bytes)) {
                return false;
            }
            if (lockedBytes + lockingBytes + bytes > limitBytes) {
                if (!loggedLimit) {
                    loggedLimit = true;
                    LOG.info("host buffers beyond {} page-locked bytes stay pageable (-D{}=BYTES to change the cap);"
                            + " their uploads go through the pinned slabs (logged once)", limitBytes,
                            LIMIT_PROPERTY);
                }
                return false;
            }
            locking.add(start);
            lockingBytes += bytes;
        }
        int status = locker.lock(device, buffer, bytes);
        synchronized (this) {
            locking.remove(start);
            lockingBytes -= bytes;
            if (status != CUresult.CUDA_SUCCESS) {
                fail("cuMemHostRegister of " + bytes + " bytes on " + device + " failed: "
                        + CUresult.stringFor(status));
                return false;
            }
            ranges.put(start, new Range(start, bytes, buffer, device));
            lockedBytes += bytes;
            return true;
        }
    }

    /** Turns locking off for the process, with one warning. */
    private synchronized void fail(String reason) {
        if (failure == null) {
            failure = reason;
            LOG.warn("page-locking host buffers is off for this process: {}; uploads go through the pinned slabs"
                    + " (a memcpy per upload, slower)", reason);
        }
    }

    private boolean overlaps(long start, long bytes) {
        Map.Entry<Long, Range> below = ranges.floorEntry(start);
        if (below != null && below.getKey() + below.getValue().bytes() > start) {
            return true;
        }
        Long above = ranges.ceilingKey(start);
        return above != null && above < start + bytes;
    }

    /** Unlocks a buffer {@link #pin} locked; nothing when it is not locked. No transfer may still read from it. */
    void unpin(ByteBuffer buffer) {
        long start = DirectBufferAddress.of(buffer);
        Range r;
        synchronized (this) {
            r = start == 0 ? null : ranges.get(start);
            if (r == null || r.buffer() != buffer) {
                return;
            }
            ranges.remove(start);
            lockedBytes -= r.bytes();
        }
        unlock(r); // r holds the buffer, so its memory stays until it is unlocked
    }

    /** Unlocks every buffer {@code device} locked: its context is about to be released, and its locks with it. */
    void forget(CudaDevice device) {
        List<Range> gone = new ArrayList<>();
        synchronized (this) {
            for (Iterator<Range> it = ranges.values().iterator(); it.hasNext();) {
                Range r = it.next();
                if (r.lockedBy() == device) {
                    gone.add(r);
                    lockedBytes -= r.bytes();
                    it.remove();
                }
            }
        }
        gone.forEach(this::unlock);
    }

    private void unlock(Range r) {
        int status = locker.unlock(r.lockedBy(), r.buffer());
        if (status != CUresult.CUDA_SUCCESS) {
            LOG.warn("cuMemHostUnregister of {} bytes on {} failed: {}", r.bytes(), r.lockedBy(),
                    CUresult.stringFor(status));
        }
    }

    /** Whether {@code buffer}'s bytes from its position to its limit all lie in one locked range. */
    boolean covers(ByteBuffer buffer) {
        long base = DirectBufferAddress.of(buffer);
        if (base == 0) {
            return false;
        }
        long start = base + buffer.position();
        long end = base + buffer.limit();
        synchronized (this) {
            Map.Entry<Long, Range> e = ranges.floorEntry(start);
            return e != null && end <= e.getKey() + e.getValue().bytes();
        }
    }

    /** Bytes locked now. */
    synchronized long lockedBytes() {
        return lockedBytes;
    }

    /** The most bytes this registry locks at once. */
    long limitBytes() {
        return limitBytes;
    }
}
