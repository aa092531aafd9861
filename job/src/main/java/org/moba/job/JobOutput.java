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

/**
 * The output folder of a job run, on any Hadoop filesystem (local, HDFS, S3A): Parquet and CSV tables plus a JSON
 * summary per result, for notebooks.
 */
public final class JobOutput {
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

    /** Writes {@code name}-report.html and returns its path. */
    public String writeReport(String name, HtmlReport report) throws IOException {
        try (OutputStream out = create(name + "-report.html")) {
            out.write(report.toHtml());
        }
        return path(name + "-report.html");
    }

    private OutputStream create(String file) throws IOException {
        Path p = new Path(root, file);
        FileSystem fs = p.getFileSystem(spark.sparkContext().hadoopConfiguration());
        return fs.create(p, true);
    }
}
