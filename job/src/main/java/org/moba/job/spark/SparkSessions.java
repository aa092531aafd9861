package org.moba.job.spark;

import java.util.List;
import java.util.Locale;
import org.apache.spark.SparkConf;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.moba.job.run.JobException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import scala.jdk.javaapi.CollectionConverters;

/**
 * Creates the job's SparkSession. Under {@code spark-submit} the master and every setting come from there; started
 * directly (the embedded default of {@code submit.sh}, tests) the master defaults to {@code local[*]}.
 */
public final class SparkSessions {
    /** Spark's key for the GPU amount each task asks for. */
    public static final String TASK_GPU_AMOUNT = "spark.task.resource.gpu.amount";
    private static final String LOOPBACK = "127.0.0.1";
    private static final Logger LOG = LoggerFactory.getLogger(SparkSessions.class);

    private SparkSessions() {
    }

    public static SparkSession create(String appName) {
        SparkConf conf = new SparkConf(true);
        if (!conf.contains("spark.master")) {
            conf.setMaster("local[*]");
        }
        conf.setIfMissing("spark.app.name", appName);
        if (isLocal(conf)) {
            // One JVM needs no network: the driver's RPC and block manager listen on loopback only (the web UI
            // follows SPARK_LOCAL_IP, which submit.sh sets to 127.0.0.1 for the embedded default).
            conf.setIfMissing("spark.driver.bindAddress", LOOPBACK);
            conf.setIfMissing("spark.driver.host", LOOPBACK);
        }
        conf.setIfMissing("spark.ui.showConsoleProgress", "true");
        // The result beans have ~20 fields; Spark's default of 25 printable fields warns about them on every plan.
        conf.setIfMissing("spark.sql.debug.maxToStringFields", "100");
        checkGpuSettings(conf);
        SparkSession spark = SparkSession.builder().config(conf).getOrCreate();
        warmUpSql(spark);
        // The UI's stage pages show the MoBA accumulators per task (org.moba.spark.MobaTimings): say where it is, on
        // stdout with the job's other output (stderr carries only a failure's one error line).
        if (spark.sparkContext().uiWebUrl().isDefined()) {
            System.out.println("Spark UI: " + spark.sparkContext().uiWebUrl().get() + " (while the job runs)");
        }
        return spark;
    }

    /**
     * Plans a one-row Dataset on a daemon thread, so that Spark SQL's first-use costs (loading thousands of Catalyst
     * classes, the first analysis and code generation; about 2 s on an H100 host between score's header read and its
     * first task) overlap the job's own start instead of adding to it. Runs no Spark job; a failure (the session
     * stopped meanwhile) is only logged at debug level.
     */
    private static void warmUpSql(SparkSession spark) {
        Thread warmUp = new Thread(() -> {
            try {
                StructType schema = new StructType().add("id", DataTypes.StringType).add("length", DataTypes.IntegerType)
                        .add("bytes", DataTypes.BinaryType)
                        .add("positions", DataTypes.createArrayType(DataTypes.LongType));
                Dataset<Row> one = spark.createDataFrame(List.of(RowFactory.create("warm-up", 1, new byte[] {0},
                        CollectionConverters.asScala(List.of(0L)).toSeq())), schema);
                one.where(functions.col("length").gt(0)).select(functions.col("id"), functions.size(
                        functions.col("positions"))).queryExecution().toRdd();
            } catch (RuntimeException | LinkageError e) { // e.g. the session stopped, its classes unloading
                LOG.debug("Spark SQL warm-up stopped: {}", e.toString());
            }
        }, "moba spark sql warm-up");
        warmUp.setDaemon(true);
        warmUp.start();
    }

    /**
     * Spark's local mode never hands GPUs to tasks, and with a task GPU amount it hangs without a word
     * (docs/spark-gpu.md, "Local mode"): refuse that combination with an error that says what to do instead.
     */
    static void checkGpuSettings(SparkConf conf) {
        if (isLocal(conf) && conf.contains(TASK_GPU_AMOUNT)) {
            throw JobException.usage(TASK_GPU_AMOUNT + " cannot be used with a local master (local mode never"
                    + " assigns GPUs and Spark would hang)", "master " + conf.get("spark.master"),
                    TASK_GPU_AMOUNT + "=" + conf.get(TASK_GPU_AMOUNT), "drop the setting (local tasks then spread"
                    + " over the visible GPUs), or use a standalone, local-cluster, YARN or Kubernetes master with"
                    + " spark.executor.resource.gpu.amount and a discovery script (see"
                    + " conf/spark-defaults.conf.template)");
        }
    }

    /** A {@code local} or {@code local[...]} master: one JVM, no executors of its own, no GPU scheduling. */
    static boolean isLocal(SparkConf conf) {
        String master = conf.get("spark.master", "").toLowerCase(Locale.ROOT);
        return master.equals("local") || master.startsWith("local[");
    }
}
