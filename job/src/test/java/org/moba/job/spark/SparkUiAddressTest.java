package org.moba.job.spark;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.moba.spark.SparkTestSessions;

/** The embedded default keeps Spark's UI on (where the MoBA accumulators show per task) and says where it is. */
class SparkUiAddressTest {
    @Test
    @Timeout(120)
    void jobsPrintTheUiAddress() {
        SparkTestSessions.stopAll(); // a fresh session, started by the jobs' own code
        PrintStream stdout = System.out;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        System.setOut(new PrintStream(captured, true));
        SparkSession spark = null;
        try {
            spark = SparkSessions.create("ui test");
        } finally {
            System.setOut(stdout);
            if (spark != null) {
                spark.stop();
            }
        }
        String out = captured.toString();
        assertTrue(out.contains("Spark UI: http://"), out);
    }
}
