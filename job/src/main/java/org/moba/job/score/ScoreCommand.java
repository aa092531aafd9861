package org.moba.job.score;

import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SaveMode;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.functions;
import org.moba.job.BackendOption;
import org.moba.job.JobOutput;
import org.moba.job.MobaOptionHelp;
import org.moba.job.run.ExitCode;
import org.moba.job.run.JobException;
import org.moba.job.run.Preflight;
import org.moba.job.run.RunOptions;
import org.moba.job.run.RunOutput;
import org.moba.job.spark.ExecutorBackends;
import org.moba.job.spark.Progress;
import org.moba.job.spark.SparkSessions;
import org.moba.spark.MobaDataset;
import org.moba.spark.MobaOptions;
import org.moba.spark.MobaResult;
import org.moba.spark.MobaTensors;
import org.moba.spark.MobaTimings;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code score}: batch inference over stored q/k/v. Every input record ends in exactly one result row, scored or
 * rejected, and all rows are written in one job with Spark's commit protocol, so retried tasks and lost executors
 * neither drop nor duplicate records.
 */
@Command(name = "score", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Run MoBA (and dense causal attention, for quality metrics) over stored sequences.",
                "Input: Parquet with columns id, length, dtype, heads, kv_heads, head_dim, q, k, v (little-endian",
                "fp16/bf16 bytes), or a folder of safetensors files (q, k, v and optional cu_seqlens), on any",
                "Hadoop filesystem. Output: <out>/score.parquet partitioned by outcome=scored|rejected, plus CSV",
                "metrics (score-metrics.csv per record, score-heads.csv per sequence and head) and a JSON summary."})
public final class ScoreCommand implements Callable<Integer> {
    /** The folder under --out that holds the output files of --outputs files. */
    static final String OUTPUTS_FOLDER = "outputs";
    private static final Logger LOG = LoggerFactory.getLogger(ScoreCommand.class);

    @Option(names = "--input", required = true, description = "input path (local, hdfs://, s3a://, ...)")
    String input;

    @Option(names = "--format", defaultValue = "auto",
            description = "${COMPLETION-CANDIDATES}. auto: safetensors when every input file ends in .safetensors,"
                    + " else Parquet (default: ${DEFAULT-VALUE})")
    InputFormat format;

    @Option(names = "--out", defaultValue = "results/score", description = "output folder (default: ${DEFAULT-VALUE})")
    String out;

    @Mixin
    BackendOption backend;

    @Option(names = "--chunk", defaultValue = "128", description = MobaOptionHelp.CHUNK + " (default: ${DEFAULT-VALUE})")
    int chunk;

    @Option(names = "--topk", defaultValue = "3", description = MobaOptionHelp.TOPK + " (default: ${DEFAULT-VALUE})")
    int topk;

    @Option(names = "--tokens-per-batch", defaultValue = "16384",
            description = "token budget of one packed batch; each running task holds about 40 bytes x H x D per"
                    + " token of it (inputs, MoBA and dense outputs, result rows), so keep budget x concurrent tasks"
                    + " within the executor heap (default: ${DEFAULT-VALUE})")
    int tokensPerBatch;

    @Option(names = "--bad-records", defaultValue = "fail",
            description = "${COMPLETION-CANDIDATES}. fail: stop the job at the first bad record or unreadable file,"
                    + " naming it; skip: write it with the reason to the rejects (outcome=rejected)"
                    + " (default: ${DEFAULT-VALUE})")
    MobaOptions.BadRecords badRecords;

    @Option(names = "--no-check-finite",
            description = "accept records holding NaN or infinity (by default they are bad records)")
    boolean noFiniteCheck;

    @Option(names = "--no-write-outputs",
            description = "keep only the quality metrics: out and lse are left empty, which spares writing"
                    + " T x H x D x 2 bytes")
    boolean metricsOnly;

    @Option(names = "--outputs", defaultValue = "rows",
            description = "where out and lse go: rows (binary cells of score.parquet) or files (one safetensors file"
                    + " per batch under <out>/outputs, written by the task while the next batch runs; score.parquet"
                    + " names each row's file and positions: the fast form for large runs) (default: ${DEFAULT-VALUE})")
    OutputsTo outputsTo;

    /** Where score puts out and lse. */
    enum OutputsTo {
        ROWS, FILES;

        @Override
        public String toString() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    @Option(names = "--measure-bound", defaultValue = "false",
            description = "before scoring, time the physical bound and report score's wall time as a fraction of it:"
                    + " every input file read whole without decoding (the storage side), one large pinned"
                    + " host-to-device copy on a task's device (the link side: the loaded bytes at that rate, split"
                    + " over the GPUs used; none on the CPU backend) and, for comparison, a load-only pass (the"
                    + " tensors read into host buffers as scoring reads them, nothing computed);"
                    + " bound = max(raw read, loaded bytes / link rate)")
    boolean measureBound;

    @Option(names = "--partitions", defaultValue = "0",
            description = "repartition the input to this many tasks; 0 keeps the input's (default: ${DEFAULT-VALUE})")
    int partitions;

    @Mixin
    RunOptions run;

    @Override
    public Integer call() throws Exception {
        Preflight.atLeast("--tokens-per-batch", tokensPerBatch, 1);
        Preflight.atLeast("--partitions", partitions, 0);
        MobaOptions options = MobaOptions.of(chunk, topk).withBackend(backend.name()).withTokensPerBatch(tokensPerBatch)
                .withBadRecords(badRecords).withCheckFinite(!noFiniteCheck).withOutputs(!metricsOnly)
                .withSelection(false).withMetrics(true);
        Preflight.cudaChunk(backend.backend(), options.params());
        try (SparkSession spark = SparkSessions.create("moba score"); RunOutput run = this.run.open(spark, out)) {
            Progress.register(spark.sparkContext(), "score", "partition");
            ExecutorBackends.warmUpLocal(spark.sparkContext(), backend.name());
            long readStart = System.nanoTime();
            Dataset<Row> records = ScoreInput.read(spark, input, format, badRecords);
            // Listing and checking the input (safetensors: reading every header) is part of scoring it.
            double inputWallMs = (System.nanoTime() - readStart) / 1e6;
            if (partitions > 0) {
                records = records.repartition(partitions);
            }
            LOG.info("score: {} partition(s) from {}, backend {}, {}", records.rdd().getNumPartitions(), input,
                    backend.name(), options.params());
            Map<String, Object> bound = measureBound ? measureBound(spark, records, options) : Map.of();
            JobOutput output = new JobOutput(run);
            if (outputsTo == OutputsTo.FILES && !metricsOnly) {
                options = options.withOutputFolder(output.path(OUTPUTS_FOLDER));
            }
            // The whole computation is the Dataset API's: this command only reads files and writes results.
            MobaResult result = MobaDataset.attention(records, options);
            long start = System.nanoTime();
            String table = output.path("score.parquet");
            try {
                // out and lse are 16/32-bit floats that do not compress: writing them as they are saves a codec pass.
                result.all().write().mode(SaveMode.Overwrite).option("compression", "none").partitionBy("outcome")
                        .parquet(table);
            } catch (Exception e) { // SparkException is checked, but Spark also throws it sneakily
                String bad = badRecordMessage(e);
                if (bad != null) {
                    throw new JobException(ExitCode.BAD_INPUT, bad + ", in " + input + "; rerun with --bad-records"
                            + " skip to write such records to the rejects instead", e);
                }
                throw e;
            }
            double scoreWallMs = (System.nanoTime() - start) / 1e6 + inputWallMs;
            if (spark.read().schema(ScoreSchema.RESULT).parquet(table).isEmpty()) {
                // No rows, so no outcome= folders: one empty file carries the schema, so readers need none.
                spark.createDataFrame(List.of(), ScoreSchema.RESULT).write().mode(SaveMode.Overwrite).parquet(table);
            }
            Map<String, Object> manifest = summarize(spark, output, table,
                    throughput(result.timings(), scoreWallMs, inputWallMs, bound,
                            measureBound ? devicesUsed(spark, table) : 0));
            int exit = run.commit(manifest, ExitCode.OK);
            System.out.println("results: " + output.finalPath("score.parquet") + " (outcome=scored |"
                    + " outcome=rejected); report: " + manifest.get("report"));
            return exit;
        }
    }

    /**
     * The passes {@code --measure-bound} times before scoring: every input file read whole without decoding
     * ({@code rawRead*}: the bytes storage must deliver, the physical floor of the read side), the host-to-device
     * rate on the device a score task gets ({@code hostToDevice*}, {@link HostToDeviceLink}; absent, with a note, on
     * the CPU backend) and a load-only pass ({@code loadOnly*}: every record's tensors read and checked into host
     * buffers exactly as scoring does, without computing, {@link MobaDataset#loadOnly}; what our loader adds on top
     * of the raw read, reported beside the bound, not in it).
     */
    private Map<String, Object> measureBound(SparkSession spark, Dataset<Row> records, MobaOptions options) {
        Map<String, Object> m = new LinkedHashMap<>();
        long start = System.nanoTime();
        long rawBytes = ScoreInput.readRaw(spark, ScoreInput.files(spark, input));
        double rawMs = (System.nanoTime() - start) / 1e6;
        m.put("rawReadBytes", rawBytes);
        m.put("rawReadWallMs", rawMs);
        m.put("rawReadGBps", rawBytes / (rawMs * 1e6));
        HostToDeviceLink link = HostToDeviceLink.measure(spark, backend.name());
        m.put("hostToDeviceGBps", link.measured() ? link.gbps() : null);
        m.put("hostToDeviceDevice", link.device());
        if (!link.measured()) {
            m.put("hostToDeviceNote", "the " + backend.name() + " backend ran on " + link.device() + ", which has no"
                    + " host-to-device link: the bound is the raw read alone");
        }
        start = System.nanoTime();
        long loadedBytes = MobaDataset.loadOnly(records, options).loadedBytesTotal();
        double loadMs = (System.nanoTime() - start) / 1e6;
        m.put("loadOnlyBytes", loadedBytes);
        m.put("loadOnlyWallMs", loadMs);
        m.put("loadOnlyGBps", loadedBytes / (loadMs * 1e6));
        LOG.info("score: raw read of {} MB in {} ms; host-to-device {} GB/s on {}; load-only pass, {} MB of tensors,"
                + " in {} ms", rawBytes >> 20, String.format("%.0f", rawMs), String.format("%.1f", link.gbps()),
                link.device(), loadedBytes >> 20, String.format("%.0f", loadMs));
        return m;
    }

    /**
     * Time breakdown and, with {@code --measure-bound}, the physical bound: the input cannot arrive faster than the
     * raw read, nor reach the devices faster than the bytes score loaded at the measured host-to-device rate, each
     * of the {@code devices} GPUs used taking its share ({@code hostToDeviceWallMs}; zero on the CPU backend). So
     * {@code boundWallMs = max(rawReadWallMs, hostToDeviceWallMs)}, and {@code fractionOfBound} is that over the
     * score wall. The tasks' own copy times, summed over tasks ({@code copyMsSummedOverTasks}), include waiting for
     * one another on a shared device and are no wall time: reported, not part of the bound. {@code scoreWallMs}
     * includes {@code inputWallMs}, the listing and checking of the input before the scoring job (for safetensors,
     * reading every file's header).
     */
    static Map<String, Object> throughput(MobaTimings timings, double scoreWallMs, double inputWallMs,
                                          Map<String, Object> bound, long devices) {
        Map<String, Object> m = new LinkedHashMap<>();
        // Every phase is a sum over tasks; for copies, the name says so: they queue on a shared device.
        timings.phasesMs().forEach((k, v) -> m.put(k.equals("copyMs") ? "copyMsSummedOverTasks" : k, v));
        m.put("loadedBytes", timings.loadedBytesTotal());
        m.put("scoreWallMs", scoreWallMs);
        m.put("inputWallMs", inputWallMs);
        if (!bound.isEmpty()) {
            m.putAll(bound);
            Double linkMs = hostToDeviceWallMs(timings.loadedBytesTotal(), (Double) bound.get("hostToDeviceGBps"),
                    devices);
            m.put("devicesUsed", devices);
            m.put("hostToDeviceWallMs", linkMs);
            double boundMs = Math.max((Double) bound.get("rawReadWallMs"), linkMs == null ? 0 : linkMs);
            m.put("boundWallMs", boundMs);
            m.put("fractionOfBound", boundMs / scoreWallMs);
        }
        return m;
    }

    /**
     * The least time {@code bytes} take to reach {@code devices} GPUs at {@code gbps} each (each GPU its share, over
     * its own link), in ms; null without a measured rate (the CPU backend).
     */
    static Double hostToDeviceWallMs(long bytes, Double gbps, long devices) {
        return gbps == null ? null : bytes / (gbps * 1e6 * Math.max(devices, 1));
    }

    /** The GPUs that scored records: distinct (host, PCI bus id) of the scored rows bound to a CUDA device. */
    private static long devicesUsed(SparkSession spark, String table) {
        return spark.read().schema(ScoreSchema.RESULT).parquet(table)
                .where(functions.col("outcome").equalTo(ScoreSchema.SCORED)
                        .and(functions.col("device_ordinal").geq(0)))
                .select("host", "pci_bus_id").distinct().count();
    }

    /** Writes the metrics, summary and report of the staged results; returns what the run manifest records. */
    private Map<String, Object> summarize(SparkSession spark, JobOutput output, String table,
                                          Map<String, Object> throughput) throws IOException {
        // With the schema given, a zero-row result (no partition folders, only _SUCCESS) reads as an empty table.
        Dataset<Row> result = spark.read().schema(ScoreSchema.RESULT).parquet(table);
        Dataset<Row> metrics = result.select(functions.col("id"), functions.col("outcome"), functions.col("length"),
                functions.col("dtype"), functions.col("heads"), functions.col("device"), functions.col("host"),
                functions.col("executor_id"), functions.col("gpu_addresses"), functions.col("device_ordinal"),
                functions.col("pci_bus_id"), functions.col("reason"),
                functions.expr("aggregate(recall, 0D, (a, x) -> a + x) / size(recall)").as("mean_recall"),
                functions.array_min(functions.col("cosine")).as("min_cosine"),
                functions.array_max(functions.col("rel_error")).as("max_rel_error"),
                functions.lit(chunk).as("chunk"), functions.lit(topk).as("topk"));
        metrics.coalesce(1).write().mode(SaveMode.Overwrite).option("header", "true")
                .csv(output.path("score-metrics.csv"));
        // One row per scored sequence and query head, for per-head views (CSV cannot hold the arrays).
        Dataset<Row> heads = result.where(functions.col("outcome").equalTo(ScoreSchema.SCORED))
                .select(functions.col("id"), functions.col("length"), functions.col("dtype"),
                        functions.col("device"), functions.lit(chunk).as("chunk"), functions.lit(topk).as("topk"),
                        functions.posexplode(functions.arrays_zip(functions.col("recall"), functions.col("cosine"),
                                functions.col("rel_error"))).as(new String[] {"head", "m"}))
                .select(functions.col("id"), functions.col("length"), functions.col("dtype"),
                        functions.col("device"), functions.col("chunk"), functions.col("topk"), functions.col("head"),
                        functions.col("m.recall").as("recall"), functions.col("m.cosine").as("cosine"),
                        functions.col("m.rel_error").as("rel_error"));
        heads.coalesce(1).write().mode(SaveMode.Overwrite).option("header", "true")
                .csv(output.path("score-heads.csv"));
        Row totals = metrics.agg(functions.count("*"),
                functions.sum(functions.when(functions.col("outcome").equalTo(ScoreSchema.SCORED), 1).otherwise(0)),
                functions.sum(functions.when(functions.col("outcome").equalTo(ScoreSchema.SCORED),
                        functions.col("length")).otherwise(0)),
                functions.avg("mean_recall"), functions.min("min_cosine"), functions.max("max_rel_error")).first();
        Map<String, Object> summary = new LinkedHashMap<>();
        long scored = totals.isNullAt(1) ? 0 : totals.getLong(1); // a sum over no rows is null
        summary.put("records", totals.getLong(0));
        summary.put("scored", scored);
        summary.put("rejected", totals.getLong(0) - scored);
        summary.put("tokensScored", totals.isNullAt(2) ? 0 : totals.getLong(2));
        summary.put("meanRecall", totals.isNullAt(3) ? null : totals.getDouble(3));
        summary.put("minCosine", totals.isNullAt(4) ? null : totals.getDouble(4));
        summary.put("maxRelError", totals.isNullAt(5) ? null : totals.getDouble(5));
        summary.put("tokensPerSecond", (totals.isNullAt(2) ? 0 : totals.getLong(2))
                / ((Double) throughput.get("scoreWallMs") / 1e3));
        summary.putAll(throughput);
        summary.put("chunk", chunk);
        summary.put("topk", topk);
        List<Map<String, Object>> devices = devices(metrics);
        Map<String, Object> json = new LinkedHashMap<>(summary);
        json.put("devices", devices);
        output.writeSummary("score", json);
        List<Row> perSequence = metrics.select("id", "outcome", "length", "mean_recall", "min_cosine", "max_rel_error",
                "reason").collectAsList();
        List<Row> perHead = heads.select("head", "recall", "cosine", "rel_error", "length").collectAsList();
        String report = output.writeReport("score", () -> ScoreReport.of(summary, perSequence, perHead, devices));
        summary.forEach((k, v) -> System.out.printf("%-18s %s%n", k, v));
        devices.forEach(d -> System.out.printf("%-18s %s%n", "device", d));
        return Map.of("backend", backend.name(), "devices", devices, "records", summary.get("records"),
                "report", report);
    }

    /** Where the records went: one entry per distinct task device, with its records and scored tokens. */
    private static List<Map<String, Object>> devices(Dataset<Row> metrics) {
        return metrics.groupBy("host", "executor_id", "gpu_addresses", "device_ordinal", "pci_bus_id")
                .agg(functions.count("*").as("rows"), functions.sum(functions.when(functions.col("outcome")
                        .equalTo(ScoreSchema.SCORED), functions.col("length")).otherwise(0)).as("tokens"))
                .orderBy("host", "executor_id", "gpu_addresses").collectAsList().stream().map(r -> {
                    Map<String, Object> m = new LinkedHashMap<>();
                    m.put("host", r.get(0));
                    m.put("executorId", r.get(1));
                    m.put("gpuAddresses", r.get(2));
                    m.put("deviceOrdinal", r.get(3));
                    m.put("pciBusId", r.get(4));
                    m.put("rows", r.getLong(5));
                    m.put("tokens", r.isNullAt(6) ? 0L : r.getLong(6));
                    return m;
                }).toList();
    }

    /** The bad-record message inside a failed Spark job, if that is why it failed. */
    static String badRecordMessage(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            String m = t.getMessage();
            int at = m == null ? -1 : m.indexOf("bad record '");
            if (at >= 0) {
                int end = m.indexOf('\n', at);
                return m.substring(at, end < 0 ? m.length() : end);
            }
        }
        return null;
    }
}
