package org.moba.kernels.cuda;

import static org.moba.kernels.cuda.CudaCheck.check;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

import jcuda.driver.CUdevice_attribute;
import jcuda.driver.CUfunction;
import jcuda.driver.CUfunction_attribute;
import jcuda.driver.CUmodule;
import jcuda.driver.JCudaDriver;

/**
 * The ahead-of-time compiled MoBA kernels ({@value #FATBIN_RESOURCE}) loaded into one device's primary context.
 * Loaded once per device by {@link CudaDevice#kernels()}; functions are looked up once and cached.
 */
final class KernelModule {
    static final String FATBIN_RESOURCE = "/org/moba/kernels/cuda/moba.fatbin";
    /** Dynamic shared memory a kernel may use without opting in. */
    private static final int DEFAULT_DYNAMIC_SMEM_LIMIT = 48 * 1024;

    private final CudaDevice device;
    private final CUmodule module;
    private final ForwardEngine engine;
    private final Map<String, Kernel> functions = new ConcurrentHashMap<>();

    /** A kernel function and the dynamic shared memory it has been allowed so far. */
    static final class Kernel {
        final String name;
        final CUfunction function;
        private int dynamicSmemLimit = DEFAULT_DYNAMIC_SMEM_LIMIT;

        private Kernel(String name, CUfunction function) {
            this.name = name;
            this.function = function;
        }
    }

    private KernelModule(CudaDevice device, CUmodule module, ForwardEngine engine) {
        this.device = device;
        this.module = module;
        this.engine = engine;
    }

    /** Call with the device's context current. */
    static KernelModule load(CudaDevice device) {
        ForwardEngine engine = ForwardEngine.forDevice(device.computeCapability(), device.describe());
        byte[] image = readFatbin();
        CUmodule module = new CUmodule();
        check(JCudaDriver.cuModuleLoadData(module, image), () -> "loading " + FATBIN_RESOURCE + " ("
                + image.length + " bytes) on " + device.describe()
                + " (a fatbin without SASS or PTX for this GPU fails here; see kernels/src/main/cuda/build-fatbin.sh)");
        return new KernelModule(device, module, engine);
    }

    /** The forward engine of this device, chosen at load ({@link ForwardEngine#forDevice}). */
    ForwardEngine engine() {
        return engine;
    }

    /** The device's streaming multiprocessors: the grid of a persistent kernel (one block each). */
    int multiprocessors() {
        return device.multiprocessors();
    }

    private static byte[] readFatbin() {
        try (InputStream in = KernelModule.class.getResourceAsStream(FATBIN_RESOURCE)) {
            if (in == null) {
                throw new IllegalStateException("the CUDA kernels are missing from the classpath: " + FATBIN_RESOURCE
                        + " (build it with kernels/src/main/cuda/build-fatbin.sh)");
            }
            return in.readAllBytes();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + FATBIN_RESOURCE, e);
        }
    }

    /** The named kernel; fails with the name and device when the fatbin does not contain it. */
    Kernel function(String name) {
        return functions.computeIfAbsent(name, n -> {
            CUfunction f = new CUfunction();
            check(JCudaDriver.cuModuleGetFunction(f, module, n),
                    () -> "looking up kernel " + n + " in " + FATBIN_RESOURCE + " on " + device.describe());
            return new Kernel(n, f);
        });
    }

    /**
     * Lets {@code kernel} use {@code bytes} of dynamic shared memory. Beyond 48 KB a kernel must opt in
     * explicitly; beyond the device's opt-in maximum the launch cannot work, which is reported here clearly.
     */
    void allowDynamicSharedMemory(Kernel kernel, int bytes) {
        if (bytes <= DEFAULT_DYNAMIC_SMEM_LIMIT) {
            return;
        }
        synchronized (kernel) {
            if (bytes <= kernel.dynamicSmemLimit) {
                return;
            }
            int max = device.attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
            if (bytes > max) {
                throw new IllegalStateException("kernel " + kernel.name + " needs " + bytes
                        + " bytes of shared memory per block; " + device.describe() + " allows at most " + max);
            }
            check(JCudaDriver.cuFuncSetAttribute(kernel.function,
                    CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes),
                    () -> "raising the dynamic shared memory of " + kernel.name + " to " + bytes + " bytes on "
                            + device.describe());
            kernel.dynamicSmemLimit = bytes;
        }
    }

    void unload() {
        check(JCudaDriver.cuModuleUnload(module), () -> "unloading the MoBA kernels from " + device.describe());
    }
}
