package org.moba.job.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.nio.file.Path;
import java.util.List;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.moba.job.MobaCli;

/** {@code bench} end to end on Spark {@code local[*]} with the CPU backend. */
class BenchCommandTest {

    @Test
    @Timeout(180)
    void benchWritesOneRowPerShapeAndDevice(@TempDir Path out) throws Exception {
        int exit = MobaCli.commandLine().execute("bench", "--backend", "cpu", "--heads", "4/2,2/2",
                "--head-dim", "32", "--chunk", "64", "--topk", "2", "--lengths", "3x300", "--warmup", "1",
                "--repeats", "3", "--out", out.toString());
        assertEquals(0, exit);
        assertTrue(new File(out.toFile(), "bench-summary.json").isFile(), "summary JSON missing");
        File[] csv = new File(out.toFile(), "bench.csv").listFiles((d, n) -> n.endsWith(".csv"));
        assertTrue(csv != null && csv.length == 1, "one CSV file expected");

        try (SparkSession spark = SparkSession.builder().master("local[1]").getOrCreate()) {
            List<Row> rows = spark.read().parquet(new File(out.toFile(), "bench.parquet").getPath())
                    .select("backend", "shape", "tokens", "mobaMedianMs", "mobaP10Ms", "mobaP90Ms",
                            "denseMedianMs", "usefulTflops", "speedupOverDense", "attendedPairs", "straggler",
                            "timedKernelMs", "taskWallMs", "inputMs", "copyMedianMs")
                    .collectAsList();
            assertEquals(2, rows.size(), "one row per shape on the single CPU slot");
            for (Row r : rows) {
                assertEquals("cpu", r.getString(0));
                assertEquals(900, r.getInt(2));
                assertTrue(r.getDouble(4) <= r.getDouble(3) && r.getDouble(3) <= r.getDouble(5), "p10 <= median <= p90");
                assertTrue(r.getDouble(6) > 0 && r.getDouble(7) > 0 && r.getDouble(8) > 0);
                assertTrue(r.getLong(9) > 0);
                assertEquals(false, r.getBoolean(10), "a single device cannot straggle behind itself");
                assertTrue(r.getDouble(11) > 0 && r.getDouble(11) < r.getDouble(12), "kernel time within task time");
                assertTrue(r.getDouble(13) > 0 && r.getDouble(13) < r.getDouble(12), "input time within task time");
                assertEquals(0.0, r.getDouble(14), "no host copies on the CPU backend");
            }
        }
    }
}
