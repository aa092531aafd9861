package org.moba.job.spark;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The embedded default (no master given) is a local session that listens on this host only. */
class SparkSessionsTest {

    @Test
    @Timeout(120)
    void theEmbeddedDefaultBindsToLoopback() throws Exception {
        SparkSession.getActiveSession().foreach(s -> {
            s.stop();
            return null;
        });
        try (SparkSession spark = SparkSessions.create("moba loopback test")) {
            assertEquals("local[*]", spark.sparkContext().master());
            assertEquals("127.0.0.1", spark.sparkContext().getConf().get("spark.driver.bindAddress"));
            // The driver's RPC endpoint, which executors and other hosts would connect to, is on loopback.
            assertEquals("127.0.0.1", spark.sparkContext().env().rpcEnv().address().host());
        }
    }
}
