package org.moba.kernels;

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

    private MobaBackends() {
    }

    /**
     * @param name          a {@link BackendName}: {@code cpu}, {@code cuda} or {@code auto}
     * @param deviceOrdinal the CUDA device to bind (ignored by {@code cpu})
     * @param cpuThreads    worker threads of the CPU backend
     */
    public static MobaTraining open(String name, int deviceOrdinal, int cpuThreads) {
        return switch (BackendName.of(name)) {
            case CPU -> new CpuMobaAttention(cpuThreads);
            case CUDA -> {
                String reason = CudaMobaAttention.unavailableReason(deviceOrdinal);
                if (reason != null) {
                    throw new IllegalStateException("backend 'cuda' requested but CUDA device " + deviceOrdinal
                            + " is not usable: " + reason);
                }
                yield CudaMobaAttention.open(deviceOrdinal);
            }
            case AUTO -> {
                String reason = CudaMobaAttention.unavailableReason(deviceOrdinal);
                if (reason == null) {
                    yield CudaMobaAttention.open(deviceOrdinal);
                }
                LOG.info("backend auto: using the CPU backend ({} threads) because CUDA device {} is not usable: {}",
                        cpuThreads, deviceOrdinal, reason);
                yield new CpuMobaAttention(cpuThreads);
            }
        };
    }
}
