package org.moba.job;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import java.io.IOException;
import java.io.OutputStream;
import java.util.Map;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SaveMode;
import org.apache.spark.sql.SparkSession;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The output folder of a job run, on any Hadoop filesystem (local, HDFS, S3A): Parquet and CSV tables plus a JSON
 * summary per result, for notebooks.
 */
public final class JobOutput {
    private static final Logger LOG = LoggerFactory.getLogger(JobOutput.class);
    private final SparkSession spark;
    private final Path root;

    public JobOutput(SparkSession spark, String folder) throws IOException {
        this.spark = spark;
        Path p = new Path(folder);
        this.root = p.getFileSystem(spark.sparkContext().hadoopConfiguration()).makeQualified(p);
    }

    /** The folder as a fully qualified URI string. */
    public String root() {
        return root.toString();
    }

    /** {@code root/name}, for results a job writes itself. */
    public String path(String name) {
        return new Path(root, name).toString();
    }

    /** Writes {@code name}.parquet and {@code name}.csv (one file, with a header). */
    public void write(Dataset<Row> table, String name) {
        table.write().mode(SaveMode.Overwrite).parquet(path(name + ".parquet"));
        table.coalesce(1).write().mode(SaveMode.Overwrite).option("header", "true").csv(path(name + ".csv"));
    }

    /** Writes {@code name}-summary.json. */
    public void writeSummary(String name, Map<String, ?> summary) throws IOException {
        try (OutputStream out = create(name + "-summary.json")) {
            new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT).writeValue(out, summary);
        }
    }

    /**
     * Builds and writes {@code name}-report.html, returning its path. The report comes after the data it shows is
     * safely written, so a failure here (charts need AWT's font libraries, absent on some minimal hosts) is logged
     * and reported as "not written" rather than failing the job.
     */
    public String writeReport(String name, ReportBuilder builder) {
        try (OutputStream out = create(name + "-report.html")) {
            out.write(builder.build().toHtml());
            return path(name + "-report.html");
        } catch (IOException | RuntimeException | LinkageError e) {
            LOG.warn("{} report not written ({}); the tables and summary are complete", name, e.toString());
            return "not written: " + e;
        }
    }

    /** Makes a report; called only by {@link #writeReport}, so its failures are contained there. */
    @FunctionalInterface
    public interface ReportBuilder {
        HtmlReport build() throws IOException;
    }

    private OutputStream create(String file) throws IOException {
        Path p = new Path(root, file);
        FileSystem fs = p.getFileSystem(spark.sparkContext().hadoopConfiguration());
        return fs.create(p, true);
    }
}
