package org.moba.job.spark;

import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;
import org.moba.kernels.BackendName;
import org.moba.kernels.cuda.CudaDriver;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** How many device slots (tasks that each own a device or a share of one) the cluster offers a job. */
public final class DeviceSlots {
    private static final Logger LOG = LoggerFactory.getLogger(DeviceSlots.class);

    private DeviceSlots() {
    }

    /**
     * With GPU scheduling: executors x (GPUs per executor / GPU amount per task). Without it: the GPUs visible to
     * the driver's host (local mode), or one slot for the CPU backend, which already uses every core.
     * <p>On a cluster, executors register some seconds after the session starts: the count waits for them (see
     * {@link #registeredExecutors}).
     */
    public static int count(JavaSparkContext jsc, String backend) {
        SparkConf conf = jsc.getConf();
        if (BackendName.of(backend) != BackendName.CPU
                && conf.contains("spark.executor.resource.gpu.amount")) {
            double perExecutor = Double.parseDouble(conf.get("spark.executor.resource.gpu.amount"));
            double perTask = Double.parseDouble(conf.get(SparkSessions.TASK_GPU_AMOUNT, "1"));
            int executors;
            if (conf.contains("spark.executor.instances")) {
                executors = Integer.parseInt(conf.get("spark.executor.instances"));
            } else if (SparkSessions.isLocal(conf)) {
                executors = 1;
            } else {
                executors = registeredExecutors(jsc, expectedExecutors(conf),
                        conf.getTimeAsMs("spark.scheduler.maxRegisteredResourcesWaitingTime", "30s"));
            }
            return Math.max(1, (int) Math.round(executors * perExecutor / perTask));
        }
        return Math.max(1, visibleDevices(backend));
    }

    /** Executors the application will get where the configuration says ({@code spark.cores.max} over executor
     *  cores), else 0. */
    static int expectedExecutors(SparkConf conf) {
        if (conf.contains("spark.cores.max") && conf.contains("spark.executor.cores")) {
            return Math.max(1, conf.getInt("spark.cores.max", 1) / Math.max(1, conf.getInt("spark.executor.cores", 1)));
        }
        return 0;
    }

    /**
     * Executors registered with the driver, after waiting up to {@code timeoutMs} for {@code expected} of them (when
     * known), or else for the first one and then until the count holds still for two seconds (a standalone master
     * launches all of an application's executors at once). At least 1.
     */
    static int registeredExecutors(JavaSparkContext jsc, int expected, long timeoutMs) {
        long deadline = System.currentTimeMillis() + timeoutMs;
        int last = -1;
        long lastChange = System.currentTimeMillis();
        while (true) {
            int n = jsc.sc().statusTracker().getExecutorInfos().length - 1; // the driver is listed too
            long now = System.currentTimeMillis();
            if (n != last) {
                last = n;
                lastChange = now;
            }
            boolean done = expected > 0 ? n >= expected : n > 0 && now - lastChange >= 2000;
            if (done || now >= deadline) {
                if (!done) {
                    LOG.warn("{} executor(s) registered after {} ms (expected {}); counting device slots on those",
                            n, timeoutMs, expected > 0 ? Integer.toString(expected) : "at least 1");
                }
                return Math.max(1, n);
            }
            try {
                Thread.sleep(200);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return Math.max(1, n);
            }
        }
    }

    /** CUDA devices visible to this process; 0 for the CPU backend or without a driver. */
    public static int visibleDevices(String backend) {
        if (BackendName.of(backend) == BackendName.CPU) {
            return 0;
        }
        return CudaDriver.deviceCount();
    }
}
