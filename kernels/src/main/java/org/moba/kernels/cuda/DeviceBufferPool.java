package org.moba.kernels.cuda;

import static org.moba.kernels.cuda.CudaCheck.check;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayDeque;
import java.util.Collections;
import java.util.Deque;
import java.util.IdentityHashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.Supplier;

import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUevent;
import jcuda.driver.CUevent_flags;
import jcuda.driver.CUresult;
import jcuda.driver.JCudaDriver;

/**
 * Device allocations and pinned host staging slabs, reused across batches because {@code cuMemAlloc} and
 * {@code cuMemAllocHost} synchronize the device and cost far more than a small batch's kernels.
 *
 * <p>Device buffers come in size classes a quarter of a power of two apart (at most 25% slack), so batches of
 * similar size reuse each other's buffers. Pinned memory comes in fixed-size slabs through which transfers are
 * streamed ({@link StagedCopies}), so it stays bounded however large a batch is. Thread-safe; {@link #close()}
 * frees everything, including buffers still lent out.
 */
final class DeviceBufferPool implements AutoCloseable {
    static final long MIN_CLASS_BYTES = 256;
    static final int SLAB_BYTES = 32 << 20;

    /** A device allocation lent out by the pool; {@code bytes} is what was asked for. */
    record DeviceBuffer(CUdeviceptr pointer, long bytes, long capacity) {
    }

    /** A pinned host slab with an event that marks when the last transfer using it has finished. */
    record PinnedSlab(Pointer pointer, ByteBuffer buffer, CUevent done) {
    }

    private final CudaDevice device;
    private final TreeMap<Long, Deque<CUdeviceptr>> freeBuffers = new TreeMap<>();
    private final Map<CUdeviceptr, Long> lent = new IdentityHashMap<>();
    private final Deque<PinnedSlab> freeSlabs = new ArrayDeque<>();
    private final Set<PinnedSlab> lentSlabs = Collections.newSetFromMap(new IdentityHashMap<>());
    private long bytesLent;
    private long bytesCached;
    private boolean closed;

    DeviceBufferPool(CudaDevice device) {
        this.device = device;
    }

    /** The allocation size used for a request of {@code bytes}: the next quarter-power-of-two step. */
    static long sizeClass(long bytes) {
        if (bytes <= MIN_CLASS_BYTES) {
            return MIN_CLASS_BYTES;
        }
        long base = Long.highestOneBit(bytes - 1); // base < bytes <= 2 * base
        long step = base / 4;
        return base + (bytes - base + step - 1) / step * step;
    }

    /**
     * A device buffer of at least {@code bytes}. When the device is full, cached buffers are freed and the
     * allocation retried once; if it still fails, a {@link CudaOutOfMemoryException} says how much was asked for
     * and how much is free. The device's context must be current.
     */
    DeviceBuffer acquire(long bytes, Supplier<String> purpose) {
        if (bytes == 0) {
            return new DeviceBuffer(new CUdeviceptr(), 0, 0);
        }
        long capacity = sizeClass(bytes);
        synchronized (this) {
            ensureOpen();
            Deque<CUdeviceptr> cached = freeBuffers.get(capacity);
            if (cached != null && !cached.isEmpty()) {
                CUdeviceptr p = cached.pop();
                bytesCached -= capacity;
                return lend(p, bytes, capacity);
            }
        }
        CUdeviceptr p = new CUdeviceptr();
        int status = JCudaDriver.cuMemAlloc(p, capacity);
        if (status == CUresult.CUDA_ERROR_OUT_OF_MEMORY) {
            trim();
            status = JCudaDriver.cuMemAlloc(p, capacity);
            if (status == CUresult.CUDA_ERROR_OUT_OF_MEMORY) {
                throw outOfMemory(capacity, purpose.get());
            }
        }
        check(status, () -> "cuMemAlloc(" + capacity + " bytes) for " + purpose.get() + " on " + device.describe());
        synchronized (this) {
            return lend(p, bytes, capacity);
        }
    }

    private DeviceBuffer lend(CUdeviceptr p, long bytes, long capacity) {
        lent.put(p, capacity);
        bytesLent += capacity;
        return new DeviceBuffer(p, bytes, capacity);
    }

    /** Takes a buffer back for reuse; no work still queued on a stream may use it. */
    synchronized void release(DeviceBuffer buffer) {
        if (buffer.capacity() == 0 || closed) {
            return;
        }
        Long capacity = lent.remove(buffer.pointer());
        if (capacity == null) {
            throw new IllegalStateException("buffer of " + buffer.capacity() + " bytes released twice");
        }
        bytesLent -= capacity;
        bytesCached += capacity;
        freeBuffers.computeIfAbsent(capacity, c -> new ArrayDeque<>()).push(buffer.pointer());
    }

    /** A pinned slab of {@link #SLAB_BYTES}. The device's context must be current. */
    PinnedSlab acquireSlab(Supplier<String> purpose) {
        synchronized (this) {
            ensureOpen();
            PinnedSlab slab = freeSlabs.poll();
            if (slab != null) {
                lentSlabs.add(slab);
                return slab;
            }
        }
        Pointer p = new Pointer();
        int status = JCudaDriver.cuMemAllocHost(p, SLAB_BYTES);
        if (status == CUresult.CUDA_ERROR_OUT_OF_MEMORY) {
            throw new CudaOutOfMemoryException("cannot pin " + SLAB_BYTES + " bytes of host memory for " + purpose.get()
                    + " on " + device.describe() + ": split the batch (e.g. halve the token budget) or run fewer "
                    + "concurrent tasks per host, and retry");
        }
        check(status, () -> "cuMemAllocHost(" + SLAB_BYTES + " bytes) for " + purpose.get());
        CUevent done = new CUevent();
        check(JCudaDriver.cuEventCreate(done, CUevent_flags.CU_EVENT_DISABLE_TIMING), "cuEventCreate for a slab");
        PinnedSlab slab = new PinnedSlab(p, p.getByteBuffer(0, SLAB_BYTES).order(ByteOrder.nativeOrder()), done);
        synchronized (this) {
            lentSlabs.add(slab);
        }
        return slab;
    }

    synchronized void releaseSlab(PinnedSlab slab) {
        if (closed) {
            return;
        }
        if (!lentSlabs.remove(slab)) {
            throw new IllegalStateException("pinned slab released twice");
        }
        freeSlabs.push(slab);
    }

    /** Device bytes currently lent out (by capacity). */
    synchronized long bytesLent() {
        return bytesLent;
    }

    /** Device bytes held for reuse. */
    synchronized long bytesCached() {
        return bytesCached;
    }

    /** Frees every cached (not lent) device buffer; used when the device runs out of memory. */
    void trim() {
        synchronized (this) {
            for (Iterator<Map.Entry<Long, Deque<CUdeviceptr>>> it = freeBuffers.entrySet().iterator(); it.hasNext();) {
                Map.Entry<Long, Deque<CUdeviceptr>> e = it.next();
                for (CUdeviceptr p : e.getValue()) {
                    check(JCudaDriver.cuMemFree(p), () -> "cuMemFree on " + device.describe());
                    bytesCached -= e.getKey();
                }
                it.remove();
            }
        }
    }

    private CudaOutOfMemoryException outOfMemory(long requested, String purpose) {
        long[] free = new long[1];
        long[] total = new long[1];
        String freeText = JCudaDriver.cuMemGetInfo(free, total) == CUresult.CUDA_SUCCESS
                ? free[0] + " of " + total[0] + " bytes free" : "free memory unknown";
        long inUse;
        synchronized (this) {
            inUse = bytesLent;
        }
        return new CudaOutOfMemoryException("out of device memory on " + device.describe() + ": requested "
                + requested + " bytes for " + purpose + ", " + freeText + " (this backend holds " + inUse
                + " bytes for batches in flight); split the batch (e.g. halve the token budget) and retry");
    }

    private void ensureOpen() {
        if (closed) {
            throw new IllegalStateException("the buffer pool of " + device.describe() + " is closed");
        }
    }

    /** Frees all device buffers and pinned slabs, lent or not. The device's context must be current. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        trim();
        for (CUdeviceptr p : lent.keySet()) {
            JCudaDriver.cuMemFree(p);
        }
        lent.clear();
        bytesLent = 0;
        for (Deque<PinnedSlab> slabs : List.of(freeSlabs, new ArrayDeque<>(lentSlabs))) {
            for (PinnedSlab s : slabs) {
                JCudaDriver.cuEventDestroy(s.done());
                JCudaDriver.cuMemFreeHost(s.pointer());
            }
        }
        freeSlabs.clear();
        lentSlabs.clear();
        closed = true;
    }
}
