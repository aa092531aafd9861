package org.moba.job.spark;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.spark.SparkContext;
import org.moba.kernels.BackendName;
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

    /**
     * In local mode the driver is the executor: opens the backends its tasks will take, on a daemon thread, so that
     * creating a CUDA context and loading the kernels (about 2 s on an H100 host) overlaps listing the input instead
     * of holding up the first tasks. Does nothing in cluster mode (executors are other processes), for the CPU
     * backend, or when no GPU is visible. A failure here is left to the tasks, which open the backend again and
     * report it.
     */
    public static void warmUpLocal(SparkContext sc, String backend) {
        if (!sc.isLocal() || BackendName.of(backend) == BackendName.CPU) {
            return;
        }
        Thread warmUp = new Thread(() -> {
            int visible = DeviceSlots.visibleDevices(backend);
            for (int device = 0; device < visible; device++) {
                try {
                    get(DeviceAssignment.decide(backend, null, device, visible));
                } catch (RuntimeException e) {
                    LOG.debug("warming up backend {} on device {} failed; the tasks will open it: {}", backend,
                            device, e.toString());
                }
            }
        }, "moba backend warm-up");
        warmUp.setDaemon(true);
        warmUp.start();
    }

    static void closeAll() {
        OPEN.values().forEach(MobaAttention::close);
        OPEN.clear();
    }
}
