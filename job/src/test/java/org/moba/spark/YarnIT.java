package org.moba.spark;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.server.MiniYARNCluster;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.moba.job.score.ScoreSchema;

/**
 * The Dataset API and {@code score} on YARN: a MiniYARNCluster (ResourceManager + one NodeManager) and a
 * MiniDFSCluster in this JVM, Spark's YARN client in client mode (this JVM is the driver; the ApplicationMaster and
 * the executor are containers the NodeManager launches as separate JVMs). The job's shaded jar travels as
 * {@code spark-submit --master yarn --deploy-mode client app.jar} sends it ({@code spark.jars}, fetched by the
 * executors from the driver); Spark's own jars are the cluster's ({@code spark.yarn.jars} with {@code local:}
 * paths, as on a cluster where Spark is installed on every node). CPU backend: YARN GPU scheduling is not
 * exercised here (see the README).
 */
class YarnIT {

    @Test
    @Timeout(420)
    void datasetApiAndScoreRunOnYarnWithTheShadedJar(@TempDir Path dir) throws Exception {
        File shaded = new File(System.getProperty("moba.shaded.jar"));
        assertTrue(shaded.isFile(), "the shaded jar is built by package, before this test: " + shaded);
        MobaDatasetTest.stopSpark();

        Configuration conf = new YarnConfiguration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, dir.resolve("hdfs").toString());
        // Small containers on a small host: the AM and one executor fit in the NodeManager's memory.
        conf.setInt(YarnConfiguration.RM_SCHEDULER_MINIMUM_ALLOCATION_MB, 128);
        conf.setInt(YarnConfiguration.NM_PMEM_MB, 4096);
        conf.setInt(YarnConfiguration.NM_VCORES, 4);
        conf.setBoolean(YarnConfiguration.NM_PMEM_CHECK_ENABLED, false);
        conf.setBoolean(YarnConfiguration.NM_VMEM_CHECK_ENABLED, false);
        // The capacity scheduler's one queue (a cluster's capacity-scheduler.xml says this).
        conf.set("yarn.scheduler.capacity.root.queues", "default");
        conf.setInt("yarn.scheduler.capacity.root.default.capacity", 100);
        conf.setFloat("yarn.scheduler.capacity.root.default.maximum-am-resource-percent", 0.5f);
        // A busy shared disk must not mark the only NodeManager unhealthy.
        conf.setFloat(YarnConfiguration.NM_MAX_PER_DISK_UTILIZATION_PERCENTAGE, 100.0f);
        MiniDFSCluster hdfs = new MiniDFSCluster.Builder(conf).numDataNodes(1).build();
        MiniYARNCluster yarn = new MiniYARNCluster("moba-yarn", 1, 1, 1);
        Map<String, String> props = new LinkedHashMap<>();
        try {
            hdfs.waitActive();
            conf.set("fs.defaultFS", hdfs.getURI().toString());
            yarn.init(conf);
            yarn.start();
            Configuration running = yarn.getConfig();
            // What HADOOP_CONF_DIR gives spark-submit: the cluster's addresses, here as spark.hadoop.* settings
            // (Spark ships them to the ApplicationMaster and executors too).
            for (Map.Entry<String, String> e : running) {
                String key = e.getKey();
                if (key.startsWith("yarn.resourcemanager.") || key.equals("fs.defaultFS")) {
                    props.put("spark.hadoop." + key, running.get(key));
                }
            }
            props.put("spark.master", "yarn");
            props.put("spark.submit.deployMode", "client");
            props.put("spark.jars", shaded.getAbsolutePath());
            props.put("spark.yarn.jars", "local:" + System.getProperty("moba.spark.jars") + "/*");
            props.put("spark.executor.instances", "1");
            props.put("spark.executor.cores", "2");
            props.put("spark.executor.memory", "768m");
            props.put("spark.yarn.am.memory", "512m");
            props.put("spark.ui.enabled", "false");
            props.forEach(System::setProperty);

            String base = hdfs.getURI() + "/moba";
            List<Row> rows;
            // One YARN application for both: score's session builder picks up this running session, and stops it.
            SparkSession spark = SparkSession.builder().appName("moba yarn test").getOrCreate();
            assertEquals("yarn", spark.sparkContext().master());
            MobaTensors.dataset(spark, MobaDatasetTest.rows(MobaDatasetTest.sequences(70, 200, 5, 130, 64)), 2)
                    .write().parquet(base + "/in");
            Dataset<Row> input = spark.read().parquet(base + "/in");
            rows = MobaDataset.attention(input, MobaOptions.of(64, 3).withBackend("cpu").withMetrics(true)).all()
                    .collectAsList();
            assertEquals(5, rows.size());
            for (Row r : rows) {
                assertEquals(ScoreSchema.SCORED, r.getAs("outcome"));
                assertNotEquals("driver", r.getAs("executor_id"), "computed in a YARN container");
            }
            ScoreParity.assertSameAsScore(base + "/in", base + "/out", rows, 64, 3);
        } finally {
            props.keySet().forEach(System::clearProperty);
            MobaDatasetTest.stopSpark();
            yarn.stop();
            hdfs.shutdown();
        }
    }
}
