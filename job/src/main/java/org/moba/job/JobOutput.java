package org.moba.job;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import java.io.File;
import java.io.IOException;
import java.util.Map;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SaveMode;

/** The output folder of a job run: Parquet and CSV tables plus a JSON summary per result, for notebooks. */
public final class JobOutput {
    private final File root;

    public JobOutput(String folder) {
        this.root = new File(folder).getAbsoluteFile();
    }

    public File root() {
        return root;
    }

    /** Writes {@code name}.parquet and {@code name}.csv (one file, with a header). */
    public void write(Dataset<Row> table, String name) {
        table.write().mode(SaveMode.Overwrite).parquet(new File(root, name + ".parquet").getPath());
        table.coalesce(1).write().mode(SaveMode.Overwrite).option("header", "true")
                .csv(new File(root, name + ".csv").getPath());
    }

    /** Writes {@code name}-summary.json. */
    public void writeSummary(String name, Map<String, ?> summary) throws IOException {
        root.mkdirs();
        new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT)
                .writeValue(new File(root, name + "-summary.json"), summary);
    }
}
