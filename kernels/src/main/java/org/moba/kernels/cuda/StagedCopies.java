package org.moba.kernels.cuda;

import static org.moba.kernels.cuda.CudaCheck.check;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Supplier;

import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

import org.moba.kernels.PackedBatch;
import org.moba.kernels.cuda.DeviceBufferPool.PinnedSlab;

/**
 * Host-device transfers of Java arrays and buffers for one call, staged through two pinned slabs used in turn (a
 * direct buffer in page-locked memory goes straight, without a slab). Transfers are packed one after another into
 * the current slab; only when it is full does the host switch to the other slab,
 * first waiting for that slab's earlier transfers (so for large batches the host fills one slab while the DMA
 * engine drains the other). Copies are queued on the call's stream in program order, so a small call's upload,
 * kernels and download need a single wait at the end ({@link #finish()}). Not thread-safe: one per call.
 */
final class StagedCopies implements AutoCloseable {
    /** Transfers start at multiples of this within a slab (DMA-friendly alignment). */
    private static final int ALIGN = 256;

    private final DeviceBufferPool pool;
    private final CUstream stream;
    private final Supplier<String> context;
    private final PinnedSlab[] slabs = new PinnedSlab[2];
    /** Per slab: copies from the slab into Java arrays still owed once its downloads have landed. */
    private final List<List<Runnable>> drains = List.of(new ArrayList<>(), new ArrayList<>());
    private int current;
    private int used;

    /** Moves {@code count} elements starting at {@code from} between a Java array and a slab view. */
    private interface SlabCopy {
        void apply(ByteBuffer slab, int from, int count);
    }

    StagedCopies(DeviceBufferPool pool, CUstream stream, Supplier<String> context) {
        this.pool = pool;
        this.stream = stream;
        this.context = context;
    }

    void upload(short[] src, CUdeviceptr dst) {
        transfer(true, src.length, Short.BYTES, dst, (slab, from, n) -> slab.asShortBuffer().put(src, from, n));
    }

    /**
     * Uploads the bytes of {@code src} from its position to its limit (heap or direct; its position is kept). A
     * direct buffer lying wholly in page-locked memory ({@link PinnedHostRanges}) is copied straight from where it
     * is, with no memcpy into a slab: the copy is only queued, so the buffer must stay unchanged until the call has
     * waited for its stream (every call does before it returns, {@link DeviceCall#close()}).
     */
    void upload(ByteBuffer src, CUdeviceptr dst) {
        if (src.hasRemaining() && PinnedHostRanges.PROCESS.covers(src)) {
            // Pointer.to ignores the buffer's position: the copy starts at position bytes from element 0.
            check(JCudaDriver.cuMemcpyHtoDAsync(dst, Pointer.to(src).withByteOffset(src.position()), src.remaining(),
                    stream), () -> "cuMemcpyHtoDAsync from page-locked host memory for " + context.get());
            return;
        }
        ByteBuffer bytes = src.duplicate();
        int base = bytes.position();
        transfer(true, bytes.remaining(), Byte.BYTES, dst, (slab, from, n) -> slab.put(0, bytes, base + from, n));
    }

    /** Uploads a batch tensor from wherever the batch holds it ({@link PackedBatch#inBuffers()}). */
    void upload(PackedBatch batch, Tensor tensor, CUdeviceptr dst) {
        if (batch.inBuffers()) {
            upload(tensor.bytes(batch), dst);
        } else {
            upload(tensor.array(batch), dst);
        }
    }

    /** An input tensor of a batch. */
    enum Tensor {
        Q, K, V;

        ByteBuffer bytes(PackedBatch b) {
            return switch (this) {
                case Q -> b.qBytes();
                case K -> b.kBytes();
                case V -> b.vBytes();
            };
        }

        short[] array(PackedBatch b) {
            return switch (this) {
                case Q -> b.q();
                case K -> b.k();
                case V -> b.v();
            };
        }
    }

    void upload(int[] src, CUdeviceptr dst) {
        transfer(true, src.length, Integer.BYTES, dst, (slab, from, n) -> slab.asIntBuffer().put(src, from, n));
    }

    void upload(float[] src, CUdeviceptr dst) {
        transfer(true, src.length, Float.BYTES, dst, (slab, from, n) -> slab.asFloatBuffer().put(src, from, n));
    }

    void download(CUdeviceptr src, short[] dst) {
        transfer(false, dst.length, Short.BYTES, src, (slab, from, n) -> slab.asShortBuffer().get(dst, from, n));
    }

    void download(CUdeviceptr src, float[] dst) {
        transfer(false, dst.length, Float.BYTES, src, (slab, from, n) -> slab.asFloatBuffer().get(dst, from, n));
    }

    void download(CUdeviceptr src, int[] dst) {
        transfer(false, dst.length, Integer.BYTES, src, (slab, from, n) -> slab.asIntBuffer().get(dst, from, n));
    }

    void download(CUdeviceptr src, double[] dst) {
        transfer(false, dst.length, Double.BYTES, src, (slab, from, n) -> slab.asDoubleBuffer().get(dst, from, n));
    }

    private void transfer(boolean toDevice, int length, int elementBytes, CUdeviceptr device, SlabCopy copy) {
        for (int from = 0; from < length;) {
            if (slabs[current] == null) {
                slabs[current] = pool.acquireSlab(context);
            }
            int space = (DeviceBufferPool.SLAB_BYTES - used) / elementBytes;
            if (space == 0) {
                switchSlab();
                continue;
            }
            int n = Math.min(space, length - from);
            long bytes = (long) n * elementBytes;
            PinnedSlab slab = slabs[current];
            ByteBuffer view = slab.buffer().slice(used, (int) bytes).order(ByteOrder.nativeOrder());
            CUdeviceptr at = device.withByteOffset((long) from * elementBytes);
            if (toDevice) {
                copy.apply(view, from, n);
                check(JCudaDriver.cuMemcpyHtoDAsync(at, slab.pointer().withByteOffset(used), bytes, stream),
                        () -> "cuMemcpyHtoDAsync for " + context.get());
            } else {
                check(JCudaDriver.cuMemcpyDtoHAsync(slab.pointer().withByteOffset(used), at, bytes, stream),
                        () -> "cuMemcpyDtoHAsync for " + context.get());
                int start = from;
                drains.get(current).add(() -> copy.apply(view, start, n));
            }
            check(JCudaDriver.cuEventRecord(slab.done(), stream), () -> "cuEventRecord for " + context.get());
            used += (int) ((bytes + ALIGN - 1) / ALIGN * ALIGN); // stays <= SLAB_BYTES: both are multiples of ALIGN
            from += n;
        }
    }

    private void switchSlab() {
        current ^= 1;
        used = 0;
        if (slabs[current] != null) {
            awaitIdle(current);
        }
    }

    /**
     * Waits for the slab's last transfer, which also waits for all work queued before it on the stream: a kernel
     * that failed asynchronously is reported here.
     */
    private void awaitIdle(int i) {
        check(JCudaDriver.cuEventSynchronize(slabs[i].done()), () -> "waiting for the work of " + context.get());
        List<Runnable> owed = drains.get(i);
        owed.forEach(Runnable::run);
        owed.clear();
    }

    /** Waits until every queued transfer has landed and every download has reached its Java array. */
    void finish() {
        for (int i = 0; i < 2; i++) {
            if (slabs[i] != null) {
                awaitIdle(i);
            }
        }
    }

    /** Returns the slabs once the DMA engine is done with them; downloads not {@link #finish() finished} are lost. */
    @Override
    public void close() {
        for (int i = 0; i < 2; i++) {
            if (slabs[i] != null) {
                JCudaDriver.cuEventSynchronize(slabs[i].done());
                pool.releaseSlab(slabs[i]);
                slabs[i] = null;
            }
        }
    }
}
