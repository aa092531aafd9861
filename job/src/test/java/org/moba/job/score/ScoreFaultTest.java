package org.moba.job.score;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.moba.job.MobaCli;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.Sequence;
import org.moba.kernels.SyntheticSequences;

/**
 * An executor JVM is killed while {@code score} runs on a {@code local-cluster}: the job must still finish, with
 * every input record exactly once in the output (scored or rejected), none lost and none duplicated.
 */
class ScoreFaultTest {
    private static final BatchLayout LAYOUT = new BatchLayout(DType.BF16, 4, 4, 64);

    @Test
    @Timeout(300)
    void executorKilledMidScoreLosesAndDuplicatesNothing(@TempDir Path dir) throws Exception {
        int records = 48;
        try (SparkSession local = SparkSession.builder().master("local[2]").getOrCreate()) {
            SyntheticSequences synth = new SyntheticSequences(3, LAYOUT);
            List<Row> rows = IntStream.range(0, records).mapToObj(i -> {
                Sequence s = synth.generate(i, 1500 + 10 * i);
                return RowFactory.create("r" + i, s.length(), "bf16", 4, 4, 64, TensorRecord.bytes(s.q()),
                        TensorRecord.bytes(s.k()), TensorRecord.bytes(s.v()));
            }).toList();
            // One bad record too: it must land in the rejects exactly once as well.
            rows = new java.util.ArrayList<>(rows);
            rows.add(RowFactory.create("bad", 10, "bf16", 4, 4, 64, new byte[3], new byte[3], new byte[3]));
            local.createDataFrame(rows, ScoreSchema.INPUT).write().parquet(dir.resolve("in").toString());
        }

        Map<String, String> settings = Map.of(
                "spark.master", "local-cluster[2,1,1024]",
                "spark.executor.memory", "768m",
                "spark.executor.extraClassPath", System.getProperty("moba.executor.classpath"));
        settings.forEach(System::setProperty);
        AtomicBoolean killed = new AtomicBoolean();
        Thread killer = new Thread(() -> killOneExecutorOnceBusy(killed), "executor-killer");
        killer.setDaemon(true);
        killer.start();
        int exit;
        try {
            exit = MobaCli.commandLine().execute("score", "--input", dir.resolve("in").toString(),
                    "--out", dir.resolve("out").toString(), "--backend", "cpu", "--chunk", "128", "--topk", "2",
                    "--tokens-per-batch", "3000", "--partitions", "12", "--bad-records", "skip");
        } finally {
            settings.keySet().forEach(System::clearProperty);
            killer.interrupt();
        }
        assertEquals(0, exit);
        assertTrue(killed.get(), "no executor was killed: the test proved nothing");

        try (SparkSession check = SparkSession.builder().master("local[1]").getOrCreate()) {
            List<Row> out = check.read().parquet(dir.resolve("out/score.parquet").toString())
                    .select("id", "outcome").collectAsList();
            Map<String, Long> counts = out.stream().collect(Collectors.groupingBy(r -> r.getString(0),
                    Collectors.counting()));
            assertEquals(records + 1, counts.size(), "every record present");
            counts.forEach((id, n) -> assertEquals(1L, n, id + " appears " + n + " times"));
            assertEquals(1, out.stream().filter(r -> r.getString(1).equals(ScoreSchema.REJECTED)).count());
        }
    }

    /** Waits until both executors run and work has started, then kills one executor JVM. */
    private static void killOneExecutorOnceBusy(AtomicBoolean killed) {
        try {
            long deadline = System.currentTimeMillis() + 120_000;
            while (System.currentTimeMillis() < deadline) {
                List<ProcessHandle> executors = ProcessHandle.current().descendants()
                        .filter(p -> p.info().commandLine().orElse("").contains("CoarseGrainedExecutorBackend"))
                        .toList();
                Optional<ProcessHandle> old = executors.stream().filter(p -> p.info().startInstant()
                        .map(t -> t.plusSeconds(8).isBefore(java.time.Instant.now())).orElse(false)).findFirst();
                if (executors.size() >= 2 && old.isPresent()) {
                    killed.set(old.get().destroyForcibly());
                    return;
                }
                Thread.sleep(200);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
