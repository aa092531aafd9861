package org.moba.kernels;

import java.util.Locale;
import org.moba.kernels.cpu.CpuMobaAttention;
import org.moba.kernels.cuda.CudaMobaAttention;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Opens a backend by name: {@code cpu}, {@code cuda}, or {@code auto} (cuda when the device is usable, else cpu with
 * the reason logged). The one place where that choice is made. Every backend also computes gradients
 * ({@link MobaTraining}); callers that only run the forward may hold it as a {@link MobaAttention}.
 */
public final class MobaBackends {
    private static final Logger LOG = LoggerFactory.getLogger(MobaBackends.class);

    /** The accepted backend names, for help texts and errors. */
    public static final String NAMES = "cpu, cuda, auto";

    private MobaBackends() {
    }

    /**
     * @param name          {@code cpu}, {@code cuda} or {@code auto}
     * @param deviceOrdinal the CUDA device to bind (ignored by {@code cpu})
     * @param cpuThreads    worker threads of the CPU backend
     */
    public static MobaTraining open(String name, int deviceOrdinal, int cpuThreads) {
        switch (name.trim().toLowerCase(Locale.ROOT)) {
            case "cpu":
                return new CpuMobaAttention(cpuThreads);
            case "cuda": {
                String reason = CudaMobaAttention.unavailableReason(deviceOrdinal);
                if (reason != null) {
                    throw new IllegalStateException("backend 'cuda' requested but CUDA device " + deviceOrdinal
                            + " is not usable: " + reason);
                }
                return CudaMobaAttention.open(deviceOrdinal);
            }
            case "auto": {
                String reason = CudaMobaAttention.unavailableReason(deviceOrdinal);
                if (reason == null) {
                    return CudaMobaAttention.open(deviceOrdinal);
                }
                LOG.info("backend auto: using the CPU backend ({} threads) because CUDA device {} is not usable: {}",
                        cpuThreads, deviceOrdinal, reason);
                return new CpuMobaAttention(cpuThreads);
            }
            default:
                throw new MobaInputException("unknown backend '" + name + "' (choose one of: " + NAMES + ")");
        }
    }
}
