package org.moba.job.score;

import java.io.Serializable;
import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.spark.SparkContext;
import org.apache.spark.util.DoubleAccumulator;

/**
 * Where the executors' time goes in {@code score}, summed over tasks with Spark accumulators, from the phases of
 * {@link org.moba.kernels.DenseComparison}: decoding records (validation, and copying the valid ones' bytes into the batch's 16-bit arrays),
 * host<->device copies ({@code h2d + d2h}; zero on the CPU backend), kernels (the MoBA and dense passes), the quality
 * metrics against dense attention (a device kernel on the GPU, host math on the CPU) and building the result rows
 * from the batch's outputs. With the job's wall time and a decode-only pass they give the throughput bound that
 * copies and Parquet decode set.
 */
final class ScoreTimings implements Serializable {
    private static final long serialVersionUID = 1L;

    final DoubleAccumulator decodeMs;
    final DoubleAccumulator copyMs;
    final DoubleAccumulator kernelMs;
    final DoubleAccumulator metricsMs;
    final DoubleAccumulator rowsMs;

    ScoreTimings(SparkContext sc) {
        decodeMs = sc.doubleAccumulator("score decode ms");
        copyMs = sc.doubleAccumulator("score host<->device copy ms");
        kernelMs = sc.doubleAccumulator("score kernel ms");
        metricsMs = sc.doubleAccumulator("score quality metrics ms");
        rowsMs = sc.doubleAccumulator("score result rows ms");
    }

    Map<String, Object> asMap() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("decodeMs", decodeMs.sum());
        m.put("copyMs", copyMs.sum());
        m.put("kernelMs", kernelMs.sum());
        m.put("metricsMs", metricsMs.sum());
        m.put("rowsMs", rowsMs.sum());
        return m;
    }
}
