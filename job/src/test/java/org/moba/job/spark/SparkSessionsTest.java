package org.moba.job.spark;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The embedded default (no master given) is a local session that listens on this host only. */
class SparkSessionsTest {

    private static void stopActiveSession() {
        SparkSession.getActiveSession().foreach(s -> {
            s.stop();
            return null;
        });
    }

    @Test
    @Timeout(120)
    void expressionsAreInterpretedUnlessTheConfigurationSaysOtherwise() throws Exception {
        stopActiveSession();
        try (SparkSession spark = SparkSessions.create("moba codegen test")) {
            assertEquals("NO_CODEGEN", spark.conf().get(SparkSessions.CODEGEN_FACTORY_MODE));
            StructType schema = new StructType().add("id", DataTypes.StringType).add("length", DataTypes.IntegerType);
            List<Row> input = List.of(RowFactory.create("a", 3), RowFactory.create("b", 5));
            List<Row> rows = spark.createDataFrame(input, schema).where(functions.col("length").gt(3))
                    .select(functions.col("length").multiply(2)).collectAsList();
            assertEquals(List.of(RowFactory.create(10)), rows);
        }
        System.setProperty(SparkSessions.CODEGEN_FACTORY_MODE, "FALLBACK");
        try (SparkSession spark = SparkSessions.create("moba codegen test")) {
            assertEquals("FALLBACK", spark.conf().get(SparkSessions.CODEGEN_FACTORY_MODE));
        } finally {
            System.clearProperty(SparkSessions.CODEGEN_FACTORY_MODE);
        }
    }

    @Test
    @Timeout(120)
    void theEmbeddedDefaultBindsToLoopback() throws Exception {
        stopActiveSession();
        try (SparkSession spark = SparkSessions.create("moba loopback test")) {
            assertEquals("local[*]", spark.sparkContext().master());
            assertEquals("127.0.0.1", spark.sparkContext().getConf().get("spark.driver.bindAddress"));
            // The driver's RPC endpoint, which executors and other hosts would connect to, is on loopback.
            assertEquals("127.0.0.1", spark.sparkContext().env().rpcEnv().address().host());
        }
    }
}
