package org.moba.job.bench;

import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.function.ToDoubleFunction;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.moba.job.MobaOptionHelp;
import org.moba.kernels.bench.Percentiles;
import org.moba.job.JobOutput;
import org.moba.job.BackendOption;
import org.moba.job.LengthMix;
import org.moba.job.Shape;
import org.moba.job.spark.DeviceAssignment;
import org.moba.job.spark.DeviceSlots;
import org.moba.job.spark.ExecutorBackends;
import org.moba.job.spark.SparkSessions;
import org.moba.job.spark.TaskDevice;
import org.moba.kernels.BackendName;
import org.moba.job.run.ExitCode;
import org.moba.job.run.JobException;
import org.moba.job.run.Preflight;
import org.moba.job.run.RunOptions;
import org.moba.job.run.RunOutput;
import org.moba.kernels.MobaAttention;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code bench}: every device slot of the cluster runs the same grid of shapes; the driver gathers one row per
 * (host, device, shape), flags stragglers and writes Parquet, CSV, a JSON summary and a printed table.
 */
@Command(name = "bench", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Benchmark MoBA against dense causal attention on every GPU (or the CPU) of the cluster.",
                "The grid is the cross product of the list options (comma-separated) or the shapes of a spec file."})
public final class BenchCommand implements Callable<Integer> {
    private static final Logger LOG = LoggerFactory.getLogger(BenchCommand.class);

    @Mixin
    BackendOption backend;

    @Option(names = "--spec", description = "JSON spec file with the shapes (e.g. conf/bench-flashmoba.json); "
            + "replaces the grid options below")
    File spec;

    @Option(names = "--dtype", split = ",", defaultValue = "bf16", description = "fp16, bf16 (default: ${DEFAULT-VALUE})")
    List<String> dtypes;

    @Option(names = "--heads", split = ",", defaultValue = "8/2",
            description = "query/kv heads, as H/Hkv (default: ${DEFAULT-VALUE})")
    List<String> heads;

    @Option(names = "--head-dim", split = ",", defaultValue = "64", description = "D (default: ${DEFAULT-VALUE})")
    List<Integer> headDims;

    @Option(names = "--chunk", split = ",", defaultValue = "128",
            description = MobaOptionHelp.CHUNK + MobaOptionHelp.LIST + " (default: ${DEFAULT-VALUE})")
    List<Integer> chunks;

    @Option(names = "--topk", split = ",", defaultValue = "3",
            description = MobaOptionHelp.TOPK + MobaOptionHelp.LIST + " (default: ${DEFAULT-VALUE})")
    List<Integer> topks;

    @Option(names = "--lengths", split = ",", defaultValue = "4x2048",
            description = "length mixes, see LengthMix: NxL, uniform:N:MIN-MAX, lognormal:N:MEDIAN:SIGMA, ... "
                    + "(default: ${DEFAULT-VALUE})")
    List<String> lengthMixes;

    @Option(names = "--tokens-per-batch", defaultValue = "65536",
            description = "token budget of one packed batch (default: ${DEFAULT-VALUE})")
    int tokensPerBatch;

    @Option(names = "--warmup", defaultValue = "2", description = "untimed runs per shape (default: ${DEFAULT-VALUE})")
    int warmup;

    @Option(names = "--repeats", defaultValue = "10", description = "timed runs per shape (default: ${DEFAULT-VALUE})")
    int repeats;

    @Option(names = "--seed", defaultValue = "1", description = "seed of the synthetic inputs (default: ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--slots", defaultValue = "0",
            description = "device slots to run the grid on; 0 = one per GPU Spark schedules, or per visible GPU, "
                    + "or 1 on CPU (default: ${DEFAULT-VALUE})")
    int slots;

    @Option(names = "--straggler-margin", defaultValue = "0.15",
            description = "flag a device slower than the cluster median by more than this fraction "
                    + "(default: ${DEFAULT-VALUE})")
    double stragglerMargin;

    @Option(names = "--out", defaultValue = "results/bench", description = "output folder (default: ${DEFAULT-VALUE})")
    String out;

    @Option(names = "--allow-slow",
            description = "run a grid on the CPU backend even when it is estimated to take more than "
                    + (int) CpuEstimate.LIMIT_SECONDS / 60 + " minutes (by default such a grid is refused with the"
                    + " estimate)")
    boolean allowSlow;

    @Mixin
    RunOptions run;

    @Override
    public Integer call() throws IOException {
        List<BenchShape> shapes = shapes();
        BenchRunner runner = new BenchRunner(warmup, repeats, seed);
        Preflight.atLeast("--slots", slots, 0);
        Preflight.atLeast("--tokens-per-batch", tokensPerBatch, 1);
        Preflight.cudaShapes(backend.backend(), shapes.stream().map(BenchShape::shape).toList());
        for (BenchShape s : shapes) {
            int[] lengths = s.lengths().lengths(seed, s.shape().chunk());
            int longest = Arrays.stream(lengths).max().orElse(0);
            Preflight.cudaSelection(backend.backend(), s.shape(), Math.max(s.tokensPerBatch(), longest), longest,
                    s.label());
        }
        try (SparkSession spark = SparkSessions.create("moba bench");
             RunOutput run = refuseSlowCpuRun(spark, shapes).open(spark, out)) {
            JavaSparkContext jsc = JavaSparkContext.fromSparkContext(spark.sparkContext());
            int n = slots > 0 ? slots : DeviceSlots.count(jsc, backend.name());
            LOG.info("bench: {} shape(s) x {} device slot(s), backend {}", shapes.size(), n, backend.name());
            String requested = backend.name();
            long jobStart = System.nanoTime();
            List<BenchMeasurement> rows = jsc.parallelize(IntStream.range(0, n).boxed().toList(), n)
                    .mapPartitions((Iterator<Integer> slot) -> {
                        TaskContext task = TaskContext.get();
                        DeviceAssignment a = DeviceAssignment.forTask(requested, task,
                                DeviceSlots.visibleDevices(requested));
                        MobaAttention attention = ExecutorBackends.get(a);
                        return runner.run(shapes, attention, a, TaskDevice.of(task, a, attention)).iterator();
                    }).collect();
            double jobWallMs = (System.nanoTime() - jobStart) / 1e6;
            flagStragglers(rows, stragglerMargin);
            // Slots run in parallel: the job's overhead is its wall time over the busiest slot's kernel time.
            Map<String, List<BenchMeasurement>> bySlot = rows.stream().collect(Collectors.groupingBy(
                    r -> r.getHost() + "/" + r.getDeviceOrdinal() + "/" + r.getDevice()));
            List<BenchMeasurement> busiest = bySlot.values().stream().max(Comparator.comparingDouble(
                    slot -> sum(slot, BenchMeasurement::getTimedKernelMs))).orElse(List.of());
            double busiestKernelMs = sum(busiest, BenchMeasurement::getTimedKernelMs);
            double busiestInputMs = sum(busiest, BenchMeasurement::getInputMs);
            double busiestCopyMs = sum(busiest, BenchMeasurement::getCopyMedianMs);

            Dataset<Row> table = spark.createDataFrame(rows, BenchMeasurement.class)
                    .select("host", "executorId", "gpuAddresses", "deviceOrdinal", "pciBusId", "device",
                            "deviceSource", "backend", "shape", "config",
                            "lengths", "sequences", "meanLength", "tokens", "batches", "attendedPairs", "mobaMedianMs", "mobaP10Ms", "mobaP90Ms", "gateMedianMs",
                            "attentionMedianMs", "copyMedianMs", "denseMedianMs", "speedupOverDense",
                            "usefulTflops", "tokensPerSecond", "straggler", "timedKernelMs", "taskWallMs",
                            "inputMs");
            JobOutput output = new JobOutput(run);
            output.write(table, "bench");
            List<Map<String, Object>> devices = TaskDevice.usage(rows, BenchCommand::taskDevice,
                    BenchMeasurement::getTokens);
            Map<String, Object> summary = new LinkedHashMap<>();
            summary.put("shapes", shapes.size());
            summary.put("slots", n);
            summary.put("jobWallMs", jobWallMs);
            summary.put("busiestSlotKernelMs", busiestKernelMs);
            summary.put("busiestSlotInputMs", busiestInputMs);
            summary.put("busiestSlotCopyMs", busiestCopyMs);
            summary.put("devices", devices);
            summary.put("rows", rows);
            output.writeSummary("bench", summary);
            String report = output.writeReport("bench", () -> BenchReport.of(rows, stragglerMargin, devices));
            System.out.println(BenchTable.render(rows));
            System.out.printf("job wall time %.1f s, timed kernel time of the busiest slot %.1f s (%.1f%% of the"
                    + " wall time); that slot spent %.1f s getting inputs and %.1f s in host copies, the rest is"
                    + " warm-up, host-side preparation and Spark%n", jobWallMs / 1e3, busiestKernelMs / 1e3,
                    100 * busiestKernelMs / jobWallMs, busiestInputMs / 1e3, busiestCopyMs / 1e3);
            if (rows.stream().allMatch(r -> r.getBackend().equals("cpu"))) {
                System.out.println("bench ran on the CPU backend (no usable CUDA device): numbers are CPU timings.");
            }
            int exit = run.commit(Map.of("backend", backend.name(), "devices", devices), ExitCode.OK);
            System.out.println("results: " + output.root() + " (report: " + report + ")");
            return exit;
        }
    }

    private List<BenchShape> shapes() {
        if (spec == null) {
            return grid();
        }
        try {
            return BenchSpec.read(spec);
        } catch (IOException | IllegalArgumentException e) {
            String why = String.valueOf(e.getMessage()).replaceAll("\\s+", " ");
            throw JobException.usage("--spec cannot be read", "--spec", spec + " (" + why + ")",
                    "give a JSON spec file like conf/bench-cpu-small.json");
        }
    }

    /**
     * A grid that will run on the CPU backend (asked for, or auto in local mode with no usable GPU) and is estimated
     * to take longer than {@link CpuEstimate#LIMIT_SECONDS} is refused, with the estimate, unless --allow-slow;
     * before --out is touched. Returns the run options, to open the run with.
     */
    private RunOptions refuseSlowCpuRun(SparkSession spark, List<BenchShape> shapes) {
        boolean cpu = backend.backend() == BackendName.CPU || backend.backend() == BackendName.AUTO
                && spark.sparkContext().isLocal() && DeviceSlots.visibleDevices(backend.name()) == 0;
        if (!cpu) {
            return run;
        }
        double rate = CpuEstimate.measureFlopsPerSecond();
        double seconds = CpuEstimate.seconds(shapes, warmup, repeats, seed, rate);
        String estimate = String.format("about %.0f min on the CPU backend here (%.1f GFLOP/s measured)",
                seconds / 60, rate / 1e9);
        if (seconds > CpuEstimate.LIMIT_SECONDS && !allowSlow) {
            throw JobException.usage("this grid is GPU-sized and no GPU will run it", "--backend "
                    + backend.name() + (spec != null ? " --spec " + spec : ""), estimate,
                    "pass --allow-slow to run it anyway, run it on a GPU host (--backend cuda), or choose smaller"
                    + " shapes (e.g. --spec conf/bench-cpu-small.json)");
        }
        LOG.info("bench: the grid runs on the CPU backend, estimated {}", estimate);
        return run;
    }

    private List<BenchShape> grid() {
        List<BenchShape> shapes = new ArrayList<>();
        for (Shape shape : Shape.grid(dtypes, heads, headDims, chunks, topks)) {
            for (String mix : lengthMixes) {
                shapes.add(new BenchShape(shape, new LengthMix(mix), tokensPerBatch));
            }
        }
        return shapes;
    }

    private static double sum(List<BenchMeasurement> rows, ToDoubleFunction<BenchMeasurement> column) {
        return rows.stream().mapToDouble(column).sum();
    }

    static TaskDevice taskDevice(BenchMeasurement r) {
        return new TaskDevice(r.getHost(), r.getExecutorId(), r.getGpuAddresses(), r.getDeviceOrdinal(),
                r.getPciBusId());
    }

    /** A device is a straggler on a shape when its median exceeds the cluster median by more than the margin. */
    static void flagStragglers(List<BenchMeasurement> rows, double margin) {
        Map<String, List<BenchMeasurement>> byShape = rows.stream()
                .collect(Collectors.groupingBy(BenchMeasurement::getShape));
        for (List<BenchMeasurement> group : byShape.values()) {
            double median = Percentiles.of(group.stream().mapToDouble(BenchMeasurement::getMobaMedianMs)
                    .toArray(), 0.5);
            group.forEach(r -> r.setStraggler(r.getMobaMedianMs() > (1 + margin) * median));
        }
    }
}
