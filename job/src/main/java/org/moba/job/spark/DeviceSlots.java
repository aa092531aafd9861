package org.moba.job.spark;

import java.util.Locale;
import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;
import org.moba.kernels.cuda.CudaDriver;

/** How many device slots (tasks that each own a device or a share of one) the cluster offers a job. */
public final class DeviceSlots {
    private DeviceSlots() {
    }

    /**
     * With GPU scheduling: executors x (GPUs per executor / GPU amount per task). Without it: the GPUs visible to
     * the driver's host (local mode), or one slot for the CPU backend, which already uses every core.
     */
    public static int count(JavaSparkContext jsc, String backend) {
        SparkConf conf = jsc.getConf();
        if (!backend.trim().toLowerCase(Locale.ROOT).equals("cpu")
                && conf.contains("spark.executor.resource.gpu.amount")) {
            double perExecutor = Double.parseDouble(conf.get("spark.executor.resource.gpu.amount"));
            double perTask = Double.parseDouble(conf.get(SparkSessions.TASK_GPU_AMOUNT, "1"));
            int executors = Math.max(1, jsc.sc().statusTracker().getExecutorInfos().length - 1);
            if (conf.contains("spark.executor.instances")) {
                executors = Integer.parseInt(conf.get("spark.executor.instances"));
            }
            return Math.max(1, (int) Math.round(executors * perExecutor / perTask));
        }
        return Math.max(1, visibleDevices(backend));
    }

    /** CUDA devices visible to this process; 0 for the CPU backend or without a driver. */
    public static int visibleDevices(String backend) {
        if (backend.trim().toLowerCase(Locale.ROOT).equals("cpu")) {
            return 0;
        }
        return CudaDriver.deviceCount();
    }
}
