package org.moba.job.bench;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.IntStream;
import org.moba.job.run.Preflight;
import org.moba.job.spark.DeviceAssignment;
import org.moba.job.spark.TaskDevice;
import org.moba.kernels.AttendedPairs;
import org.moba.kernels.bench.Percentiles;
import org.moba.kernels.MobaAttention;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PhaseTimings;
import org.moba.kernels.Sequence;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Runs the benchmark grid on one device: the executor side of {@code bench}. */
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
        SyntheticSequences synth = new SyntheticSequences(seed, shape.shape().layout());
        int[] lengths = shape.lengths().lengths(seed, shape.shape().chunk());
        // Each sequence comes from its own seeded generator, so generating them in parallel gives the same inputs;
        // at 2 x 64K tokens, H16, D128 the generation takes longer than the measurement.
        List<Sequence> sequences = IntStream.range(0, lengths.length).parallel()
                .mapToObj(i -> synth.generate(i, lengths[i])).toList();
        List<SequencePacker.Packed> batches = new SequencePacker(shape.shape().layout(), shape.tokensPerBatch())
                .packAll(sequences);
        MobaParams moba = shape.shape().params();
        MobaParams dense = MobaParams.denseCausal(shape.shape().chunk());

        long pairs = 0;
        for (SequencePacker.Packed p : batches) {
            pairs += AttendedPairs.count(p.batch(), moba, backend.forward(p.batch(), moba));
        }
        Phases mobaTimes = time(backend, batches, moba);
        Phases denseTimes = time(backend, batches, dense);

        int tokens = Arrays.stream(lengths).sum();
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
        m.setSequences(lengths.length);
        m.setMeanLength(lengths.length == 0 ? 0 : (double) tokens / lengths.length);
        m.setTokens(tokens);
        m.setBatches(batches.size());
        m.setAttendedPairs(pairs);
        m.setMobaMedianMs(Percentiles.of(mobaTimes.compute, 0.5));
        m.setMobaP10Ms(Percentiles.of(mobaTimes.compute, 0.1));
        m.setMobaP90Ms(Percentiles.of(mobaTimes.compute, 0.9));
        m.setGateMedianMs(Percentiles.of(mobaTimes.gate, 0.5));
        m.setAttentionMedianMs(Percentiles.of(mobaTimes.attention, 0.5));
        m.setCopyMedianMs(Percentiles.of(mobaTimes.copies, 0.5));
        m.setDenseMedianMs(Percentiles.of(denseTimes.compute, 0.5));
        m.setUsefulTflops(AttendedPairs.teraflops(pairs, shape.shape().headDim(), m.getMobaMedianMs()));
        m.setTokensPerSecond(tokens / (m.getMobaMedianMs() * 1e-3));
        m.setSpeedupOverDense(m.getDenseMedianMs() / m.getMobaMedianMs());
        m.setTimedKernelMs(Arrays.stream(mobaTimes.compute).sum() + Arrays.stream(denseTimes.compute).sum());
        m.setTaskWallMs((System.nanoTime() - start) / 1e6);
        return m;
    }

    /** Per-repeat milliseconds, summed over the batches of the shape. */
    private record Phases(double[] compute, double[] gate, double[] attention, double[] copies) {
    }

    private Phases time(MobaAttention backend, List<SequencePacker.Packed> batches, MobaParams params) {
        for (int r = 0; r < warmup; r++) {
            batches.forEach(p -> backend.forward(p.batch(), params));
        }
        Phases t = new Phases(new double[repeats], new double[repeats], new double[repeats], new double[repeats]);
        for (int r = 0; r < repeats; r++) {
            for (SequencePacker.Packed p : batches) {
                MobaOutput out = backend.forward(p.batch(), params);
                PhaseTimings pt = out.timings();
                double copies = COPY_PHASES.stream().mapToDouble(pt::get).sum();
                t.compute[r] += pt.total() - copies;
                t.gate[r] += pt.get("chunk_means") + pt.get("gate_topk");
                t.attention[r] += pt.get("attention");
                t.copies[r] += copies;
            }
        }
        return t;
    }


}
