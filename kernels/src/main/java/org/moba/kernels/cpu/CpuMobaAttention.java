package org.moba.kernels.cpu;

import static org.moba.kernels.BackwardInputRules.checkLength;
import static org.moba.kernels.BackwardInputRules.length;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.stream.Stream;

import org.moba.kernels.BackwardInputRules;
import org.moba.kernels.DType;
import org.moba.kernels.MobaGradients;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.MobaTraining;
import org.moba.kernels.PhaseTimings;

/**
 * The fast CPU backend: docs/semantics.md's function in fp32 on a pool of threads, parallel over (sequence, head, block
 * of query rows). Phases: {@code convert} (inputs to fp32 once, keys transposed per tile segment), {@code chunk_means},
 * {@code gate_topk}, {@code attention} and, in {@link #forward}, {@code round_output}. No {@code [chunks x tokens]}
 * score matrix is ever formed: the gate keeps a per-row top-k and attention is an online softmax per row.
 * Thread-safe: concurrent calls share the pool.
 *
 * <p>Backward ({@link #backward}, {@link #backwardFloat}): phases {@code backward_prep} (inputs to fp32, transposed
 * tiles, per-row {@code delta} and {@code lse}, the inverted selection), {@code backward_dq} (query-block-stationary,
 * parallel over (sequence, head, row block)), {@code backward_dkdv} (key-chunk-stationary, parallel over (kv head,
 * key segment), the group's query heads summed inside one task) and, in {@link #backward}, {@code round_gradients}.
 * Every output element is written by one task with a fixed summation order: results are bit-identical across runs
 * and thread counts.
 */
public final class CpuMobaAttention implements MobaTraining {
    /** Largest Java array length that is safe on every JVM. */
    private static final long MAX_ARRAY = Integer.MAX_VALUE - 8;

    private final ParallelLoop loop;
    private final int maxRowsPerBlock;
    private final String device;
    private volatile boolean closed;

    public CpuMobaAttention(int threads) {
        this(threads, RowBlocks.DEFAULT_MAX_ROWS);
    }

    /** With a chosen work-unit size (query rows per block), so tests can exercise blocks that split a chunk. */
    CpuMobaAttention(int threads, int maxRowsPerBlock) {
        if (threads <= 0) {
            throw new IllegalArgumentException("threads must be > 0, got " + threads);
        }
        if (maxRowsPerBlock <= 0) {
            throw new IllegalArgumentException("rows per block must be > 0, got " + maxRowsPerBlock);
        }
        this.loop = new ParallelLoop(threads, "moba-cpu");
        this.maxRowsPerBlock = maxRowsPerBlock;
        this.device = "CPU " + cpuModel() + ", " + threads + " threads (" + Runtime.getRuntime().availableProcessors()
                + " processors available)";
    }

    @Override
    public String name() {
        return "cpu";
    }

    @Override
    public String device() {
        return device;
    }

    @Override
    public MobaOutput forward(PackedBatch batch, MobaParams params) {
        CpuForward f = forwardFloat(batch, params);
        long start = System.nanoTime();
        DType dtype = batch.dtype();
        float[] values = f.out();
        short[] out = new short[values.length];
        int perTask = 1 << 16;
        loop.forEach((values.length + perTask - 1) / perTask, () -> task -> {
            for (int i = task * perTask, end = Math.min(values.length, i + perTask); i < end; i++) {
                out[i] = dtype.fromFloat(values[i]);
            }
        });
        f.timings().put("round_output", millisSince(start));
        return new MobaOutput(out, f.lse(), f.selected(), f.selectionWidth(), f.timings());
    }

    /** The forward pass with the output still in fp32 (what {@link #forward} rounds to the batch dtype). */
    public CpuForward forwardFloat(PackedBatch batch, MobaParams params) {
        if (closed) {
            throw new IllegalStateException("CpuMobaAttention is closed");
        }
        validate(batch, params);
        PhaseTimings timings = new PhaseTimings();
        long start = System.nanoTime();
        FloatTensors x = FloatTensors.convert(batch, params, loop);
        timings.put("convert", millisSince(start));

        start = System.nanoTime();
        if (!params.denseCausal()) {
            x.computeMeans(loop);
        }
        timings.put("chunk_means", millisSince(start));

        RowBlocks blocks = new RowBlocks(batch, params.chunkSize(), maxRowsPerBlock);
        ForwardPlan plan = ForwardPlan.of(x, blocks, batch, params);
        // Outputs are poisoned so that anything a loop failed to write shows up (NaN, or an impossible chunk index)
        // rather than passing as a plausible value.
        int[] selected = new int[batch.totalTokens() * batch.heads() * plan.width()];
        Arrays.fill(selected, Integer.MIN_VALUE);
        start = System.nanoTime();
        if (plan.width() > 0) {
            loop.forEach(blocks.tasks(), () -> new GateTopK(plan, selected));
        }
        timings.put("gate_topk", millisSince(start));

        float[] out = new float[batch.q().length];
        float[] lse = new float[batch.totalTokens() * batch.heads()];
        Arrays.fill(out, Float.NaN);
        Arrays.fill(lse, Float.NaN);
        start = System.nanoTime();
        int[] selection = params.denseCausal() ? null : selected;
        float scale = params.scale(batch.headDim());
        loop.forEach(blocks.tasks(), () -> new BlockAttention(plan, scale, selection, out, lse));
        timings.put("attention", millisSince(start));
        return new CpuForward(out, lse, selected, plan.width(), timings);
    }

    @Override
    public MobaGradients backward(PackedBatch batch, MobaParams params, MobaOutput forward, short[] dout) {
        validate(batch, params);
        if (forward == null) {
            throw new MobaInputException("forward is missing");
        }
        long start = System.nanoTime();
        DType dtype = batch.dtype();
        checkLength("dout", length(dout), batch.q().length, "T*H*D");
        checkLength("forward.out", length(forward.out()), batch.q().length, "T*H*D");
        float[] out = widen(forward.out(), dtype);
        float[] doutFloat = widen(dout, dtype);
        double widenMs = millisSince(start);
        CpuGradients g = backwardFloat(batch, params, new CpuForward(out, forward.lse(), forward.selected(),
                forward.selectionWidth(), null), doutFloat);
        g.timings().put("backward_prep", widenMs);
        start = System.nanoTime();
        short[] dq = round(g.dq(), dtype);
        short[] dk = round(g.dk(), dtype);
        short[] dv = round(g.dv(), dtype);
        g.timings().put("round_gradients", millisSince(start));
        return new MobaGradients(dq, dk, dv, g.timings());
    }

    /**
     * The backward pass in fp32 from an fp32 forward (what {@link #backward} runs after widening the forward's output
     * and {@code dout}, and rounds): {@code forward.out} and {@code dout} are {@code [T, H, D]} fp32.
     */
    public CpuGradients backwardFloat(PackedBatch batch, MobaParams params, CpuForward forward, float[] dout) {
        if (closed) {
            throw new IllegalStateException("CpuMobaAttention is closed");
        }
        validate(batch, params);
        if (forward == null) {
            throw new MobaInputException("forward is missing");
        }
        BackwardInputRules.checkSizes(batch, params, length(dout), length(forward.out()), length(forward.lse()),
                forward.selectionWidth(), length(forward.selected()));

        PhaseTimings timings = new PhaseTimings();
        long start = System.nanoTime();
        FloatTensors x = FloatTensors.convert(batch, params, loop);
        RowBlocks blocks = new RowBlocks(batch, params.chunkSize(), maxRowsPerBlock);
        ForwardPlan plan = ForwardPlan.of(x, blocks, batch, params);
        float scale = params.scale(batch.headDim());
        BackwardPlan bp = BackwardPlan.prepare(plan, batch, scale, params.denseCausal(), forward.out(),
                forward.lse(), forward.selected(), dout, loop);
        timings.put("backward_prep", millisSince(start));

        // Poisoned, so that anything a loop failed to write shows up as NaN.
        float[] dq = new float[batch.q().length];
        float[] dk = new float[batch.k().length];
        float[] dv = new float[batch.v().length];
        Arrays.fill(dq, Float.NaN);
        Arrays.fill(dk, Float.NaN);
        Arrays.fill(dv, Float.NaN);
        start = System.nanoTime();
        int[] selection = params.denseCausal() ? null : forward.selected();
        loop.forEach(blocks.tasks(), () -> new BlockGradQ(bp, selection, dq));
        timings.put("backward_dq", millisSince(start));

        start = System.nanoTime();
        int kvHeads = batch.kvHeads();
        loop.forEach(bp.chunkOfSegment.length * kvHeads, () -> new ChunkGradKV(bp, kvHeads, dk, dv));
        timings.put("backward_dkdv", millisSince(start));
        return new CpuGradients(dq, dk, dv, timings);
    }

    private float[] widen(short[] bits, DType dtype) {
        float[] values = new float[bits.length];
        int perTask = 1 << 16;
        loop.forEach((bits.length + perTask - 1) / perTask, () -> task -> {
            for (int i = task * perTask, end = Math.min(bits.length, i + perTask); i < end; i++) {
                values[i] = dtype.toFloat(bits[i]);
            }
        });
        return values;
    }

    private short[] round(float[] values, DType dtype) {
        short[] bits = new short[values.length];
        int perTask = 1 << 16;
        loop.forEach((values.length + perTask - 1) / perTask, () -> task -> {
            for (int i = task * perTask, end = Math.min(values.length, i + perTask); i < end; i++) {
                bits[i] = dtype.fromFloat(values[i]);
            }
        });
        return bits;
    }

    /** Checks what MobaParams and PackedBatch cannot check alone: their combination and this backend's limits. */
    static void validate(PackedBatch batch, MobaParams params) {
        if (batch == null) {
            throw new MobaInputException("batch is missing");
        }
        if (params == null) {
            throw new MobaInputException("params are missing");
        }
        long selection = (long) batch.totalTokens() * batch.heads() * params.selectionWidth(batch.maxSeqlen());
        if (selection > MAX_ARRAY) {
            throw new MobaInputException("topk = " + params.topk() + " with chunk_size = " + params.chunkSize()
                    + " needs a selection of " + selection + " entries for T = " + batch.totalTokens()
                    + ", H = " + batch.heads() + ": more than one array holds; lower topk or the batch size");
        }
    }

    /** The model name Linux reports, else the architecture. */
    private static String cpuModel() {
        try (Stream<String> lines = Files.lines(Path.of("/proc/cpuinfo"))) {
            return lines.filter(line -> line.startsWith("model name"))
                    .map(line -> line.substring(line.indexOf(':') + 1).trim())
                    .findFirst().orElse(System.getProperty("os.arch"));
        } catch (IOException | UncheckedIOException e) {
            return System.getProperty("os.arch");
        }
    }

    private static double millisSince(long startNanos) {
        return (System.nanoTime() - startNanos) / 1e6;
    }

    @Override
    public void close() {
        closed = true;
        loop.close();
    }
}
