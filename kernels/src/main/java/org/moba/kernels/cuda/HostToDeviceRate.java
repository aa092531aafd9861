package org.moba.kernels.cuda;

import static org.moba.kernels.cuda.CudaCheck.check;

import java.util.Arrays;

import jcuda.Pointer;
import jcuda.driver.CUevent;
import jcuda.driver.CUresult;
import jcuda.driver.JCudaDriver;

import org.moba.kernels.cuda.DeviceBufferPool.DeviceBuffer;
import org.moba.kernels.cuda.StreamPool.CallStream;

/**
 * The host-to-device bandwidth of a device: one large copy from page-locked host memory, timed with events on the
 * device, repeated; the median. What no upload of the same bytes can beat, so {@code score --measure-bound} takes it
 * as the link's side of the bound.
 */
final class HostToDeviceRate {
    /** Large enough that the copy's fixed cost (microseconds) is lost in it, small enough to pin anywhere. */
    static final long BYTES = 256L << 20;
    static final int REPEATS = 5;

    private HostToDeviceRate() {
    }

    /** GB/s (1e9 bytes per second), the median of {@link #REPEATS} timed copies after one untimed. */
    static double measure(CudaDevice device, DeviceBufferPool pool, StreamPool streams) {
        device.makeCurrent();
        Pointer host = new Pointer();
        int status = JCudaDriver.cuMemAllocHost(host, BYTES);
        if (status == CUresult.CUDA_ERROR_OUT_OF_MEMORY) {
            throw new CudaOutOfMemoryException("cannot pin " + BYTES + " bytes of host memory to time the"
                    + " host-to-device link of " + device.describe());
        }
        check(status, () -> "cuMemAllocHost(" + BYTES + " bytes) on " + device.describe());
        DeviceBuffer target = null;
        CallStream call = null;
        try {
            target = pool.acquire(BYTES, () -> "the host-to-device timing copy");
            call = streams.acquire();
            CUevent start = call.events()[0];
            CUevent end = call.events()[1];
            double[] gbps = new double[REPEATS];
            for (int i = -1; i < REPEATS; i++) {
                check(JCudaDriver.cuEventRecord(start, call.stream()), "cuEventRecord");
                check(JCudaDriver.cuMemcpyHtoDAsync(target.pointer(), host, BYTES, call.stream()),
                        () -> "cuMemcpyHtoDAsync of " + BYTES + " bytes on " + device.describe());
                check(JCudaDriver.cuEventRecord(end, call.stream()), "cuEventRecord");
                check(JCudaDriver.cuEventSynchronize(end), () -> "the timing copy on " + device.describe());
                float[] ms = new float[1];
                check(JCudaDriver.cuEventElapsedTime(ms, start, end), "cuEventElapsedTime");
                if (i >= 0) { // the first copy is untimed: it pays for first touches of the pages and the mappings
                    gbps[i] = BYTES / (ms[0] * 1e6);
                }
            }
            Arrays.sort(gbps);
            return gbps[REPEATS / 2];
        } finally {
            if (call != null) {
                JCudaDriver.cuStreamSynchronize(call.stream());
                streams.release(call);
            }
            if (target != null) {
                pool.release(target);
            }
            JCudaDriver.cuMemFreeHost(host);
        }
    }
}
