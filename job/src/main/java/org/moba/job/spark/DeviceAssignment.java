package org.moba.job.spark;

import java.io.Serializable;
import org.apache.spark.TaskContext;
import org.moba.kernels.BackendName;

/**
 * Which backend and device a task runs on, and why. Decided in one place:
 * <ol>
 *   <li>the GPU address Spark assigned the task ({@code TaskContext.resources()}), when there is one;</li>
 *   <li>otherwise, for a GPU-capable backend, the devices visible to the process, spread over task slots by
 *       partition id (logged by the caller);</li>
 *   <li>otherwise the CPU backend.</li>
 * </ol>
 *
 * @param backend the backend name to open ({@code cpu}, {@code cuda} or {@code auto})
 * @param ordinal the CUDA device ordinal ({@code -1} for the CPU)
 * @param source  where the decision came from: {@code spark}, {@code visible}, {@code cpu} (asked for), or
 *                {@code fallback} (auto found no CUDA device)
 */
public record DeviceAssignment(String backend, int ordinal, String source) implements Serializable {

    public static DeviceAssignment forTask(String requestedBackend, TaskContext task, int visibleDevices) {
        return decide(requestedBackend, TaskDevice.sparkAddresses(task), task == null ? 0 : task.partitionId(),
                visibleDevices);
    }

    static DeviceAssignment decide(String requestedBackend, String[] sparkAddresses, int partition,
                                   int visibleDevices) {
        BackendName requested = BackendName.of(requestedBackend);
        String backend = requested.label();
        if (requested == BackendName.CPU) {
            return new DeviceAssignment(backend, -1, "cpu");
        }
        if (sparkAddresses != null && sparkAddresses.length > 0) {
            String address = sparkAddresses[0].trim();
            try {
                return new DeviceAssignment(backend, Integer.parseInt(address), "spark");
            } catch (NumberFormatException e) {
                throw new IllegalStateException("Spark assigned GPU address '" + address + "', which is not a CUDA"
                        + " device ordinal; the discovery script must emit ordinals such as \"0\", \"1\"", e);
            }
        }
        if (visibleDevices > 0) {
            return new DeviceAssignment(backend, Math.floorMod(partition, visibleDevices), "visible");
        }
        if (requested == BackendName.CUDA) {
            throw new IllegalStateException("backend 'cuda' requested but Spark assigned this task no GPU and no"
                    + " CUDA device is visible to the executor");
        }
        return new DeviceAssignment(BackendName.CPU.label(), -1, "fallback");
    }
}
