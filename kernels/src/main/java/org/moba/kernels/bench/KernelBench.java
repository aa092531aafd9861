package org.moba.kernels.bench;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.SplittableRandom;

import org.moba.kernels.AttendedPairs;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.PhaseTimings;
import org.moba.kernels.cuda.AttentionPath;
import org.moba.kernels.cuda.CudaMobaAttention;
import org.moba.kernels.cuda.DeviceBackward;
import org.moba.kernels.cuda.DeviceBatch;
import org.moba.kernels.reference.OracleComparison;

/**
 * Times the CUDA kernels on the shapes of docs/public-kernels.md with CUDA events, transfers excluded: each input set
 * is uploaded once ({@link CudaMobaAttention#upload}) and its kernels run repeatedly ({@link DeviceBatch#run()}).
 * Per shape it prints the medians of the gate (chunk means + gate/top-k) and attention, the useful TFLOP/s
 * ({@code 4 * D * attended (query, key) pairs summed over heads / time}, pairs counted from the returned
 * selection), the same for our dense causal kernel on the same inputs, the speedup over it, and the extra device
 * memory, the MoBA attention path each shape ran ({@code UNION} or {@code GATHERED}; both when its batches
 * differed) and, at the end, the peak extra device memory of one call (the gathered scratch included).
 *
 * <p>Training mode ({@code --mode training}, or {@code both}): forward + backward on the training shapes
 * ({@link #trainingShapes}), the backward on the forward's device state ({@link CudaMobaAttention#prepareBackward},
 * uploading only {@code dout}). Per shape: medians of the forward, the backward and their sum (a training step's
 * attention), the backward's useful TFLOP/s ({@code 10 * D * pairs}, 2.5 times the forward's, over the backward's
 * time) and the step's ({@code 14 * D * pairs}), the dense causal forward and backward on the same inputs and the
 * speedups over them, the extra device memory of the forward and of the backward (beyond inputs and outputs), and a
 * line of backward phase medians ({@code delta, route, dq_selected, dq, dkdv}). A short summary table ends it.
 *
 * <p>With {@code --cudnn FILE} (the CSV {@code kernels/src/test/device/cudnn_dense.py} writes: PyTorch's cuDNN
 * attention, causal, timed on the same card) both tables add the best dense kernel's time for every shape of equal
 * lengths and the ratios to it: {@code x cuDNN} is cuDNN's time over ours (above 1: we are faster), for MoBA and
 * for our dense kernel.
 *
 * <p>Long mode ({@code --mode long}): one sequence of 1,048,576 tokens ({@link #longShape}) through the forward,
 * timed as above (our dense kernel once per input set: a run takes seconds), then a float64 oracle check of
 * {@value #LONG_ORACLE_ROWS} sampled rows (chunk edges, the sequence's end, random tokens; every head): out and lse
 * errors and selection mismatches. Exits with status 1 when the check fails.
 *
 * <p>Usage: {@code KernelBench [--mode forward|training|both|long] [--device N] [--reps 20] [--warmup 3] [--seed S]
 * [--only SUBSTRING] [--cudnn FILE]}. Small shapes rotate several input sets so that the GPU's L2 cache does not flatter them;
 * shapes with more tokens than one batch holds run batch by batch and add up the per-batch medians.
 */
public final class KernelBench {
    /** Below this many bytes per input set, more sets are rotated (H100 L2: 50 MB). */
    private static final long ROTATION_BYTES = 1L << 30;
    private static final int MAX_SETS = 4;
    private static final int TOKEN_BUDGET = 512 * 1024;
    /** Rows (all heads) of the long shape that the float64 oracle checks. */
    static final int LONG_ORACLE_ROWS = 48;

    record Shape(String name, DType dtype, int heads, int kvHeads, int headDim, int chunk, int topk, int[] lengths) {
        BatchLayout layout() {
            return new BatchLayout(dtype, heads, kvHeads, headDim);
        }

        MobaParams params() {
            return MobaParams.of(chunk, topk);
        }

        /** The shape's name in cudnn_dense.py's table ({@code 2x64K H16 D128 fp16}); null for unequal lengths. */
        String denseKey() {
            if (Arrays.stream(lengths).distinct().count() != 1 || lengths[0] % 1024 != 0) {
                return null;
            }
            return lengths.length + "x" + lengths[0] / 1024 + "K H" + heads + " D" + headDim + " " + dtype.label();
        }
    }

    /** cuDNN's dense causal times (ms) per {@link Shape#denseKey}: forward, and forward + backward (NaN if untimed). */
    record CudnnTimes(Map<String, double[]> byShape) {
        static final CudnnTimes NONE = new CudnnTimes(Map.of());

        static CudnnTimes read(Path csv) {
            Map<String, double[]> times = new HashMap<>();
            try {
                List<String> lines = Files.readAllLines(csv);
                List<String> header = List.of(lines.get(0).split(","));
                int shape = header.indexOf("shape");
                int fwd = header.indexOf("fwd_ms");
                int step = header.indexOf("fwd_bwd_ms");
                if (shape < 0 || fwd < 0 || step < 0) {
                    throw new IllegalArgumentException(csv + ": expected the columns shape, fwd_ms, fwd_bwd_ms of "
                            + "cudnn_dense.py, found " + header);
                }
                for (String line : lines.subList(1, lines.size())) {
                    String[] cells = line.split(",");
                    times.put(cells[shape], new double[] {parseMs(cells[fwd]), parseMs(cells[step])});
                }
            } catch (IOException e) {
                throw new UncheckedIOException("cannot read the cuDNN times " + csv, e);
            }
            return new CudnnTimes(times);
        }

        /** Python writes an untimed value as {@code nan}, which Double.parseDouble does not take. */
        private static double parseMs(String cell) {
            return cell.trim().equalsIgnoreCase("nan") ? Double.NaN : Double.parseDouble(cell);
        }

        /** Forward (0) or forward + backward (1) ms of the shape, NaN when cuDNN was not timed on it. */
        double ms(Shape shape, int which) {
            double[] t = shape.denseKey() == null ? null : byShape.get(shape.denseKey());
            return t == null ? Double.NaN : t[which];
        }
    }

    /** {@code "%9.3f"} of a time or {@code "-"} when it is NaN, and the ratio {@code reference / ours} likewise. */
    private static String cudnnCells(double cudnnMs, double mobaMs, double denseMs) {
        if (Double.isNaN(cudnnMs)) {
            return String.format(Locale.ROOT, " %9s %7s %7s", "-", "-", "-");
        }
        return String.format(Locale.ROOT, " %9.3f %6.2fx %6.2fx", cudnnMs, cudnnMs / mobaMs, cudnnMs / denseMs);
    }

    /** Medians and counts accumulated over the batches of a shape. */
    private static final class Totals {
        double gateMs;
        double attentionMs;
        double denseMs;
        long mobaPairs;
        long densePairs;
        long tokens;
        long extraBytes;
        int batches;
        final Set<String> paths = new TreeSet<>();
        String unionReason;
        /** The oracle's verdict on sampled rows of the first batch, when asked for. */
        List<OracleComparison.SequenceErrors> oracle = List.of();
    }

    /** Training medians and counts accumulated over the batches of a shape. */
    private static final class TrainingTotals {
        double forwardMs;
        double backwardMs;
        double denseForwardMs;
        double denseBackwardMs;
        final PhaseTimings backwardPhases = new PhaseTimings();
        long mobaPairs;
        long densePairs;
        long tokens;
        long forwardExtraBytes;
        long backwardExtraBytes;
        long denseBackwardExtraBytes;
        int batches;
        final Set<String> paths = new TreeSet<>();
    }

    private static final List<String> BACKWARD_PHASES = List.of("delta", "route", "dq_selected", "fused", "dq", "dkdv");
    private static final String USAGE = "usage: KernelBench [--mode forward|training|both|long] [--device N] [--reps 20] "
            + "[--warmup 3] [--seed S] [--only SUBSTRING] [--cudnn cudnn_dense.csv]";

    private KernelBench() {
    }

    static List<Shape> shapes(long seed) {
        List<Shape> shapes = new ArrayList<>();
        for (int k : new int[] {8, 32, 64, 128}) {
            shapes.add(new Shape("FlashMoBA 2x" + k + "K", DType.FP16, 16, 16, 128, 128, 8,
                    new int[] {k * 1024, k * 1024}));
        }
        shapes.add(new Shape("MoBA speed test 1x32K", DType.BF16, 1, 1, 128, 512, 3, new int[] {32768}));
        shapes.add(new Shape("1x64K H=32 chunk 4096", DType.BF16, 32, 32, 128, 4096, 3, new int[] {65536}));
        SplittableRandom rng = new SplittableRandom(seed);
        int[] many = new int[4096];
        for (int i = 0; i < many.length; i++) {
            many[i] = rng.nextInt(256, 2049);
        }
        shapes.add(new Shape("4096 seqs of 256..2048", DType.FP16, 16, 16, 128, 128, 4, many));
        return shapes;
    }

    /**
     * Forward + backward shapes: FlashMoBA's (B=2, H=16, D=128, chunk 128, topk 8, fp16) at 8K, 32K and 64K tokens
     * per sequence, the MoBA / Triton-MoBA speed test (1 x 32K, H=1, D=128, chunk 512, topk 3, bf16), and the
     * long-chunk shape where attention math dominates (1 x 64K, H=32, chunk 4096, topk 3, bf16).
     */
    static List<Shape> trainingShapes() {
        List<Shape> shapes = new ArrayList<>();
        for (int k : new int[] {8, 32, 64}) {
            shapes.add(new Shape("FlashMoBA 2x" + k + "K", DType.FP16, 16, 16, 128, 128, 8,
                    new int[] {k * 1024, k * 1024}));
        }
        shapes.add(new Shape("MoBA speed test 1x32K", DType.BF16, 1, 1, 128, 512, 3, new int[] {32768}));
        shapes.add(new Shape("1x64K H=32 chunk 4096", DType.BF16, 32, 32, 128, 4096, 3, new int[] {65536}));
        return shapes;
    }

    /** Issue 13's long sequence: 1 x 1,048,576 tokens, H=8, D=128, chunk 512, topk 3, bf16. */
    static Shape longShape() {
        return new Shape("1x1M H=8 chunk 512", DType.BF16, 8, 8, 128, 512, 3, new int[] {1 << 20});
    }

    public static void main(String[] args) {
        int device = 0;
        int reps = 20;
        int warmup = 3;
        long seed = 20260101L;
        String only = "";
        String mode = "forward";
        CudnnTimes cudnn = CudnnTimes.NONE;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--device" -> device = Integer.parseInt(args[++i]);
                case "--reps" -> reps = Integer.parseInt(args[++i]);
                case "--warmup" -> warmup = Integer.parseInt(args[++i]);
                case "--seed" -> seed = Long.parseLong(args[++i]);
                case "--only" -> only = args[++i];
                case "--mode" -> mode = args[++i];
                case "--cudnn" -> cudnn = CudnnTimes.read(Path.of(args[++i]));
                default -> throw new IllegalArgumentException("unknown option " + args[i] + " (" + USAGE + ")");
            }
        }
        if (!List.of("forward", "training", "both", "long").contains(mode)) {
            throw new IllegalArgumentException("--mode must be forward, training, both or long, got '" + mode + "' ("
                    + USAGE + ")");
        }
        if (reps < 20) {
            throw new IllegalArgumentException("--reps must be >= 20 for a meaningful median, got " + reps);
        }
        String reason = CudaMobaAttention.unavailableReason(device);
        if (reason != null) {
            System.err.println("KernelBench: " + reason);
            System.exit(2);
        }
        try (CudaMobaAttention cuda = CudaMobaAttention.open(device)) {
            System.out.println("KernelBench on " + cuda.device() + ", forward engine " + cuda.forwardEngine().label()
                    + ", mode " + mode + ", reps " + reps + ", warm-up " + warmup + ", seed " + seed);
            if (mode.equals("long")) {
                if (!runLong(cuda, reps, warmup, seed)) {
                    System.exit(1);
                }
                return;
            }
            if (!mode.equals("training")) {
                runForward(cuda, only, reps, warmup, seed, cudnn);
            }
            if (!mode.equals("forward")) {
                runTraining(cuda, only, reps, warmup, seed, cudnn);
            }
        }
    }

    private static void printForwardHeader() {
        System.out.println(String.format(Locale.ROOT, "%-26s %9s %8s %8s %8s %8s %8s %7s %9s %8s %7s %9s %7s %7s "
                        + "%9s %s", "shape", "tokens", "gate ms", "attn ms", "fwd ms", "TFLOP/s", "attn TF", "%causal",
                "dense ms", "dense TF", "speedup", "cuDNN ms", "x cuDNN", "dense x", "extra MiB", "path"));
    }

    private static void runForward(CudaMobaAttention cuda, String only, int reps, int warmup, long seed,
                                   CudnnTimes cudnn) {
        printForwardHeader();
        for (Shape shape : shapes(seed)) {
            if (shape.name().contains(only)) {
                report(shape, measure(cuda, shape, reps, warmup, new SplittableRandom(seed), false),
                        cudnn.ms(shape, 0));
            }
        }
        System.out.println(String.format(Locale.ROOT, "peak extra device memory of one call: %.1f MiB",
                cuda.peakExtraDeviceBytes() / 1048576.0));
    }

    /** The long shape: times and the oracle's verdict on sampled rows; false when the check fails. */
    private static boolean runLong(CudaMobaAttention cuda, int reps, int warmup, long seed) {
        printForwardHeader();
        Shape shape = longShape();
        Totals t = measure(cuda, shape, reps, warmup, new SplittableRandom(seed), true);
        report(shape, t, Double.NaN);
        System.out.println(String.format(Locale.ROOT, "peak extra device memory of one call: %.1f MiB",
                cuda.peakExtraDeviceBytes() / 1048576.0));
        boolean passes = !t.oracle.isEmpty();
        for (OracleComparison.SequenceErrors e : t.oracle) {
            passes &= e.passes(shape.dtype());
            System.out.println(String.format(Locale.ROOT, "oracle, %d sampled rows x %d heads: out rel L2 %.3e "
                            + "(tolerance %.0e), lse rel L2 %.3e (tolerance %.0e), %d selection mismatches, %d near-ties"
                            + " left out: %s", e.tokensCompared(), shape.heads(), e.outRelL2(),
                    OracleComparison.outTolerance(shape.dtype()), e.lseRelL2(), OracleComparison.LSE_TOLERANCE,
                    e.selectionMismatches(), e.nearTies(), e.passes(shape.dtype()) ? "PASS" : "FAIL"));
        }
        return passes;
    }

    private static void runTraining(CudaMobaAttention cuda, String only, int reps, int warmup, long seed,
                                    CudnnTimes cudnn) {
        System.out.println();
        System.out.println("Training (forward + backward, backward on the forward's device state):");
        System.out.println(String.format(Locale.ROOT,
                "%-22s %9s %8s %8s %8s %7s %7s %7s %9s %9s %7s %7s %7s %9s %7s %7s %8s %8s %s",
                "shape", "tokens", "fwd ms", "bwd ms", "step ms", "bwd TF", "step TF", "%causal", "dfwd ms",
                "dbwd ms", "dbwd TF", "bwd x", "step x", "cuDNN ms", "x cuDNN", "dense x", "fwd MiB", "bwd MiB",
                "path"));
        List<String> summary = new ArrayList<>();
        for (Shape shape : trainingShapes()) {
            if (shape.name().contains(only)) {
                TrainingTotals t = measureTraining(cuda, shape, reps, warmup, new SplittableRandom(seed));
                summary.add(reportTraining(shape, t, cudnn.ms(shape, 1)));
            }
        }
        System.out.println(String.format(Locale.ROOT,
                "peak extra device memory of one call: forward %.1f MiB, backward %.1f MiB",
                cuda.peakExtraDeviceBytes() / 1048576.0, cuda.peakExtraBackwardDeviceBytes() / 1048576.0));
        System.out.println();
        System.out.println("== training summary (" + cuda.cudaDevice().name() + ", medians) ==");
        System.out.println(String.format(Locale.ROOT, "%-22s %9s %9s %8s %9s %9s %9s %9s %7s %7s", "shape", "step ms",
                "bwd ms", "bwd TF", "dense ms", "speedup", "bwd MiB", "cuDNN ms", "x cuDNN", "dense x"));
        summary.forEach(System.out::println);
    }

    /**
     * Medians over the shape's batches. {@code longShape}: our dense kernel runs once per input set, without
     * warm-up (one run takes seconds), and the oracle checks {@value #LONG_ORACLE_ROWS} sampled rows of the first
     * batch.
     */
    private static Totals measure(CudaMobaAttention cuda, Shape shape, int reps, int warmup, SplittableRandom rng,
                                  boolean longShape) {
        int denseReps = longShape ? 1 : reps;
        BenchInputs inputs = new BenchInputs(rng, shape.dtype());
        Totals totals = new Totals();
        for (int[] lengths : BenchInputs.pack(shape.lengths(), TOKEN_BUDGET)) {
            long tokens = Arrays.stream(lengths).asLongStream().sum();
            long setBytes = tokens * 2L * (2L * shape.heads() + 2L * shape.kvHeads()) * shape.headDim();
            int sets = longShape ? 1 : inputSets(shape, lengths, setBytes);
            List<DeviceBatch> moba = new ArrayList<>();
            List<DeviceBatch> dense = new ArrayList<>();
            try {
                for (int s = 0; s < sets; s++) {
                    PackedBatch batch = inputs.batch(shape.layout(), lengths);
                    DeviceBatch uploaded = cuda.upload(batch, shape.params());
                    moba.add(uploaded);
                    totals.paths.add(uploaded.attentionPath().name());
                    if (uploaded.attentionPath() == AttentionPath.UNION && totals.unionReason == null) {
                        totals.unionReason = uploaded.attentionPathReason();
                    }
                    dense.add(cuda.upload(batch, MobaParams.denseCausal(shape.chunk())));
                }
                for (int w = 0; w < warmup; w++) {
                    for (int s = 0; s < sets; s++) {
                        moba.get(s).run();
                        if (!longShape) {
                            dense.get(s).run();
                        }
                    }
                }
                double[] gate = new double[reps * sets];
                double[] attention = new double[reps * sets];
                double[] denseAttention = new double[denseReps * sets];
                for (int r = 0; r < reps; r++) {
                    for (int s = 0; s < sets; s++) {
                        PhaseTimings t = moba.get(s).run();
                        gate[r * sets + s] = t.get("chunk_means") + t.get("gate_topk");
                        attention[r * sets + s] = t.get("attention");
                        if (r < denseReps) {
                            denseAttention[r * sets + s] = dense.get(s).run().get("attention");
                        }
                    }
                }
                totals.gateMs += Percentiles.of(gate, 0.5);
                totals.attentionMs += Percentiles.of(attention, 0.5);
                totals.denseMs += Percentiles.of(denseAttention, 0.5);
                MobaOutput out = moba.get(0).download();
                totals.mobaPairs += AttendedPairs.count(moba.get(0).batch(), shape.params(), out);
                if (longShape && totals.batches == 0) {
                    PackedBatch first = moba.get(0).batch();
                    totals.oracle = OracleComparison.compare(first, shape.params(), out,
                            OracleComparison.sampleRows(first, shape.params(), LONG_ORACLE_ROWS, rng));
                }
                totals.densePairs += causalPairs(lengths) * shape.heads();
                totals.tokens += tokens;
                totals.extraBytes = Math.max(totals.extraBytes, moba.get(0).extraDeviceBytes());
                totals.batches++;
            } finally {
                moba.forEach(DeviceBatch::close);
                dense.forEach(DeviceBatch::close);
            }
        }
        return totals;
    }

    /**
     * Input sets rotated for a batch of {@code setBytes}: enough to exceed {@link #ROTATION_BYTES} (at least 2, at
     * most {@link #MAX_SETS}) when the whole shape is one batch, else 1.
     */
    private static int inputSets(Shape shape, int[] lengths, long setBytes) {
        return shape.lengths().length == lengths.length
                ? (int) Math.max(2, Math.min(MAX_SETS, (ROTATION_BYTES + setBytes - 1) / setBytes)) : 1;
    }

    private static void report(Shape shape, Totals t, double cudnnMs) {
        double fwdMs = t.gateMs + t.attentionMs;
        double flopsPerPair = 4.0 * shape.headDim();
        System.out.println(String.format(Locale.ROOT,
                "%-26s %9d %8.3f %8.3f %8.3f %8.1f %8.1f %6.1f%% %9.3f %8.1f %6.2fx%s %9.1f %s%s",
                shape.name(), t.tokens, t.gateMs, t.attentionMs, fwdMs,
                flopsPerPair * t.mobaPairs / (fwdMs * 1e9), flopsPerPair * t.mobaPairs / (t.attentionMs * 1e9),
                100.0 * t.mobaPairs / t.densePairs, t.denseMs, flopsPerPair * t.densePairs / (t.denseMs * 1e9),
                t.denseMs / fwdMs, cudnnCells(cudnnMs, fwdMs, t.denseMs), t.extraBytes / 1048576.0,
                String.join("+", t.paths),
                t.batches > 1 ? "  (sum over " + t.batches + " batches)" : ""));
        if (t.unionReason != null) {
            System.out.println("  " + shape.name() + ": UNION because " + t.unionReason);
        }
    }


    private static TrainingTotals measureTraining(CudaMobaAttention cuda, Shape shape, int reps, int warmup,
                                                  SplittableRandom rng) {
        BenchInputs inputs = new BenchInputs(rng, shape.dtype());
        TrainingTotals totals = new TrainingTotals();
        MobaParams dense = MobaParams.denseCausal(shape.chunk());
        for (int[] lengths : BenchInputs.pack(shape.lengths(), TOKEN_BUDGET)) {
            long tokens = Arrays.stream(lengths).asLongStream().sum();
            // q, out, dout, dq and k, v, dk, dv
            long setBytes = tokens * 2L * (4L * shape.heads() + 4L * shape.kvHeads()) * shape.headDim();
            int sets = inputSets(shape, lengths, setBytes);
            List<DeviceBatch> forwards = new ArrayList<>();
            List<DeviceBackward> backwards = new ArrayList<>();
            List<DeviceBatch> denseForwards = new ArrayList<>();
            List<DeviceBackward> denseBackwards = new ArrayList<>();
            try {
                for (int s = 0; s < sets; s++) {
                    PackedBatch batch = inputs.batch(shape.layout(), lengths);
                    short[] dout = inputs.tensor(batch.q().length);
                    DeviceBatch f = cuda.upload(batch, shape.params());
                    forwards.add(f);
                    totals.paths.add(f.attentionPath().name());
                    backwards.add(cuda.prepareBackward(f, dout));
                    DeviceBatch df = cuda.upload(batch, dense);
                    denseForwards.add(df);
                    denseBackwards.add(cuda.prepareBackward(df, dout));
                }
                for (int w = 0; w < warmup; w++) {
                    for (int s = 0; s < sets; s++) {
                        forwards.get(s).run();
                        backwards.get(s).run();
                        denseForwards.get(s).run();
                        denseBackwards.get(s).run();
                    }
                }
                int n = reps * sets;
                double[] forward = new double[n];
                double[] backward = new double[n];
                double[] denseForward = new double[n];
                double[] denseBackward = new double[n];
                double[][] phases = new double[BACKWARD_PHASES.size()][n];
                for (int r = 0; r < reps; r++) {
                    for (int s = 0; s < sets; s++) {
                        int i = r * sets + s;
                        PhaseTimings f = forwards.get(s).run();
                        forward[i] = f.get("chunk_means") + f.get("gate_topk") + f.get("attention");
                        PhaseTimings b = backwards.get(s).run();
                        backward[i] = b.total();
                        for (int p = 0; p < phases.length; p++) {
                            phases[p][i] = b.get(BACKWARD_PHASES.get(p));
                        }
                        denseForward[i] = denseForwards.get(s).run().get("attention");
                        denseBackward[i] = denseBackwards.get(s).run().total();
                    }
                }
                totals.forwardMs += Percentiles.of(forward, 0.5);
                totals.backwardMs += Percentiles.of(backward, 0.5);
                totals.denseForwardMs += Percentiles.of(denseForward, 0.5);
                totals.denseBackwardMs += Percentiles.of(denseBackward, 0.5);
                for (int p = 0; p < phases.length; p++) {
                    totals.backwardPhases.put(BACKWARD_PHASES.get(p), Percentiles.of(phases[p], 0.5));
                }
                MobaOutput out = forwards.get(0).download();
                totals.mobaPairs += AttendedPairs.count(forwards.get(0).batch(), shape.params(), out);
                totals.densePairs += causalPairs(lengths) * shape.heads();
                totals.tokens += tokens;
                totals.forwardExtraBytes = Math.max(totals.forwardExtraBytes, forwards.get(0).extraDeviceBytes());
                totals.backwardExtraBytes = Math.max(totals.backwardExtraBytes, backwards.get(0).extraDeviceBytes());
                totals.denseBackwardExtraBytes = Math.max(totals.denseBackwardExtraBytes,
                        denseBackwards.get(0).extraDeviceBytes());
                totals.batches++;
            } finally {
                // Closing a forward batch closes the backward prepared on it.
                forwards.forEach(DeviceBatch::close);
                denseForwards.forEach(DeviceBatch::close);
            }
        }
        return totals;
    }

    /** Prints the shape's rows and returns its line of the summary table. */
    private static String reportTraining(Shape shape, TrainingTotals t, double cudnnStepMs) {
        int d = shape.headDim();
        double stepMs = t.forwardMs + t.backwardMs;
        double denseStepMs = t.denseForwardMs + t.denseBackwardMs;
        double stepFlopsPerPair = AttendedPairs.FORWARD_FLOPS_PER_PAIR_DIM + AttendedPairs.BACKWARD_FLOPS_PER_PAIR_DIM;
        System.out.println(String.format(Locale.ROOT,
                "%-22s %9d %8.3f %8.3f %8.3f %7.1f %7.1f %6.1f%% %9.3f %9.3f %7.1f %6.2fx %6.2fx%s %8.1f %8.1f %s%s",
                shape.name(), t.tokens, t.forwardMs, t.backwardMs, stepMs,
                AttendedPairs.backwardTeraflops(t.mobaPairs, d, t.backwardMs),
                stepFlopsPerPair * d * t.mobaPairs / (stepMs * 1e9), 100.0 * t.mobaPairs / t.densePairs,
                t.denseForwardMs, t.denseBackwardMs,
                AttendedPairs.backwardTeraflops(t.densePairs, d, t.denseBackwardMs),
                t.denseBackwardMs / t.backwardMs, denseStepMs / stepMs, cudnnCells(cudnnStepMs, stepMs, denseStepMs),
                t.forwardExtraBytes / 1048576.0,
                t.backwardExtraBytes / 1048576.0, String.join("+", t.paths),
                t.batches > 1 ? "  (sum over " + t.batches + " batches)" : ""));
        StringBuilder phases = new StringBuilder("  " + shape.name() + " backward phases (ms):");
        for (String p : BACKWARD_PHASES) {
            phases.append(String.format(Locale.ROOT, " %s %.3f", p, t.backwardPhases.get(p)));
        }
        System.out.println(phases.append(String.format(Locale.ROOT, "; dense backward extra %.1f MiB",
                t.denseBackwardExtraBytes / 1048576.0)));
        return String.format(Locale.ROOT, "%-22s %9.3f %9.3f %8.1f %9.3f %8.2fx %9.1f%s", shape.name(), stepMs,
                t.backwardMs, AttendedPairs.backwardTeraflops(t.mobaPairs, d, t.backwardMs), denseStepMs,
                denseStepMs / stepMs, t.backwardExtraBytes / 1048576.0,
                cudnnCells(cudnnStepMs, stepMs, denseStepMs));
    }

    /** Causal (query, key) pairs of one head: L(L+1)/2 per sequence. */
    static long causalPairs(int[] lengths) {
        long pairs = 0;
        for (int length : lengths) {
            pairs += (long) length * (length + 1) / 2;
        }
        return pairs;
    }

}
