package org.moba.spark;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.moba.kernels.Sequence;

/**
 * The per-task phase times and token counts reach where Spark users look: Spark's event log (what the history
 * server's stage page shows) records the named accumulators with every task that ran MoBA, and their sums match.
 */
@Timeout(300)
class MobaEventLogTest {

    @Test
    void eventLogHoldsTheNamedAccumulatorsPerTask(@TempDir Path dir) throws IOException {
        MobaDatasetTest.stopSpark(); // event logging is fixed when a context starts
        List<Sequence> seqs = MobaDatasetTest.sequences(70, 200, 130, 64, 300);
        long tokens = seqs.stream().mapToLong(Sequence::length).sum();
        Map<String, Object> totals;
        try (SparkSession spark = SparkSession.builder().master("local[2]")
                .config("spark.eventLog.enabled", "true")
                .config("spark.eventLog.dir", dir.toUri().toString())
                .config("spark.eventLog.compress", "false").getOrCreate()) {
            Dataset<Row> input = MobaTensors.dataset(spark, MobaDatasetTest.rows(seqs), 3);
            MobaResult result = MobaDataset.attention(input, MobaOptions.of(64, 3).withBackend("cpu")
                    .withMetrics(true));
            assertEquals(seqs.size(), result.all().count());
            totals = result.timings().asMap();
        }
        assertEquals(tokens, totals.get("tokens"), "the driver's view of the accumulators");

        // Spark 4 rolls event logs by default: a folder of event files (and an appstatus marker) per application.
        List<String> lines = new ArrayList<>();
        try (Stream<Path> files = Files.walk(dir)) {
            // Skip the appstatus marker and Hadoop's .crc side files.
            for (Path f : files.filter(Files::isRegularFile).filter(f -> !f.getFileName().toString()
                    .startsWith("appstatus") && !f.getFileName().toString().startsWith(".")).toList()) {
                lines.addAll(Files.readAllLines(f));
            }
        }
        assertTrue(!lines.isEmpty(), "no event log written under " + dir);
        ObjectMapper json = new ObjectMapper();
        Map<String, Double> perTaskSums = new HashMap<>();
        int tasksWithTokens = 0;
        for (String line : lines) {
            JsonNode event = json.readTree(line);
            if (!event.path("Event").asText().equals("SparkListenerTaskEnd")) {
                continue;
            }
            boolean sawTokens = false;
            for (JsonNode a : event.path("Task Info").path("Accumulables")) {
                String name = a.path("Name").asText();
                if (name.startsWith(MobaTimings.PREFIX)) {
                    perTaskSums.merge(name, a.path("Update").asDouble(), Double::sum);
                    sawTokens |= name.equals("moba tokens");
                }
            }
            tasksWithTokens += sawTokens ? 1 : 0;
        }
        assertEquals(3, tasksWithTokens, "each of the 3 tasks reports its tokens: " + perTaskSums);
        assertEquals((double) tokens, perTaskSums.get("moba tokens"), "the tasks' tokens add up");
        assertEquals((double) seqs.size(), perTaskSums.get("moba sequences"));
        for (String phase : List.of("moba kernel ms", "moba decode ms", "moba quality metrics ms",
                "moba backend call ms", "moba result rows ms", "moba batches")) {
            assertTrue(perTaskSums.getOrDefault(phase, 0.0) > 0, phase + " missing or zero: " + perTaskSums);
        }
        assertEquals((Double) totals.get("kernelMs"), perTaskSums.get("moba kernel ms"), 1e-6);
        // The phases the backend times happen inside its calls, so the calls' walls hold them.
        double inside = perTaskSums.get("moba kernel ms") + perTaskSums.get("moba quality metrics ms")
                + perTaskSums.getOrDefault("moba host<->device copy ms", 0.0);
        assertTrue(perTaskSums.get("moba backend call ms") >= inside,
                "backend call wall below the phases inside it: " + perTaskSums);
    }
}
