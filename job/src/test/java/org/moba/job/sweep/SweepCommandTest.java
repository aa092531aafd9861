package org.moba.job.sweep;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
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
import org.moba.kernels.DType;
import org.moba.kernels.reference.OracleComparison;

/** {@code sweep} end to end on Spark {@code local[*]}: the CPU backend against the float64 oracle. */
class SweepCommandTest {

    @Test
    @Timeout(180)
    void cpuBackendPassesASmallSweepAndEverySequenceIsReported(@TempDir Path out) throws Exception {
        int exit = MobaCli.commandLine().execute("sweep", "--backend", "cpu", "--dtype", "fp16,bf16",
                "--heads", "4/2", "--head-dim", "32", "--chunk", "16", "--topk", "1,3",
                "--mixes", "boundary:2,huge:5:3:600,single:3", "--oracle-rows", "300", "--out", out.toString());
        assertEquals(0, exit, "every configuration should pass");
        try (SparkSession spark = SparkSession.builder().master("local[1]").getOrCreate()) {
            List<Row> rows = spark.read().parquet(new File(out.toFile(), "sweep.parquet").getPath())
                    .select("config", "length", "tokensCompared", "outRelL2", "lseRelL2", "pass", "reproduce")
                    .collectAsList();
            // 2 dtypes x 2 topk x (6 boundary + 5 huge + 3 single) sequences
            assertEquals(2 * 2 * (6 + 5 + 3), rows.size());
            for (Row r : rows) {
                assertTrue(r.getBoolean(5), "failed: " + r);
                assertTrue(r.getInt(2) >= 1 && r.getInt(2) <= r.getInt(1), "tokens compared within the sequence");
                assertTrue(r.getString(6).startsWith("./submit.sh sweep --backend cpu --dtype "));
            }
            // The huge mix exceeds --oracle-rows: its rows are sampled, and the sample is stated.
            assertTrue(rows.stream().anyMatch(r -> r.getString(0).contains("huge") && r.getInt(2) < r.getInt(1)));
        }
    }

    @Test
    @Timeout(180)
    void backwardChecksEveryGradientOfSmallBatches(@TempDir Path out) throws Exception {
        int exit = MobaCli.commandLine().execute("sweep", "--backend", "cpu", "--dtype", "bf16",
                "--heads", "4/2", "--head-dim", "32", "--chunk", "16", "--topk", "3", "--backward",
                "--mixes", "boundary:2,single:3", "--out", out.toString());
        assertEquals(0, exit, "every configuration should pass");
        try (SparkSession spark = SparkSession.builder().master("local[1]").getOrCreate()) {
            List<Row> rows = spark.read().parquet(new File(out.toFile(), "sweep.parquet").getPath())
                    .select("length", "dqRelL2", "dkRelL2", "dvRelL2", "dqMaxAbs", "pass", "reproduce")
                    .collectAsList();
            assertEquals(6 + 3, rows.size());
            for (Row r : rows) {
                for (int i = 1; i <= 4; i++) {
                    assertFalse(r.isNullAt(i), "gradient errors recorded: " + r);
                }
                // The CPU backward is fp32 rounded to bf16: errors are the dtype's rounding, far below 2e-2.
                for (int i = 1; i <= 3; i++) {
                    assertTrue(r.getDouble(i) < 1e-2, "gradient error: " + r);
                }
                assertTrue(r.getBoolean(5));
                assertTrue(r.getString(6).endsWith(" --backward"), "reproduce keeps --backward");
            }
        }
    }

    @Test
    void aGradientOverToleranceFailsTheSequence() {
        OracleComparison.GradientErrors fine = new OracleComparison.GradientErrors(0, 1e-3, 0, 1e-3, 0, 1e-3, 0);
        OracleComparison.GradientErrors badDk = new OracleComparison.GradientErrors(0, 1e-3, 0, 6e-3, 0, 1e-3, 0);
        assertTrue(fine.passes(DType.FP16));
        assertFalse(badDk.passes(DType.FP16), "fp16 gradient tolerance is 5e-3");
        assertTrue(badDk.passes(DType.BF16), "bf16 gradient tolerance is 2e-2");
    }

    @Test
    void oneFailingSequenceFailsItsConfigurationOnly() {
        SweepRow good = row("a", true, 1e-4);
        SweepRow bad = row("a", false, 5e-2);
        SweepRow other = row("b", true, 2e-4);
        List<SweepVerdict> verdicts = SweepVerdict.of(List.of(good, bad, other));
        assertEquals(2, verdicts.size());
        assertFalse(verdicts.get(0).pass());
        assertEquals(5e-2, verdicts.get(0).maxOutRelL2());
        assertTrue(verdicts.get(1).pass());
        assertTrue(SweepVerdict.render(verdicts).contains("FAIL"));
    }

    private static SweepRow row(String config, boolean pass, double outErr) {
        SweepRow r = new SweepRow();
        r.setConfig(config);
        r.setDtype("fp16");
        r.setPass(pass);
        r.setOutRelL2(outErr);
        r.setLength(10);
        r.setTokensCompared(10);
        r.setReproduce("./submit.sh sweep ...");
        return r;
    }
}
