package org.moba.job.score;

import java.io.Serializable;
import java.util.List;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.sql.SparkSession;
import org.moba.job.spark.DeviceAssignment;
import org.moba.job.spark.DeviceSlots;
import org.moba.job.spark.ExecutorBackends;
import org.moba.kernels.MobaAttention;

/**
 * The host-to-device rate where {@code score}'s tasks run: a one-task Spark job that takes its device exactly as a
 * score task does ({@link DeviceAssignment}, the executor's pooled backend from {@link ExecutorBackends}) and times
 * one large page-locked transfer there ({@link MobaAttention#measureHostToDeviceGBps()}).
 *
 * @param device where it was measured ({@link MobaAttention#device()})
 * @param gbps   GB/s (1e9 bytes per second); NaN where the backend has no host-to-device link (the CPU)
 */
record HostToDeviceLink(String device, double gbps) implements Serializable {

    static HostToDeviceLink measure(SparkSession spark, String backend) {
        return JavaSparkContext.fromSparkContext(spark.sparkContext()).parallelize(List.of(0), 1).map(i -> {
            DeviceAssignment a = DeviceAssignment.forTask(backend, TaskContext.get(),
                    DeviceSlots.visibleDevices(backend));
            MobaAttention b = ExecutorBackends.get(a);
            return new HostToDeviceLink(b.device(), b.measureHostToDeviceGBps());
        }).collect().get(0);
    }

    /** Whether the backend has a link to time. */
    boolean measured() {
        return Double.isFinite(gbps);
    }
}
