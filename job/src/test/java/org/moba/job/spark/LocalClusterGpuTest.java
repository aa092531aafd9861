package org.moba.job.spark;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.Serializable;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import org.apache.spark.SparkConf;
import org.apache.spark.SparkEnv;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.resource.ResourceInformation;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;
import org.moba.kernels.cpu.CpuMobaAttention;

/**
 * GPU scheduling on a real {@code local-cluster} (2 workers, separate executor JVMs) with fake GPU addresses:
 * tasks read the address Spark assigned them, concurrent tasks of an executor get distinct addresses (amount 1) or
 * share one (amount 0.5), and the backend each task binds computes correct results.
 */
@Timeout(240)
class LocalClusterGpuTest {
    private static final BatchLayout LAYOUT = new BatchLayout(DType.FP16, 4, 2, 32);
    private static final MobaParams PARAMS = MobaParams.of(64, 2);

    /** What one task saw and did. */
    record TaskSeen(String executor, int partition, List<String> addresses, DeviceAssignment assignment,
                    String backend, long startMs, long endMs, int outputHash) implements Serializable {
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
                MobaOutput out = ExecutorBackends.get(a).forward(batch(), PARAMS);
                Thread.sleep(400); // keep the executor's two task slots busy at the same time
                return new TaskSeen(SparkEnv.get().executorId(), p, Arrays.asList(gpu.addresses()), a,
                        ExecutorBackends.get(a).device(), start, System.currentTimeMillis(),
                        Arrays.hashCode(out.out()));
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
        }
        long concurrentPairs = 0;
        for (List<TaskSeen> tasks : byExecutor.values()) {
            for (int i = 0; i < tasks.size(); i++) {
                for (int j = i + 1; j < tasks.size(); j++) {
                    if (overlap(tasks.get(i), tasks.get(j))) {
                        concurrentPairs++;
                        assertNotEquals(tasks.get(i).addresses(), tasks.get(j).addresses(),
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
    }
}
