package org.moba.spark;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;

/**
 * The README's Java example: the lines between the markers are the README's code block, verbatim (indentation
 * aside); {@link ReadmeExamplesTest} checks that they agree and runs this.
 */
final class JavaExample {
    record Run(Dataset<Row> input, Dataset<Row> scored) {
    }

    private JavaExample() {
    }

    static Run run(SparkSession spark) {
        // README-BEGIN
        Random rng = new Random(7);
        List<Row> rows = new ArrayList<>();
        for (int i = 0; i < 6; i++) {                // your q, k, v: float[L*H*D], float[L*Hkv*D], float[L*Hkv*D]
            int len = 100 + 90 * i;
            float[] q = new float[len * 8 * 64], k = new float[len * 2 * 64], v = new float[len * 2 * 64];
            for (float[] x : List.of(q, k, v)) {
                for (int j = 0; j < x.length; j++) {
                    x[j] = (float) rng.nextGaussian();
                }
            }
            rows.add(MobaTensors.row("seq-" + i, "bf16", /*H*/ 8, /*Hkv*/ 2, /*D*/ 64, q, k, v));
        }
        Dataset<Row> input = MobaTensors.dataset(spark, rows, 3);  // or spark.read().parquet(...), same columns
        MobaResult result = MobaDataset.attention(input, MobaOptions.of(/*chunk*/ 128, /*topk*/ 3).withMetrics(true));
        Dataset<Row> scored = result.all().cache();                // lazy until the first action below
        scored.select("id", "length", "outcome", "recall", "executor_id", "gpu_addresses").show(false);
        float[] out = MobaTensors.floats(scored.first().getAs("out"), "bf16");    // [L, H, D] of one sequence
        System.out.println(result.timings().asMap());              // per-phase ms and tokens, summed over tasks
        // README-END
        return new Run(input, scored);
    }
}
