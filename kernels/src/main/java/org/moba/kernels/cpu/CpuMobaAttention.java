package org.moba.kernels.cpu;

import java.util.Arrays;

import org.moba.kernels.DType;
import org.moba.kernels.MobaAttention;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.PhaseTimings;

/**
 * The fast CPU backend: MOBA.md's function in fp32 on a pool of threads, parallel over (sequence, head, block of
 * query rows). Phases: {@code convert} (inputs to fp32 once, keys transposed per chunk), {@code chunk_means},
 * {@code gate_topk}, {@code attention} and, in {@link #forward}, {@code round_output}. No {@code [chunks x tokens]}
 * score matrix is ever formed: the gate keeps a per-row top-k and attention is an online softmax per row.
 * Thread-safe: concurrent calls share the pool.
 */
public final class CpuMobaAttention implements MobaAttention {
    /** Largest Java array length that is safe on every JVM. */
    private static final long MAX_ARRAY = Integer.MAX_VALUE - 8;

    private final ParallelLoop loop;
    private final int maxRowsPerBlock;
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
    }

    @Override
    public String name() {
        return "cpu";
    }

    @Override
    public String device() {
        return "CPU " + System.getProperty("os.arch") + ", " + loop.threads() + " threads ("
                + Runtime.getRuntime().availableProcessors() + " processors available)";
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
        int tokens = batch.totalTokens();
        int heads = batch.heads();
        int d = batch.headDim();
        int chunk = params.chunkSize();
        int width = params.selectionWidth(batch.maxSeqlen());
        // Scratch follows the longest sequence present; max_seqlen may be a loose upper bound.
        int longest = longestSequence(batch);
        int maxChunks = params.chunksOf(longest);
        int maxTile = Math.min(chunk, longest);

        long start = System.nanoTime();
        FloatTensors x = FloatTensors.convert(batch, chunk, loop);
        timings.put("convert", millisSince(start));

        start = System.nanoTime();
        if (!params.denseCausal()) {
            x.computeMeans(loop);
        }
        timings.put("chunk_means", millisSince(start));

        RowBlocks blocks = new RowBlocks(batch, chunk, maxRowsPerBlock);
        int[] selected = new int[tokens * heads * width];
        Arrays.fill(selected, Integer.MIN_VALUE); // poison, as for out below
        start = System.nanoTime();
        if (width > 0) {
            loop.forEach(blocks.tasks(), () -> new GateTopK(x, blocks, batch.cuSeqlens(), heads, d,
                    batch.groupSize(), chunk, params.topk(), width, Math.max(0, maxChunks - 1), selected));
        }
        timings.put("gate_topk", millisSince(start));

        // Poisoned so that a row the loop failed to write shows up as NaN rather than as a plausible value.
        float[] out = new float[tokens * heads * d];
        float[] lse = new float[tokens * heads];
        Arrays.fill(out, Float.NaN);
        Arrays.fill(lse, Float.NaN);
        start = System.nanoTime();
        int[] selection = params.denseCausal() ? null : selected;
        loop.forEach(blocks.tasks(), () -> new BlockAttention(x, blocks, batch.cuSeqlens(), heads, d,
                batch.groupSize(), chunk, params.scale(d), selection, width, maxChunks, maxTile, out, lse));
        timings.put("attention", millisSince(start));
        return new CpuForward(out, lse, selected, width, timings);
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

    private static int longestSequence(PackedBatch batch) {
        int longest = 0;
        for (int b = 0; b < batch.numSequences(); b++) {
            longest = Math.max(longest, batch.seqLength(b));
        }
        return longest;
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
