package org.moba.spark;

import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.functions;
import org.moba.job.score.ScoreSchema;

/**
 * What {@link MobaDataset#attention} returns: lazily evaluated Datasets over one computation, and the accumulators its
 * tasks fill. Each action on {@link #all}, {@link #scored} or {@link #rejected} runs the computation again unless
 * {@code all()} is cached or written once (as {@code score} does, partitioned by {@code outcome}).
 *
 * @param all      one row per input record: {@code outcome} is {@code scored} (outputs, metrics) or {@code rejected}
 *                 ({@code reason}); see {@link MobaDataset} for the columns
 * @param timings  per-task phase times and token counts (named accumulators, also on the Spark UI's stage page)
 */
public record MobaResult(Dataset<Row> all, MobaTimings timings) {

    /** The rows with {@code outcome = scored}. */
    public Dataset<Row> scored() {
        return all.where(functions.col("outcome").equalTo(ScoreSchema.SCORED));
    }

    /** The rows with {@code outcome = rejected} (empty unless bad records are skipped): id, reason, where it ran. */
    public Dataset<Row> rejected() {
        return all.where(functions.col("outcome").equalTo(ScoreSchema.REJECTED));
    }
}
