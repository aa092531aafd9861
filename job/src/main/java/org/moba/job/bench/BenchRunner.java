package org.moba.job.bench;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.moba.job.run.Preflight;
import org.moba.job.spark.DeviceAssignment;
import org.moba.job.spark.TaskDevice;
import org.moba.kernels.AttendedPairs;
import org.moba.kernels.bench.Percentiles;
import org.moba.kernels.MobaAttention;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.PhaseTimings;
import org.moba.kernels.PreparedBatch;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs the benchmark grid on one device: the executor side of {@code bench}. Per shape the inputs are built once
 * ({@link SharedInputs}), and MoBA and the dense baseline each prepare every batch once and time only its runs, so
 * that the wall time goes to measuring rather than to generating and copying inputs.
 */
public final class BenchRunner implements java.io.Serializable {
    private static final long serialVersionUID = 1L;
    private static final Logger LOG = LoggerFactory.getLogger(BenchRunner.class);
    /** Phases that move data between host and device; everything else is compute. */
    private static final List<String> COPY_PHASES = List.of("h2d", "d2h");

    private final int warmup;
    private final int repeats;
    private final long seed;

    public BenchRunner(int warmup, int repeats, long seed) {
        Preflight.atLeast("--repeats", repeats, 1);
        Preflight.atLeast("--warmup", warmup, 0);
        this.warmup = warmup;
        this.repeats = repeats;
        this.seed = seed;
    }

    public List<BenchMeasurement> run(List<BenchShape> shapes, MobaAttention backend, DeviceAssignment assignment,
                                      TaskDevice device) {
        List<BenchMeasurement> rows = new ArrayList<>();
        long start = System.nanoTime();
        for (BenchShape shape : shapes) {
            LOG.info("bench {} on {} (executor/gpu/ordinal/bus {}): warm-up {}, repeats {}", shape.label(),
                    backend.device(), device.label(), warmup, repeats);
            rows.add(measure(shape, backend, assignment, device));
            // Progress with a naive ETA (the mean time per shape so far): grids on slow devices run for a long time.
            double elapsed = (System.nanoTime() - start) / 1e9;
            int done = rows.size();
            LOG.info("bench: shape {}/{} done on {} after {} s; ETA {} s", done, shapes.size(), device.label(),
                    Math.round(elapsed), Math.round(elapsed / done * (shapes.size() - done)));
        }
        return rows;
    }

    private BenchMeasurement measure(BenchShape shape, MobaAttention backend, DeviceAssignment assignment,
                                     TaskDevice device) {
        long start = System.nanoTime();
        List<PackedBatch> batches = SharedInputs.of(shape, seed);
        double inputMs = (System.nanoTime() - start) / 1e6;
        MobaParams moba = shape.shape().params();
        Phases mobaTimes = time(backend, batches, moba, true);
        Phases denseTimes = time(backend, batches, MobaParams.denseCausal(shape.shape().chunk()), false);

        int tokens = batches.stream().mapToInt(PackedBatch::totalTokens).sum();
        int sequences = batches.stream().mapToInt(PackedBatch::numSequences).sum();
        BenchMeasurement m = new BenchMeasurement();
        m.setHost(device.host());
        m.setExecutorId(device.executorId());
        m.setGpuAddresses(device.gpuAddresses());
        m.setPciBusId(device.pciBusId());
        m.setBackend(backend.name());
        m.setDevice(backend.device());
        m.setDeviceOrdinal(device.deviceOrdinal());
        m.setDeviceSource(assignment.source());
        m.setShape(shape.label());
        m.setConfig(shape.shape().label());
        m.setLengths(shape.lengths().spec());
        m.setSequences(sequences);
        m.setMeanLength(sequences == 0 ? 0 : (double) tokens / sequences);
        m.setTokens(tokens);
        m.setBatches(batches.size());
        m.setAttendedPairs(mobaTimes.pairs);
        m.setMobaMedianMs(Percentiles.of(mobaTimes.compute, 0.5));
        m.setMobaP10Ms(Percentiles.of(mobaTimes.compute, 0.1));
        m.setMobaP90Ms(Percentiles.of(mobaTimes.compute, 0.9));
        m.setGateMedianMs(Percentiles.of(mobaTimes.gate, 0.5));
        m.setAttentionMedianMs(Percentiles.of(mobaTimes.attention, 0.5));
        m.setCopyMedianMs(mobaTimes.copyMs);
        m.setDenseMedianMs(Percentiles.of(denseTimes.compute, 0.5));
        m.setUsefulTflops(AttendedPairs.teraflops(mobaTimes.pairs, shape.shape().headDim(), m.getMobaMedianMs()));
        m.setTokensPerSecond(tokens / (m.getMobaMedianMs() * 1e-3));
        m.setSpeedupOverDense(m.getDenseMedianMs() / m.getMobaMedianMs());
        m.setTimedKernelMs(Arrays.stream(mobaTimes.compute).sum() + Arrays.stream(denseTimes.compute).sum());
        m.setInputMs(inputMs);
        m.setTaskWallMs((System.nanoTime() - start) / 1e6);
        return m;
    }

    /**
     * Per-repeat milliseconds summed over the batches of a shape; the host<->device copies of one upload and one
     * download per batch, and the attended pairs, when the output was fetched.
     */
    private static final class Phases {
        final double[] compute;
        final double[] gate;
        final double[] attention;
        double copyMs;
        long pairs;

        Phases(int repeats) {
            compute = new double[repeats];
            gate = new double[repeats];
            attention = new double[repeats];
        }
    }

    /**
     * Each batch prepared once ({@link MobaAttention#prepare}: on a device, uploaded once), run {@code warmup} times
     * untimed and {@code repeats} times timed, then, with {@code fetchOutput}, its latest output downloaded for the
     * copy times and the pairs the selection attended.
     */
    private Phases time(MobaAttention backend, List<PackedBatch> batches, MobaParams params, boolean fetchOutput) {
        Phases t = new Phases(repeats);
        for (PackedBatch batch : batches) {
            try (PreparedBatch prepared = backend.prepare(batch, params)) {
                for (int r = 0; r < warmup; r++) {
                    prepared.run();
                }
                for (int r = 0; r < repeats; r++) {
                    PhaseTimings pt = prepared.run();
                    double copies = copyMs(pt);
                    t.compute[r] += pt.total() - copies;
                    t.gate[r] += pt.get("chunk_means") + pt.get("gate_topk");
                    t.attention[r] += pt.get("attention");
                }
                if (fetchOutput) {
                    MobaOutput out = prepared.download();
                    t.copyMs += copyMs(out.timings());
                    t.pairs += AttendedPairs.count(batch, params, out);
                }
            }
        }
        return t;
    }

    private static double copyMs(PhaseTimings timings) {
        return COPY_PHASES.stream().mapToDouble(timings::get).sum();
    }
}
