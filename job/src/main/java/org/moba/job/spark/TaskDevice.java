package org.moba.job.spark;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.function.ToLongFunction;
import org.apache.spark.SparkEnv;
import org.apache.spark.TaskContext;
import org.apache.spark.resource.ResourceInformation;
import org.moba.kernels.MobaAttention;
import org.moba.kernels.cuda.CudaMobaAttention;

/**
 * Where a task ran, as every result row of {@code bench}, {@code sweep} and {@code score} records it: the proof that
 * the task used the device Spark assigned it. Columns: {@code host}, {@code executorId} ({@code driver} in local
 * mode), {@code gpuAddresses} (the addresses Spark assigned the task, comma-separated; null when Spark assigned
 * none), {@code deviceOrdinal} (the CUDA ordinal the task's backend is bound to; for the CPU backend the ordinal it
 * was assigned, -1 when none) and {@code pciBusId} (of the bound CUDA device, as the driver reports it; null on the
 * CPU). {@code score} spells them in snake case ({@code executor_id}, {@code gpu_addresses}, ...), like its other
 * columns.
 */
public record TaskDevice(String host, String executorId, String gpuAddresses, int deviceOrdinal, String pciBusId)
        implements Serializable {

    /** The device of the running task whose backend was opened for {@code assignment}. */
    public static TaskDevice of(TaskContext task, DeviceAssignment assignment, MobaAttention backend) {
        SparkEnv env = SparkEnv.get();
        return of(Hosts.name(), env == null ? null : env.executorId(), sparkAddresses(task), assignment, backend);
    }

    static TaskDevice of(String host, String executorId, String[] addresses, DeviceAssignment assignment,
                         MobaAttention backend) {
        String gpu = addresses == null || addresses.length == 0 ? null : String.join(",", addresses);
        if (backend instanceof CudaMobaAttention cuda) {
            int bound = cuda.cudaDevice().ordinal();
            if (assignment.ordinal() >= 0 && bound != assignment.ordinal()) {
                throw new IllegalStateException("task assigned CUDA device " + assignment.ordinal() + " ("
                        + assignment.source() + ") but its backend is bound to " + cuda.device());
            }
            return new TaskDevice(host, executorId, gpu, bound, cuda.cudaDevice().pciBusId());
        }
        return new TaskDevice(host, executorId, gpu, assignment.ordinal(), null);
    }

    /** The GPU addresses Spark assigned the task, or null (no task, or no GPU scheduling). */
    static String[] sparkAddresses(TaskContext task) {
        if (task == null) {
            return null;
        }
        ResourceInformation gpu = task.resourcesJMap().get("gpu");
        return gpu == null ? null : gpu.addresses();
    }

    /** {@code executor/gpu/ordinal/bus}, for logs and tables ({@code -} for a null). */
    public String label() {
        return dash(executorId) + "/" + dash(gpuAddresses) + "/" + deviceOrdinal + "/" + dash(pciBusId);
    }

    private static String dash(String s) {
        return s == null ? "-" : s;
    }

    /**
     * The distinct devices of a job's rows with how many rows (and, when given, tokens) each produced, for the JSON
     * summaries and HTML reports: one map per device with the column names above plus {@code rows} and
     * {@code tokens}.
     */
    public static <T> List<Map<String, Object>> usage(Collection<T> rows, java.util.function.Function<T, TaskDevice> device,
                                                      ToLongFunction<T> tokens) {
        Map<String, long[]> counts = new TreeMap<>();
        Map<String, TaskDevice> devices = new LinkedHashMap<>();
        for (T row : rows) {
            TaskDevice d = device.apply(row);
            String key = d.host() + "|" + d.label();
            devices.putIfAbsent(key, d);
            long[] c = counts.computeIfAbsent(key, k -> new long[2]);
            c[0]++;
            c[1] += tokens.applyAsLong(row);
        }
        List<Map<String, Object>> out = new ArrayList<>();
        counts.forEach((key, c) -> {
            TaskDevice d = devices.get(key);
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("host", d.host());
            m.put("executorId", d.executorId());
            m.put("gpuAddresses", d.gpuAddresses());
            m.put("deviceOrdinal", d.deviceOrdinal());
            m.put("pciBusId", d.pciBusId());
            m.put("rows", c[0]);
            m.put("tokens", c[1]);
            out.add(m);
        });
        return out;
    }

    /** Column headings and cells of {@link #usage} for an HTML table. */
    public static List<String> usageHeadings() {
        return List.of("host", "executor", "GPU address(es)", "CUDA ordinal", "PCI bus id", "rows", "tokens");
    }

    public static List<List<String>> usageCells(List<Map<String, Object>> usage) {
        return usage.stream().map(m -> List.of(String.valueOf(m.get("host")), str(m.get("executorId")),
                str(m.get("gpuAddresses")), String.valueOf(m.get("deviceOrdinal")), str(m.get("pciBusId")),
                String.valueOf(m.get("rows")), String.valueOf(m.get("tokens")))).toList();
    }

    private static String str(Object o) {
        return Objects.toString(o, "-");
    }
}
