package org.moba.spark;

import java.io.Serializable;
import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.spark.SparkContext;
import org.apache.spark.util.DoubleAccumulator;
import org.apache.spark.util.LongAccumulator;

/**
 * Where the executors' time goes, as named Spark accumulators: each task adds its own share, so the Spark UI's stage
 * page shows them per task and summed, and the event log records them with every task and stage ("Accumulables",
 * by these names). Phases, from {@link org.moba.kernels.DenseComparison} (or the forward pass's timings when no
 * metrics are asked for): decoding records (taking rows from the input and checking their shapes, on the task's
 * thread), loading them (tensor bytes read from files or copied from rows into the batch's host buffer and checked for
 * NaN/infinity, on a loader thread that works on the next batch while the current one runs), waiting for a load (the
 * part of loading the pipeline did not hide), host<->device copies ({@code h2d + d2h}; zero on the CPU backend),
 * kernels (MoBA, and dense attention when the metrics are on), the quality metrics (a device kernel on the GPU, host
 * math on the CPU), the wall of each backend call that holds those three (so host work and waits for a shared device
 * inside the call show as its excess over them), building the result rows and, with an output folder, writing the
 * output files (on a writer thread) and waiting for them; and each task's wall. Counters: tokens and sequences
 * computed, records rejected, batches run, tensor bytes loaded.
 * <p>One set per {@link MobaDataset#attention} call; a result Dataset computed twice (two actions, no cache) counts
 * twice.
 */
public final class MobaTimings implements Serializable {
    private static final long serialVersionUID = 1L;
    /** The prefix of every accumulator name, for finding them in the UI and the event log. */
    public static final String PREFIX = "moba ";

    final DoubleAccumulator decodeMs;
    final DoubleAccumulator loadMs;
    final DoubleAccumulator loadWaitMs;
    final DoubleAccumulator copyMs;
    final DoubleAccumulator kernelMs;
    final DoubleAccumulator metricsMs;
    final DoubleAccumulator callMs;
    final DoubleAccumulator rowsMs;
    final DoubleAccumulator writeMs;
    final DoubleAccumulator writeWaitMs;
    final DoubleAccumulator taskMs;
    final LongAccumulator loadedBytes;
    final LongAccumulator tokens;
    final LongAccumulator sequences;
    final LongAccumulator rejected;
    final LongAccumulator batches;

    MobaTimings(SparkContext sc) {
        decodeMs = sc.doubleAccumulator(PREFIX + "decode ms");
        loadMs = sc.doubleAccumulator(PREFIX + "load ms");
        loadWaitMs = sc.doubleAccumulator(PREFIX + "load wait ms");
        copyMs = sc.doubleAccumulator(PREFIX + "host<->device copy ms");
        kernelMs = sc.doubleAccumulator(PREFIX + "kernel ms");
        metricsMs = sc.doubleAccumulator(PREFIX + "quality metrics ms");
        callMs = sc.doubleAccumulator(PREFIX + "backend call ms");
        rowsMs = sc.doubleAccumulator(PREFIX + "result rows ms");
        writeMs = sc.doubleAccumulator(PREFIX + "output file write ms");
        writeWaitMs = sc.doubleAccumulator(PREFIX + "output file write wait ms");
        taskMs = sc.doubleAccumulator(PREFIX + "task ms");
        loadedBytes = sc.longAccumulator(PREFIX + "loaded bytes");
        tokens = sc.longAccumulator(PREFIX + "tokens");
        sequences = sc.longAccumulator(PREFIX + "sequences");
        rejected = sc.longAccumulator(PREFIX + "rejected records");
        batches = sc.longAccumulator(PREFIX + "batches");
    }

    /**
     * Summed milliseconds per phase (keys {@code decodeMs, loadMs, loadWaitMs, copyMs, kernelMs, metricsMs, callMs,
     * rowsMs, writeMs, writeWaitMs}) and of the tasks' walls ({@code taskMs}: from the task taking its backend until
     * its rows ran out, downstream consumers of the rows included), against which the phases can be set: what a task's
     * wall holds beyond {@code decodeMs + loadWaitMs + callMs + rowsMs + writeWaitMs} is spent by the consumers of its
     * rows (Spark's writer of the result table, for a job that writes one).
     */
    public Map<String, Object> phasesMs() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("decodeMs", decodeMs.sum());
        m.put("loadMs", loadMs.sum());
        m.put("loadWaitMs", loadWaitMs.sum());
        m.put("copyMs", copyMs.sum());
        m.put("kernelMs", kernelMs.sum());
        m.put("metricsMs", metricsMs.sum());
        m.put("callMs", callMs.sum());
        m.put("rowsMs", rowsMs.sum());
        m.put("writeMs", writeMs.sum());
        m.put("writeWaitMs", writeWaitMs.sum());
        m.put("taskMs", taskMs.sum());
        return m;
    }

    /** {@link #phasesMs} plus the counters ({@code tokens, sequences, rejected, batches, loadedBytes}). */
    public Map<String, Object> asMap() {
        Map<String, Object> m = phasesMs();
        m.put("tokens", tokens.sum());
        m.put("sequences", sequences.sum());
        m.put("rejected", rejected.sum());
        m.put("batches", batches.sum());
        m.put("loadedBytes", loadedBytes.sum());
        return m;
    }

    public long loadedBytesTotal() {
        return loadedBytes.sum();
    }

    public long tokensTotal() {
        return tokens.sum();
    }
}
