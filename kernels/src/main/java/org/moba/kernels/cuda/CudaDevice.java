package org.moba.kernels.cuda;

import static org.moba.kernels.cuda.CudaCheck.check;

import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdevice_attribute;
import jcuda.driver.CUresult;
import jcuda.driver.JCudaDriver;

/**
 * One GPU, through its primary context (the context the CUDA runtime would use too, so other libraries in the
 * process share it). Obtained from {@link #open(int)}, which hands out one shared instance per ordinal and counts
 * references; the last {@link #close()} releases the context and the loaded kernels.
 * Thread-safe: any thread may use the device after {@link #makeCurrent()}.
 */
public final class CudaDevice implements AutoCloseable {
    /** Tensor-core MMA (mma.sync m16n8k16 with bf16) needs sm_80. */
    static final int MIN_COMPUTE_CAPABILITY = 80;

    private static final Map<Integer, CudaDevice> OPEN = new HashMap<>();

    private final int ordinal;
    private final CUdevice device;
    private final CUcontext context;
    private final String name;
    private final int computeCapability;
    private final int multiprocessors;
    private final long totalMemory;
    private final String pciBusId;
    private int references;
    private KernelModule kernels;

    private CudaDevice(int ordinal, CUdevice device, CUcontext context) {
        this.ordinal = ordinal;
        this.device = device;
        this.context = context;
        String where = "cuda:" + ordinal;
        this.name = queryName(device, where);
        this.computeCapability = 10 * attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
                + attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
        this.multiprocessors = attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
        long[] total = new long[1];
        check(JCudaDriver.cuDeviceTotalMem(total, device), "cuDeviceTotalMem on " + where);
        this.totalMemory = total[0];
        String[] bus = new String[1];
        check(JCudaDriver.cuDeviceGetPCIBusId(bus, 32, device), "cuDeviceGetPCIBusId on " + where);
        this.pciBusId = bus[0].trim();
    }

    /**
     * The shared instance for {@code ordinal}, retained once more; close it when done.
     *
     * @throws IllegalStateException when there is no usable device of that ordinal (see {@link #unavailableReason})
     */
    public static CudaDevice open(int ordinal) {
        synchronized (OPEN) {
            CudaDevice d = OPEN.get(ordinal);
            if (d == null) {
                String reason = unavailableReason(ordinal);
                if (reason != null) {
                    throw new IllegalStateException(reason);
                }
                d = OPEN.get(ordinal); // unavailableReason opened and cached it
            }
            d.references++;
            return d;
        }
    }

    /** Null when {@code ordinal} names a usable device (driver present, device exists, sm_80 or newer). */
    public static String unavailableReason(int ordinal) {
        String driver = CudaDriver.unavailableReason();
        if (driver != null) {
            return "cuda:" + ordinal + " is unavailable: " + driver;
        }
        synchronized (OPEN) {
            if (OPEN.containsKey(ordinal)) {
                return null;
            }
            int[] count = new int[1];
            int status = JCudaDriver.cuDeviceGetCount(count);
            if (status != CUresult.CUDA_SUCCESS) {
                return "cuda:" + ordinal + " is unavailable: cuDeviceGetCount failed: " + CUresult.stringFor(status);
            }
            if (ordinal < 0 || ordinal >= count[0]) {
                return "cuda:" + ordinal + " does not exist: this host has " + count[0] + " CUDA device(s)";
            }
            CUdevice device = new CUdevice();
            check(JCudaDriver.cuDeviceGet(device, ordinal), "cuDeviceGet(" + ordinal + ")");
            CUcontext context = new CUcontext();
            check(JCudaDriver.cuDevicePrimaryCtxRetain(context, device), "cuDevicePrimaryCtxRetain on cuda:" + ordinal);
            CudaDevice d;
            try {
                d = new CudaDevice(ordinal, device, context);
            } catch (RuntimeException e) {
                JCudaDriver.cuDevicePrimaryCtxRelease(device);
                throw e;
            }
            if (d.computeCapability < MIN_COMPUTE_CAPABILITY) {
                JCudaDriver.cuDevicePrimaryCtxRelease(device);
                return "cuda:" + ordinal + " (" + d.name + ") has compute capability " + d.smName()
                        + "; the MoBA kernels need sm_80 or newer (Ampere, Ada, Hopper)";
            }
            OPEN.put(ordinal, d); // kept with zero references until open() or the JVM's end
            return null;
        }
    }

    /** Makes this device's context current on the calling thread; every public entry point calls it first. */
    public void makeCurrent() {
        check(JCudaDriver.cuCtxSetCurrent(context), () -> "cuCtxSetCurrent on " + describe());
    }

    /** The fatbin's kernels, loaded into this device on first use. */
    KernelModule kernels() {
        synchronized (OPEN) {
            if (kernels == null) {
                makeCurrent();
                kernels = KernelModule.load(this);
            }
            return kernels;
        }
    }

    /** {@code [free, total]} device memory in bytes, now. */
    public long[] memoryInfo() {
        makeCurrent();
        long[] free = new long[1];
        long[] total = new long[1];
        check(JCudaDriver.cuMemGetInfo(free, total), () -> "cuMemGetInfo on " + describe());
        return new long[] {free[0], total[0]};
    }

    public long freeMemory() {
        return memoryInfo()[0];
    }

    public int ordinal() {
        return ordinal;
    }

    public String name() {
        return name;
    }

    /** Compute capability as major*10 + minor, e.g. 90 for sm_90. */
    public int computeCapability() {
        return computeCapability;
    }

    public String smName() {
        return "sm_" + computeCapability;
    }

    public int multiprocessors() {
        return multiprocessors;
    }

    public long totalMemory() {
        return totalMemory;
    }

    public String pciBusId() {
        return pciBusId;
    }

    int attribute(int attribute) {
        int[] value = new int[1];
        check(JCudaDriver.cuDeviceGetAttribute(value, attribute, device),
                () -> "cuDeviceGetAttribute(" + attribute + ") on cuda:" + ordinal);
        return value[0];
    }

    /** E.g. {@code NVIDIA H100 80GB HBM3 (cuda:0, sm_90, bus 0000:18:00.0)}. */
    public String describe() {
        return name + " (cuda:" + ordinal + ", " + smName() + ", bus " + pciBusId + ")";
    }

    @Override
    public void close() {
        synchronized (OPEN) {
            if (references == 0) {
                throw new IllegalStateException(describe() + " closed more often than opened");
            }
            if (--references > 0) {
                return;
            }
            makeCurrent();
            PinnedHostRanges.PROCESS.forget(this); // the context's page locks end with it
            if (kernels != null) {
                kernels.unload();
                kernels = null;
            }
            OPEN.remove(ordinal);
            check(JCudaDriver.cuDevicePrimaryCtxRelease(device), "cuDevicePrimaryCtxRelease on " + describe());
        }
    }

    @Override
    public String toString() {
        return describe();
    }

    private static String queryName(CUdevice device, String where) {
        byte[] bytes = new byte[256];
        check(JCudaDriver.cuDeviceGetName(bytes, bytes.length, device), "cuDeviceGetName on " + where);
        int end = 0;
        while (end < bytes.length && bytes[end] != 0) {
            end++;
        }
        return new String(bytes, 0, end, StandardCharsets.US_ASCII);
    }
}
