package org.moba.job.spark;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.Serializable;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import java.util.stream.Stream;
import org.apache.spark.SparkConf;
import org.apache.spark.SparkEnv;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.resource.ResourceInformation;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.moba.job.MobaCli;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaAttention;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;
import org.moba.kernels.cpu.CpuMobaAttention;

/**
 * GPU scheduling on a real {@code local-cluster} (2 workers, separate executor JVMs) with fake GPU addresses:
 * tasks read the address Spark assigned them, concurrent tasks of an executor get distinct addresses (amount 1) or
 * share one (amount 0.5), the backend each task binds computes correct results, and the columns every result row
 * carries ({@link TaskDevice}) say so, in a job's own outputs too.
 */
@Timeout(240)
class LocalClusterGpuTest {
    private static final BatchLayout LAYOUT = new BatchLayout(DType.FP16, 4, 2, 32);
    private static final MobaParams PARAMS = MobaParams.of(64, 2);

    /** What one task saw and did. */
    record TaskSeen(String executor, int partition, List<String> addresses, DeviceAssignment assignment,
                    TaskDevice device, String backend, long startMs, long endMs, int outputHash)
            implements Serializable {
    }

    private static PackedBatch batch() {
        return new SequencePacker(LAYOUT, 10_000).concat(List.of(
                SyntheticSequences.random(new SplittableRandom(11), LAYOUT, "a", 300),
                SyntheticSequences.random(new SplittableRandom(12), LAYOUT, "b", 77))).batch();
    }

    private static List<TaskSeen> runTasks(double taskGpuAmount, int executorGpus, int tasks) {
        SparkConf conf = new SparkConf()
                .setMaster("local-cluster[2,2,1024]")
                .setAppName("moba local-cluster gpu test")
                .set("spark.worker.resource.gpu.amount", Integer.toString(executorGpus))
                .set("spark.resources.discoveryPlugin", FakeGpuDiscovery.class.getName())
                .set("spark.executor.resource.gpu.amount", Integer.toString(executorGpus))
                .set(SparkSessions.TASK_GPU_AMOUNT, Double.toString(taskGpuAmount))
                .set("spark.executor.cores", "2")
                .set("spark.executor.memory", "768m")
                .set("spark.executor.extraClassPath", System.getProperty("moba.executor.classpath"));
        try (JavaSparkContext jsc = new JavaSparkContext(conf)) {
            return jsc.parallelize(IntStream.range(0, tasks).boxed().toList(), tasks).map(p -> {
                long start = System.currentTimeMillis();
                ResourceInformation gpu = TaskContext.get().resourcesJMap().get("gpu");
                DeviceAssignment a = DeviceAssignment.forTask("auto", TaskContext.get(), 0);
                MobaAttention backend = ExecutorBackends.get(a);
                MobaOutput out = backend.forward(batch(), PARAMS);
                Thread.sleep(400); // keep the executor's two task slots busy at the same time
                return new TaskSeen(SparkEnv.get().executorId(), p, Arrays.asList(gpu.addresses()), a,
                        TaskDevice.of(TaskContext.get(), a, backend), backend.device(), start,
                        System.currentTimeMillis(), Arrays.hashCode(out.out()));
            }).collect();
        }
    }

    private static int expectedHash() {
        try (CpuMobaAttention cpu = new CpuMobaAttention(1)) {
            return Arrays.hashCode(cpu.forward(batch(), PARAMS).out());
        }
    }

    private static boolean overlap(TaskSeen a, TaskSeen b) {
        return a.startMs() < b.endMs() && b.startMs() < a.endMs();
    }

    @Test
    void eachTaskGetsItsOwnAddressAndBindsToIt() {
        List<TaskSeen> seen = runTasks(1.0, 2, 8);
        assertEquals(8, seen.size());
        Map<String, List<TaskSeen>> byExecutor = seen.stream().collect(Collectors.groupingBy(TaskSeen::executor));
        Map<String, Set<String>> addressesOf = byExecutor.entrySet().stream().collect(Collectors.toMap(
                Map.Entry::getKey, e -> e.getValue().stream().flatMap(t -> t.addresses().stream())
                        .collect(Collectors.toSet())));
        if (addressesOf.size() == 2) {
            Set<String> shared = new HashSet<>(addressesOf.values().iterator().next());
            addressesOf.values().stream().skip(1).forEach(shared::retainAll);
            assertTrue(shared.isEmpty(), "two executors were handed the same GPU address: " + addressesOf);
        }
        int expected = expectedHash();
        for (TaskSeen t : seen) {
            assertEquals(1, t.addresses().size(), "amount 1 means one address per task");
            assertEquals("spark", t.assignment().source(), "the task must use Spark's assignment");
            assertEquals(Integer.parseInt(t.addresses().get(0)), t.assignment().ordinal(),
                    "the backend binds to the address Spark assigned");
            assertEquals(expected, t.outputHash(), "task " + t.partition() + " computed a different output");
            assertRecordsItsPinning(t);
        }
        long concurrentPairs = 0;
        for (List<TaskSeen> tasks : byExecutor.values()) {
            for (int i = 0; i < tasks.size(); i++) {
                for (int j = i + 1; j < tasks.size(); j++) {
                    if (overlap(tasks.get(i), tasks.get(j))) {
                        concurrentPairs++;
                        assertNotEquals(tasks.get(i).device().gpuAddresses(), tasks.get(j).device().gpuAddresses(),
                                "concurrent tasks of executor " + tasks.get(i).executor() + " share a GPU");
                    }
                }
            }
        }
        assertTrue(concurrentPairs > 0, "no two tasks of an executor ran at once; the test proved nothing");
    }

    @Test
    void fractionalAmountsShareOneDevicePerExecutor() {
        List<TaskSeen> seen = runTasks(0.5, 1, 8);
        int expected = expectedHash();
        long concurrentPairs = 0;
        for (List<TaskSeen> tasks : seen.stream().collect(Collectors.groupingBy(TaskSeen::executor)).values()) {
            assertEquals(1, tasks.stream().map(TaskSeen::addresses).distinct().count(),
                    "an executor with one GPU hands that GPU to every task");
            for (int i = 0; i < tasks.size(); i++) {
                for (int j = i + 1; j < tasks.size(); j++) {
                    concurrentPairs += overlap(tasks.get(i), tasks.get(j)) ? 1 : 0;
                }
            }
        }
        assertTrue(concurrentPairs > 0, "amount 0.5 should run two tasks of an executor at once");
        seen.forEach(t -> assertEquals(expected, t.outputHash(), "shared-device task " + t.partition()));
        seen.forEach(LocalClusterGpuTest::assertRecordsItsPinning);
    }

    /** The columns every result row carries: the task's executor, its Spark address, the ordinal bound to it. */
    private static void assertRecordsItsPinning(TaskSeen t) {
        TaskDevice d = t.device();
        assertEquals(t.executor(), d.executorId(), "the executor that ran the task");
        assertNotEquals("driver", d.executorId(), "local-cluster tasks run on executors");
        assertEquals(String.join(",", t.addresses()), d.gpuAddresses(), "Spark's assignment, as recorded");
        assertEquals(Integer.parseInt(d.gpuAddresses()), d.deviceOrdinal(), "the ordinal bound is the address");
        assertNull(d.pciBusId(), "no CUDA device here: no PCI bus id");
    }

    /**
     * The bench job itself on the cluster (4 device slots: 2 executors x 2 fake GPUs, task amount 1): every row
     * records its executor, the address Spark assigned its task and the ordinal bound to it, and the 4 concurrent
     * tasks ran on 4 distinct (executor, address) pairs, in the CSV, the JSON summary and the Parquet alike.
     */
    @Test
    void benchRowsRecordTheirExecutorAndDevice(@TempDir Path out) throws Exception {
        Map<String, String> props = new LinkedHashMap<>();
        props.put("spark.master", "local-cluster[2,2,1024]");
        props.put("spark.worker.resource.gpu.amount", "2");
        props.put("spark.resources.discoveryPlugin", FakeGpuDiscovery.class.getName());
        props.put("spark.executor.resource.gpu.amount", "2");
        props.put(SparkSessions.TASK_GPU_AMOUNT, "1");
        props.put("spark.executor.cores", "2");
        props.put("spark.cores.max", "4");
        props.put("spark.scheduler.minRegisteredResourcesRatio", "1.0");
        props.put("spark.executor.memory", "768m");
        props.put("spark.ui.enabled", "false");
        props.put("spark.executor.extraClassPath", System.getProperty("moba.executor.classpath"));
        props.forEach(System::setProperty);
        int exit;
        try {
            exit = MobaCli.commandLine().execute("bench", "--backend", "auto", "--heads", "2/2",
                    "--head-dim", "32", "--chunk", "64", "--topk", "2", "--lengths", "2x200", "--warmup", "0",
                    "--repeats", "2", "--out", out.toString());
        } finally {
            props.keySet().forEach(System::clearProperty);
        }
        assertEquals(0, exit);
        JsonNode summary = new ObjectMapper().readTree(out.resolve("bench-summary.json").toFile());
        assertEquals(4, summary.get("slots").asInt(), "2 executors x 2 GPUs / 1 GPU per task");
        Set<String> pairs = new HashSet<>();
        Map<String, Set<String>> addressesOf = new HashMap<>();
        for (JsonNode r : summary.get("rows")) {
            String executor = r.get("executorId").asText();
            String gpu = r.get("gpuAddresses").asText();
            assertTrue(!executor.isEmpty() && !executor.equals("driver"), "executor id " + executor);
            assertEquals(gpu, Integer.toString(r.get("deviceOrdinal").asInt()), "the ordinal bound is the address");
            assertTrue(r.get("pciBusId").isNull(), "no CUDA device: no PCI bus id");
            assertEquals("spark", r.get("deviceSource").asText());
            pairs.add(executor + "/" + gpu);
            addressesOf.computeIfAbsent(executor, e -> new HashSet<>()).add(gpu);
        }
        assertEquals(4, summary.get("rows").size());
        assertEquals(4, pairs.size(), "4 concurrent tasks on 4 distinct (executor, GPU) pairs: " + pairs);
        assertEquals(2, addressesOf.size(), "both executors ran tasks: " + addressesOf);
        Set<String> all = new HashSet<>();
        addressesOf.values().forEach(all::addAll);
        assertEquals(4, all.size(), "the executors were handed disjoint addresses: " + addressesOf);
        assertEquals(4, summary.get("devices").size(), "the summary lists the 4 devices");

        List<String> csv = csvLines(out.resolve("bench.csv"));
        // The pinning columns come before "device" (a CPU description with commas): a plain split reaches them.
        List<String> header = Arrays.asList(csv.get(0).split(","));
        for (String column : List.of("host", "executorId", "gpuAddresses", "deviceOrdinal", "pciBusId")) {
            assertTrue(header.contains(column), "bench.csv lacks " + column + ": " + header);
        }
        Set<String> csvPairs = new HashSet<>();
        for (String line : csv.subList(1, csv.size())) {
            String[] cells = line.split(",");
            String gpu = cells[header.indexOf("gpuAddresses")];
            assertEquals(gpu, cells[header.indexOf("deviceOrdinal")]);
            csvPairs.add(cells[header.indexOf("executorId")] + "/" + gpu);
        }
        assertEquals(pairs, csvPairs, "the CSV records the same devices as the summary");
    }

    private static List<String> csvLines(Path folder) throws IOException {
        try (Stream<Path> files = Files.list(folder)) {
            Path part = files.filter(f -> f.getFileName().toString().endsWith(".csv")).findFirst().orElseThrow();
            return Files.readAllLines(part);
        }
    }
}
