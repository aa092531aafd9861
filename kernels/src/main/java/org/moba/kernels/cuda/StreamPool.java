package org.moba.kernels.cuda;

import static org.moba.kernels.cuda.CudaCheck.check;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ConcurrentLinkedDeque;

import jcuda.driver.CUevent;
import jcuda.driver.CUevent_flags;
import jcuda.driver.CUstream;
import jcuda.driver.CUstream_flags;
import jcuda.driver.JCudaDriver;

/**
 * CUDA streams, each with the timing events of one call, reused across calls (creating them costs a driver round
 * trip each). A call takes one, so concurrent calls on the same device overlap. Thread-safe.
 */
final class StreamPool implements AutoCloseable {
    /** A stream and {@code events} timing events; the events' meaning is up to the call using them. */
    record CallStream(CUstream stream, CUevent[] events) {
    }

    private final CudaDevice device;
    private final int eventsPerStream;
    private final ConcurrentLinkedDeque<CallStream> idle = new ConcurrentLinkedDeque<>();
    private final List<CallStream> all = new ArrayList<>();

    StreamPool(CudaDevice device, int eventsPerStream) {
        this.device = device;
        this.eventsPerStream = eventsPerStream;
    }

    /** The device's context must be current. */
    CallStream acquire() {
        CallStream s = idle.poll();
        if (s != null) {
            return s;
        }
        CUstream stream = new CUstream();
        // Non-blocking: the call must not serialize with work other libraries put on the legacy default stream.
        check(JCudaDriver.cuStreamCreate(stream, CUstream_flags.CU_STREAM_NON_BLOCKING),
                () -> "cuStreamCreate on " + device.describe());
        CUevent[] events = new CUevent[eventsPerStream];
        for (int i = 0; i < events.length; i++) {
            events[i] = new CUevent();
            check(JCudaDriver.cuEventCreate(events[i], CUevent_flags.CU_EVENT_DEFAULT),
                    () -> "cuEventCreate on " + device.describe());
        }
        s = new CallStream(stream, events);
        synchronized (all) {
            all.add(s);
        }
        return s;
    }

    /** Only once nothing queued on the stream is still needed. */
    void release(CallStream s) {
        idle.push(s);
    }

    /** Destroys every stream and event. The device's context must be current. */
    @Override
    public void close() {
        synchronized (all) {
            for (CallStream s : all) {
                JCudaDriver.cuStreamSynchronize(s.stream());
                for (CUevent e : s.events()) {
                    JCudaDriver.cuEventDestroy(e);
                }
                JCudaDriver.cuStreamDestroy(s.stream());
            }
            all.clear();
            idle.clear();
        }
    }
}
