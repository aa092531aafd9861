package org.moba.job.score;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.moba.job.MobaCli;

/** {@code gen} writes to and {@code score} reads from and writes back to a real HDFS (NameNode + DataNode). */
class HdfsScoreTest {

    @Test
    @Timeout(240)
    void scoresFromHdfsAndWritesBack(@TempDir Path dir) throws Exception {
        Configuration conf = new Configuration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, dir.resolve("hdfs").toString());
        MiniDFSCluster hdfs = new MiniDFSCluster.Builder(conf).numDataNodes(1).build();
        try {
            hdfs.waitActive();
            String base = hdfs.getURI().toString() + "/moba";
            assertEquals(0, MobaCli.commandLine().execute("gen", "--out", base + "/in", "--lengths",
                    "uniform:12:30-400", "--heads", "4/2", "--head-dim", "32", "--partitions", "3",
                    "--format", "safetensors"));
            assertEquals(0, MobaCli.commandLine().execute("score", "--input", base + "/in", "--format",
                    "safetensors", "--out", base + "/out", "--backend", "cpu", "--chunk", "64", "--topk", "2"));

            FileSystem fs = hdfs.getFileSystem();
            assertTrue(fs.exists(new org.apache.hadoop.fs.Path("/moba/out/score-summary.json")));
            assertTrue(fs.exists(new org.apache.hadoop.fs.Path("/moba/out/score.parquet/outcome=scored")));
            // Committed on HDFS too: the manifest says so and no staging folder is left.
            assertTrue(fs.exists(new org.apache.hadoop.fs.Path("/moba/out/_moba-run.json")));
            assertEquals(0, fs.globStatus(new org.apache.hadoop.fs.Path("/moba/out/.moba-*")).length);
            try (SparkSession spark = SparkSession.builder().master("local[1]").getOrCreate()) {
                List<Row> rows = spark.read().parquet(base + "/out/score.parquet").select("id", "outcome")
                        .collectAsList();
                assertEquals(12, rows.size());
                rows.forEach(r -> assertEquals(ScoreSchema.SCORED, r.getString(1), r.getString(0)));
            }
        } finally {
            hdfs.shutdown();
        }
    }
}
