package org.moba.kernels.cuda;

import static org.moba.kernels.cuda.CudaCheck.check;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;
import java.util.function.Supplier;

import jcuda.driver.CUevent;
import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

import org.moba.kernels.cuda.DeviceBufferPool.DeviceBuffer;
import org.moba.kernels.cuda.StreamPool.CallStream;

/**
 * What one resident device call ({@link DeviceBatch}, {@link DeviceBackward}) holds and how it times its phases:
 * the call stream with its timing events (this call's start at {@code eventBase} in the stream's event array), the
 * buffers it took from the pool and the staged transfers in flight. It records events, waits for them (an
 * asynchronous kernel failure is reported there with the call's context and kernels), measures the time between two,
 * poisons buffers, and {@link #close()} waits for the stream and hands everything back. Used by one thread at a time.
 */
final class DeviceCall {
    /** Bit patterns no kernel writes: NaN for fp16, bf16 and fp32. */
    static final short POISON_16 = (short) 0xFFFF;
    static final int POISON_32 = 0xFFFFFFFF;

    private final CudaDevice device;
    private final DeviceBufferPool pool;
    /** The pool the stream goes back to on close; null when another call owns the stream. */
    private final StreamPool streams;
    private final CallStream call;
    private final int eventBase;
    private final Supplier<String> context;
    /** The call's kernels, named in the message of a failed wait. */
    private final Object kernels;
    /** What the call is, for the message of a use after close ("device batch"). */
    private final String what;
    private final List<DeviceBuffer> buffers = new ArrayList<>();
    private StagedCopies transfers;
    private boolean ran;
    private boolean closed;

    DeviceCall(CudaDevice device, DeviceBufferPool pool, StreamPool streams, CallStream call, int eventBase,
               Supplier<String> context, Object kernels, String what) {
        this.device = device;
        this.pool = pool;
        this.streams = streams;
        this.call = call;
        this.eventBase = eventBase;
        this.context = context;
        this.kernels = kernels;
        this.what = what;
    }

    CallStream callStream() {
        return call;
    }

    CUstream stream() {
        return call.stream();
    }

    /** This call's timing event {@code event} (counted from its event base). */
    CUevent event(int event) {
        return call.events()[eventBase + event];
    }

    /** A buffer from the pool, handed back on {@link #close()}. */
    DeviceBuffer allocate(long bytes, String what) {
        DeviceBuffer b = pool.acquire(bytes, () -> what + " of " + context.get());
        buffers.add(b);
        return b;
    }

    /** Capacity of every buffer this call allocated so far. */
    long allocatedBytes() {
        long bytes = 0;
        for (DeviceBuffer b : buffers) {
            bytes += b.capacity();
        }
        return bytes;
    }

    /** The call's staged transfers, started (for {@code what}, e.g. "the upload of ") when none is in flight. */
    StagedCopies transfers(String what) {
        if (transfers == null) {
            transfers = new StagedCopies(pool, call.stream(), () -> what + context.get());
        }
        return transfers;
    }

    /** Closes the transfers in flight (their slabs go back to the pool), once the stream is past them. */
    void releaseTransfers() {
        if (transfers != null) {
            transfers.close();
            transfers = null;
        }
    }

    void record(int event) {
        check(JCudaDriver.cuEventRecord(event(event), call.stream()), () -> "cuEventRecord for " + context.get());
    }

    /** Waits for an event; an asynchronous kernel failure is reported here with the call it was running. */
    void synchronize(int event, String what) {
        check(JCudaDriver.cuEventSynchronize(event(event)),
                () -> what + context.get() + " (kernels: " + kernels + ")");
    }

    /** Waits for the kernels queued up to {@code event}, then releases the transfers before them. */
    void awaitKernels(int event, String what) {
        synchronize(event, what);
        releaseTransfers();
    }

    /**
     * Records {@code start}, queues the downloads, records {@code end}, waits for them to land in the Java arrays and
     * releases the transfers.
     */
    void downloadAndWait(int start, int end, Consumer<StagedCopies> downloads) {
        StagedCopies copies = transfers("the download of ");
        record(start);
        downloads.accept(copies);
        record(end);
        copies.finish();
        synchronize(end, "the download of ");
        releaseTransfers();
    }

    /** Milliseconds between two recorded events of this call. */
    double elapsed(int from, int to) {
        float[] ms = new float[1];
        check(JCudaDriver.cuEventElapsedTime(ms, event(from), event(to)),
                () -> "cuEventElapsedTime for " + context.get());
        return ms[0];
    }

    void poison(DeviceBuffer b, short bits, String what) {
        if (b.bytes() > 0) {
            check(JCudaDriver.cuMemsetD16Async(b.pointer(), bits, b.bytes() / 2, call.stream()),
                    () -> "poisoning " + what + " of " + context.get());
        }
    }

    void poison(DeviceBuffer b, int bits, String what) {
        if (b.bytes() > 0) {
            check(JCudaDriver.cuMemsetD32Async(b.pointer(), bits, b.bytes() / 4, call.stream()),
                    () -> "poisoning " + what + " of " + context.get());
        }
    }

    /** Marks the kernels as queued at least once, so that their outputs on the device are valid. */
    void markRan() {
        ran = true;
    }

    boolean hasRun() {
        return ran;
    }

    void ensureOpen() {
        if (closed) {
            throw new IllegalStateException(what + " closed: " + context.get());
        }
    }

    /** Before fetching the latest run's result: the call is open and has run; makes its device current. */
    void ensureDownloadable() {
        ensureOpen();
        if (!ran) {
            throw new IllegalStateException("download() before run() on " + context.get());
        }
        device.makeCurrent();
    }

    boolean isClosed() {
        return closed;
    }

    /** Waits for queued work, then returns buffers, slabs and (when this call owns it) the stream to their pools. */
    void close() {
        if (closed) {
            return;
        }
        closed = true;
        device.makeCurrent();
        int status = JCudaDriver.cuStreamSynchronize(call.stream());
        releaseTransfers();
        for (DeviceBuffer b : buffers) {
            pool.release(b);
        }
        if (streams != null) {
            streams.release(call);
        }
        check(status, () -> "finishing the work of " + context.get());
    }
}
