package org.moba.kernels.cuda;

import static org.moba.kernels.cuda.CudaCheck.check;

import java.nio.ByteBuffer;
import java.util.function.Supplier;

import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

import org.moba.kernels.cuda.DeviceBufferPool.PinnedSlab;

/**
 * Host-device transfers of Java arrays for one call, streamed through two pinned slabs: while the DMA engine
 * copies one slab, the host fills (or drains) the other. Copies are queued on the call's stream in program order,
 * so an upload, the kernels and a download need only one wait at the end ({@link #finish()}) when the data fit
 * in the slabs. Not thread-safe: one per call.
 */
final class StagedCopies implements AutoCloseable {
    private final DeviceBufferPool pool;
    private final CUstream stream;
    private final Supplier<String> context;
    private final PinnedSlab[] slabs = new PinnedSlab[2];
    /** Per slab: the copy from the slab into a Java array still owed once its download has landed. */
    private final Runnable[] drains = new Runnable[2];
    private int next;

    /** Moves {@code count} elements starting at {@code from} between a Java array and a slab. */
    private interface SlabCopy {
        void apply(ByteBuffer slab, int from, int count);
    }

    StagedCopies(DeviceBufferPool pool, CUstream stream, Supplier<String> context) {
        this.pool = pool;
        this.stream = stream;
        this.context = context;
    }

    void upload(short[] src, CUdeviceptr dst) {
        upload(src.length, Short.BYTES, dst, (slab, from, n) -> slab.asShortBuffer().put(src, from, n));
    }

    void upload(int[] src, CUdeviceptr dst) {
        upload(src.length, Integer.BYTES, dst, (slab, from, n) -> slab.asIntBuffer().put(src, from, n));
    }

    void download(CUdeviceptr src, short[] dst) {
        download(src, dst.length, Short.BYTES, (slab, from, n) -> slab.asShortBuffer().get(dst, from, n));
    }

    void download(CUdeviceptr src, float[] dst) {
        download(src, dst.length, Float.BYTES, (slab, from, n) -> slab.asFloatBuffer().get(dst, from, n));
    }

    void download(CUdeviceptr src, int[] dst) {
        download(src, dst.length, Integer.BYTES, (slab, from, n) -> slab.asIntBuffer().get(dst, from, n));
    }

    private void upload(int length, int elementBytes, CUdeviceptr dst, SlabCopy fill) {
        int piece = DeviceBufferPool.SLAB_BYTES / elementBytes;
        for (int from = 0; from < length; from += piece) {
            int n = Math.min(piece, length - from);
            int i = nextIdleSlab();
            fill.apply(slabs[i].buffer(), from, n);
            long offset = (long) from * elementBytes;
            check(JCudaDriver.cuMemcpyHtoDAsync(dst.withByteOffset(offset), slabs[i].pointer(),
                    (long) n * elementBytes, stream), () -> "cuMemcpyHtoDAsync for " + context.get());
            markBusy(i);
        }
    }

    private void download(CUdeviceptr src, int length, int elementBytes, SlabCopy drain) {
        int piece = DeviceBufferPool.SLAB_BYTES / elementBytes;
        for (int from = 0; from < length; from += piece) {
            int n = Math.min(piece, length - from);
            int i = nextIdleSlab();
            long offset = (long) from * elementBytes;
            check(JCudaDriver.cuMemcpyDtoHAsync(slabs[i].pointer(), src.withByteOffset(offset),
                    (long) n * elementBytes, stream), () -> "cuMemcpyDtoHAsync for " + context.get());
            markBusy(i);
            int start = from;
            ByteBuffer buffer = slabs[i].buffer();
            drains[i] = () -> drain.apply(buffer, start, n);
        }
    }

    private int nextIdleSlab() {
        int i = next;
        next ^= 1;
        if (slabs[i] == null) {
            slabs[i] = pool.acquireSlab(context);
        } else {
            awaitIdle(i);
        }
        return i;
    }

    private void markBusy(int i) {
        check(JCudaDriver.cuEventRecord(slabs[i].done(), stream), () -> "cuEventRecord for " + context.get());
    }

    /**
     * Waits for the slab's last transfer, which also waits for all work queued before it on the stream: a kernel
     * that failed asynchronously is reported here.
     */
    private void awaitIdle(int i) {
        check(JCudaDriver.cuEventSynchronize(slabs[i].done()), () -> "waiting for the work of " + context.get());
        if (drains[i] != null) {
            Runnable drain = drains[i];
            drains[i] = null;
            drain.run();
        }
    }

    /** Waits until every queued transfer has landed and every download has reached its Java array. */
    void finish() {
        for (int i = 0; i < 2; i++) {
            if (slabs[i] != null) {
                awaitIdle(i);
            }
        }
    }

    /** Returns the slabs; any download not {@link #finish() finished} is abandoned. */
    @Override
    public void close() {
        for (int i = 0; i < 2; i++) {
            if (slabs[i] != null) {
                // The slab may only be reused once the DMA engine is done with it.
                JCudaDriver.cuEventSynchronize(slabs[i].done());
                pool.releaseSlab(slabs[i]);
                slabs[i] = null;
            }
        }
    }
}
