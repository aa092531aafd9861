package org.moba.job;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import java.io.IOException;
import java.io.OutputStream;
import java.util.Map;
import org.apache.hadoop.fs.Path;
import org.moba.job.run.RunOutput;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SaveMode;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The results of a job run, on any Hadoop filesystem (local, HDFS, S3A): Parquet and CSV tables plus a JSON
 * summary and an HTML report per result, for notebooks. They are written into the run's staging folder and appear
 * in {@code --out} together when the run commits ({@link RunOutput}).
 */
public final class JobOutput {
    private static final Logger LOG = LoggerFactory.getLogger(JobOutput.class);
    private final RunOutput run;

    public JobOutput(RunOutput run) {
        this.run = run;
    }

    /** {@code --out} as a fully qualified URI string: where the results are once the run commits. */
    public String root() {
        return run.out();
    }

    /** Where the job writes {@code name} (in the staging folder), for results a job writes itself. */
    public String path(String name) {
        return run.path(name);
    }

    /** Where {@code name} is once the run commits, for messages. */
    public String finalPath(String name) {
        return new Path(run.out(), name).toString();
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
            return finalPath(name + "-report.html");
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
        return run.fileSystem().create(new Path(run.path(file)), true);
    }
}
