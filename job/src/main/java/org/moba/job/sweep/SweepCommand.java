package org.moba.job.sweep;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.stream.Collectors;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.sql.SparkSession;
import org.moba.job.JobOutput;
import org.moba.job.BackendOption;
import org.moba.job.LengthMix;
import org.moba.job.MobaOptionHelp;
import org.moba.job.Shape;
import org.moba.job.run.ExitCode;
import org.moba.job.run.Preflight;
import org.moba.job.run.RunOptions;
import org.moba.job.run.RunOutput;
import org.moba.job.spark.DeviceAssignment;
import org.moba.job.spark.Progress;
import org.moba.job.spark.DeviceSlots;
import org.moba.job.spark.ExecutorBackends;
import org.moba.job.spark.SparkSessions;
import org.moba.job.spark.TaskDevice;
import org.moba.kernels.MobaAttention;
import org.moba.kernels.DType;
import org.moba.kernels.reference.OracleComparison;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code sweep}: correctness over sequence-length mixes crossed with shapes and seeds. Each configuration is one
 * task; its batches run on the backend under test and on the float64 oracle (sampled rows), giving per-sequence
 * errors, a verdict per configuration and, for each failure, the command that reproduces it alone.
 */
@Command(name = "sweep", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Check a backend against the float64 oracle over length mixes, dtypes, head dims, GQA,",
                "chunk sizes, topk and seeds. Exits with status 1 when any configuration fails (outputs committed),",
                "with 4 when the run itself crashed."})
public final class SweepCommand implements Callable<Integer> {
    private static final Logger LOG = LoggerFactory.getLogger(SweepCommand.class);

    @Mixin
    BackendOption backend;

    @Option(names = "--mixes", split = ",", defaultValue = "uniform:6:1-400,lognormal:6:120:1.0,bimodal:6:8:600:0.3,"
            + "boundary:3,single:8,huge:8:16:1200",
            description = "length mixes (see bench --help) (default: ${DEFAULT-VALUE})")
    List<String> mixes;

    @Option(names = "--dtype", split = ",", defaultValue = "fp16,bf16", description = "(default: ${DEFAULT-VALUE})")
    List<String> dtypes;

    @Option(names = "--heads", split = ",", defaultValue = "4/4,8/2", description = "H/Hkv (default: ${DEFAULT-VALUE})")
    List<String> heads;

    @Option(names = "--head-dim", split = ",", defaultValue = "64", description = "(default: ${DEFAULT-VALUE})")
    List<Integer> headDims;

    @Option(names = "--chunk", split = ",", defaultValue = "64",
            description = MobaOptionHelp.CHUNK + MobaOptionHelp.LIST + " (default: ${DEFAULT-VALUE})")
    List<Integer> chunks;

    @Option(names = "--topk", split = ",", defaultValue = "1,3",
            description = MobaOptionHelp.TOPK + MobaOptionHelp.LIST + " (default: ${DEFAULT-VALUE})")
    List<Integer> topks;

    @Option(names = "--seeds", split = ",", defaultValue = "1", description = "(default: ${DEFAULT-VALUE})")
    List<Long> seeds;

    @Option(names = "--oracle-rows", defaultValue = "1024",
            description = "tokens per batch checked against the oracle; larger batches are sampled (chunk edges,"
                    + " sequence ends, random tokens) (default: ${DEFAULT-VALUE})")
    int oracleRows;

    @Option(names = "--tokens-per-batch", defaultValue = "16384", description = "(default: ${DEFAULT-VALUE})")
    int tokensPerBatch;

    @Option(names = "--backward",
            description = "also run the backward pass on a random dout and check dq/dk/dv against the oracle's"
                    + " backward (whole batches of up to " + SweepRunner.BACKWARD_ORACLE_PAIRS + " attended"
                    + " query-key-head triples; larger batches are left unchecked and counted)")
    boolean backwardCheck;

    @Option(names = "--out", defaultValue = "results/sweep", description = "output folder (default: ${DEFAULT-VALUE})")
    String out;

    @Mixin
    RunOptions run;

    @Override
    public Integer call() throws IOException {
        List<SweepConfig> configs = grid();
        Preflight.atLeast("--oracle-rows", oracleRows, 1);
        Preflight.atLeast("--tokens-per-batch", tokensPerBatch, 1);
        Preflight.cudaShapes(backend.backend(), configs.stream().map(SweepConfig::shape).distinct().toList());
        try (SparkSession spark = SparkSessions.create("moba sweep"); RunOutput run = this.run.open(spark, out)) {
            Progress.register(spark.sparkContext(), "sweep", "configuration");
            JavaSparkContext jsc = JavaSparkContext.fromSparkContext(spark.sparkContext());
            LOG.info("sweep: {} configuration(s), backend {}, oracle on up to {} tokens per batch{}", configs.size(),
                    backend.name(), oracleRows, backwardCheck ? ", backward checked" : "");
            String requested = backend.name();
            SweepRunner runner = new SweepRunner(backend.name(), oracleRows, tokensPerBatch, backwardCheck);
            List<SweepRow> rows = jsc.parallelize(configs, configs.size())
                    .mapPartitions((Iterator<SweepConfig> it) -> {
                        TaskContext task = TaskContext.get();
                        DeviceAssignment a = DeviceAssignment.forTask(requested, task,
                                DeviceSlots.visibleDevices(requested));
                        MobaAttention attention = ExecutorBackends.get(a);
                        TaskDevice device = TaskDevice.of(task, a, attention);
                        List<SweepRow> result = new ArrayList<>();
                        it.forEachRemaining(c -> result.addAll(runner.run(c, attention, device)));
                        return result.iterator();
                    }).collect();

            JobOutput output = new JobOutput(run);
            output.write(spark.createDataFrame(rows, SweepRow.class).select("config", "dtype", "backend", "device",
                    "host", "executorId", "gpuAddresses", "deviceOrdinal", "pciBusId", "sequenceId", "length",
                    "tokensCompared", "rowsCompared", "outRelL2", "outMaxAbs", "lseRelL2", "lseMaxAbs",
                    "selectionMismatches", "nearTies", "dqRelL2", "dqMaxAbs", "dkRelL2", "dkMaxAbs", "dvRelL2",
                    "dvMaxAbs", "pass", "reproduce"), "sweep");
            List<SweepVerdict> verdicts = SweepVerdict.of(rows);
            Map<String, Object> summary = new LinkedHashMap<>();
            summary.put("configurations", verdicts.size());
            summary.put("failed", verdicts.stream().filter(v -> !v.pass()).count());
            summary.put("outTolerance", Map.of("fp16", OracleComparison.outTolerance(DType.FP16),
                    "bf16", OracleComparison.outTolerance(DType.BF16)));
            summary.put("lseTolerance", OracleComparison.LSE_TOLERANCE);
            if (backwardCheck) {
                summary.put("gradientTolerance", Map.of("fp16", OracleComparison.gradientTolerance(DType.FP16),
                        "bf16", OracleComparison.gradientTolerance(DType.BF16)));
            }
            List<Map<String, Object>> devices = TaskDevice.usage(rows, r -> new TaskDevice(r.getHost(),
                    r.getExecutorId(), r.getGpuAddresses(), r.getDeviceOrdinal(), r.getPciBusId()),
                    SweepRow::getLength);
            summary.put("devices", devices);
            summary.put("verdicts", verdicts);
            output.writeSummary("sweep", summary);

            String report = output.writeReport("sweep", () -> SweepReport.of(verdicts, rows, devices));
            System.out.println(SweepVerdict.render(verdicts));
            List<SweepVerdict> failed = verdicts.stream().filter(v -> !v.pass()).collect(Collectors.toList());
            failed.forEach(v -> System.out.println("FAILED " + v.config() + "\n  reproduce: " + v.reproduce()));
            // Failures are a result, committed like any other: exit 1 says "ran and found failures", never a crash.
            int exit = run.commit(Map.of("backend", backend.name(), "devices", devices, "failedConfigurations",
                    failed.size()), failed.isEmpty() ? ExitCode.OK : ExitCode.CHECKS_FAILED);
            System.out.println(verdicts.size() - failed.size() + " passed, " + failed.size() + " failed; results: "
                    + output.root() + " (report: " + report + ")");
            return exit;
        }
    }

    private List<SweepConfig> grid() {
        List<SweepConfig> configs = new ArrayList<>();
        for (Shape shape : Shape.grid(dtypes, heads, headDims, chunks, topks)) {
            for (String mix : mixes) {
                for (long seed : seeds) {
                    configs.add(new SweepConfig(shape, new LengthMix(mix), seed));
                }
            }
        }
        return configs;
    }
}
