package org.moba.job.spark;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.moba.kernels.MobaAttention;
import org.moba.kernels.MobaBackends;
import org.moba.kernels.cuda.CudaDriver;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The executor-side owner of backends: one {@link MobaAttention} per (backend, device) per JVM, shared by every task
 * of the executor (backends are thread-safe), closed when the JVM exits.
 */
public final class ExecutorBackends {
    private static final Logger LOG = LoggerFactory.getLogger(ExecutorBackends.class);
    private static final Map<DeviceAssignment, MobaAttention> OPEN = new ConcurrentHashMap<>();

    static {
        Runtime.getRuntime().addShutdownHook(new Thread(ExecutorBackends::closeAll, "moba-backends-close"));
    }

    private ExecutorBackends() {
    }

    public static MobaAttention get(DeviceAssignment assignment) {
        return OPEN.computeIfAbsent(assignment, a -> {
            MobaAttention backend = MobaBackends.open(a.backend(), Math.max(a.ordinal(), 0),
                    Runtime.getRuntime().availableProcessors());
            if (a.source().equals("fallback")) {
                LOG.info("backend auto: no CUDA device visible to this executor ({}); using the CPU backend",
                        CudaDriver.unavailableReason() == null ? "the driver reports 0 devices"
                                : CudaDriver.unavailableReason());
            }
            LOG.info("opened backend {} on {} (device chosen by: {})", backend.name(), backend.device(), a.source());
            return backend;
        });
    }

    static void closeAll() {
        OPEN.values().forEach(MobaAttention::close);
        OPEN.clear();
    }
}
