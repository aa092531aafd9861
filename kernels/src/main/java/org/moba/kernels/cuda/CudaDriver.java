package org.moba.kernels.cuda;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import jcuda.driver.CUresult;
import jcuda.driver.JCudaDriver;

/**
 * Loads JCuda's driver binding once per JVM and initializes the CUDA driver, remembering the verdict.
 *
 * <p>JCuda copies its native libraries into {@code java.io.tmpdir} under fixed names without a lock; two JVMs
 * doing that at once crash in the dynamic loader (docs/spark-gpu.md "JCuda's native libraries"). The first load
 * therefore happens under a host-wide {@link FileLock} on a file in that same directory, so every JVM that shares the
 * copies shares the lock.
 */
public final class CudaDriver {
    private static final String LOCK_FILE = "moba-jcuda-natives.lock";

    /** null: not tried yet; "" : usable; anything else: why CUDA cannot be used in this JVM. */
    private static String verdict;

    private CudaDriver() {
    }

    /** Null when the CUDA driver is loaded and initialized, else a sentence saying why not. */
    public static synchronized String unavailableReason() {
        if (verdict == null) {
            verdict = load();
        }
        return verdict.isEmpty() ? null : verdict;
    }

    /** Throws {@link IllegalStateException} with the reason when the driver cannot be used. */
    public static void require() {
        String reason = unavailableReason();
        if (reason != null) {
            throw new IllegalStateException(reason);
        }
    }

    /** CUDA devices visible to this process; 0 when the driver cannot be used. */
    public static int deviceCount() {
        if (unavailableReason() != null) {
            return 0;
        }
        int[] count = {0};
        return JCudaDriver.cuDeviceGetCount(count) == CUresult.CUDA_SUCCESS ? count[0] : 0;
    }

    private static String load() {
        Path lockPath = Path.of(System.getProperty("java.io.tmpdir"), LOCK_FILE);
        try (FileChannel channel = FileChannel.open(lockPath, StandardOpenOption.CREATE, StandardOpenOption.WRITE);
             FileLock ignored = channel.lock()) {
            return initialize();
        } catch (IOException e) {
            return "cannot lock " + lockPath + " to load the JCuda native libraries safely: " + e;
        }
    }

    private static String initialize() {
        try {
            // Status codes are checked explicitly so that errors can name the kernel, device and batch.
            JCudaDriver.setExceptionsEnabled(false);
            int status = JCudaDriver.cuInit(0);
            if (status != CUresult.CUDA_SUCCESS) {
                return "the CUDA driver failed to initialize (cuInit: " + CUresult.stringFor(status) + ")";
            }
            return "";
        } catch (LinkageError e) {
            // UnsatisfiedLinkError on the first touch (no libcuda.so.1), NoClassDefFoundError on later ones.
            return "the CUDA driver library could not be loaded (no NVIDIA driver on this host?): "
                    + essence(e.getMessage());
        }
    }

    /** JCuda's message spans many lines with nested stack traces; keep the line that names the missing file. */
    private static String essence(String message) {
        if (message == null) {
            return "(no message)";
        }
        String[] lines = message.split("\\R");
        for (String line : lines) {
            if (line.contains("cannot open shared object file")) {
                return line.trim();
            }
        }
        return lines[0].trim();
    }
}
