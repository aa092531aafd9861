package org.moba.kernels.cuda;

import static org.moba.kernels.cuda.CudaCheck.check;

import java.util.function.Supplier;

import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

import org.moba.kernels.DType;
import org.moba.kernels.cuda.KernelModule.Kernel;

/**
 * The backward kernels of one (dtype, head dim), launched exactly as the "# Backward" section of
 * kernels/src/main/cuda/ABI.md specifies: the only place that knows their names, parameter lists, grids and blocks
 * (shared memory sizes live in {@link MobaKernels.SharedMemory}). Looked up on the first backward call of a
 * (dtype, head dim), so a fatbin without them still serves the forward.
 */
final class MobaBackwardKernels {
    private static final int DELTA_THREADS = KernelGeometry.get("bwd_delta.threads");
    /** moba_bwd_delta: rows of {@code [T*H]} per block, one warp each. */
    private static final int DELTA_ROWS_PER_BLOCK = KernelGeometry.get("bwd_delta.rows_per_block");
    /** moba_bwd_route_totals / place / fill: one warp per bucket or token group. */
    private static final int ROUTE_WARP_THREADS = KernelGeometry.get("bwd_route.threads");
    private static final int ROUTE_WARPS_PER_BLOCK = KernelGeometry.get("bwd_route.warps");
    private static final int GRADIENT_THREADS = KernelGeometry.get("bwd.threads");
    /** moba_bwd_fused_h: a producer and two consumer warpgroups per 128-key block. */
    private static final int FUSED_THREADS = KernelGeometry.get("hopper_bwd.threads");
    /** moba_bwd_dq_h: a producer and two consumer warpgroups per 128-row query tile. */
    private static final int WIDE_DQ_THREADS = KernelGeometry.get("hopper_dq.threads");
    /** The keys of one fused block: the chunk size the fused kernel serves (besides dense attention). */
    static final int FUSED_BLOCK_KEYS = KernelGeometry.get("hopper_bwd.block_n");
    /** The only head dim the fused kernel is built for (its two consumers split dQ's columns in halves of 64). */
    static final int FUSED_HEAD_DIM = 128;

    private final KernelModule module;
    private final int headDim;
    private final Kernel delta;
    private final Kernel routeCount;
    private final Kernel routeTotals;
    private final Kernel routeScan;
    private final Kernel routePlace;
    private final Kernel routeFill;
    private final Kernel dqSelected;
    private final Kernel dq;
    /** moba_bwd_dq_h (step 9 on wgmma over the 128-row tiles), or null on the mma.sync engine. */
    private final Kernel wideDq;
    private final Kernel dkdv;
    /** moba_bwd_fused_h, or null where {@link #usesFused} never holds (the mma.sync engine, or not D = 128). */
    private final Kernel fused;

    MobaBackwardKernels(KernelModule module, DType dtype, int headDim) {
        this.module = module;
        this.headDim = headDim;
        String suffix = dtype.label() + "_d" + headDim;
        this.delta = module.function("moba_bwd_delta_" + dtype.label());
        this.routeCount = module.function("moba_bwd_route_count");
        this.routeTotals = module.function("moba_bwd_route_totals");
        this.routeScan = module.function("moba_route_scan");
        this.routePlace = module.function("moba_bwd_route_place");
        this.routeFill = module.function("moba_bwd_route_fill");
        this.dqSelected = module.function("moba_bwd_dq_selected_" + suffix);
        this.dq = module.function("moba_bwd_dq_" + suffix);
        this.wideDq = module.engine() == ForwardEngine.WGMMA ? module.function("moba_bwd_dq_h_" + suffix) : null;
        this.dkdv = module.function("moba_bwd_dkdv_" + suffix);
        this.fused = module.engine() == ForwardEngine.WGMMA && headDim == FUSED_HEAD_DIM
                ? module.function("moba_bwd_fused_h_" + suffix) : null;
    }

    /** Step 1: {@code delta [T, H] = rowsum(dout * out)} in fp32, {@code rows = T*H}. */
    void delta(CUstream stream, Supplier<String> context, CUdeviceptr out, CUdeviceptr dout, CUdeviceptr deltaOut,
               int rows) {
        launch(delta, stream, context, MobaKernels.blocks(rows, DELTA_ROWS_PER_BLOCK), 1, DELTA_THREADS, 0,
                out, dout, deltaOut, rows, headDim);
    }

    /**
     * Steps 2-7: deterministic routing of the {@code entries = T*H*W} selection entries into (head, global chunk)
     * buckets, every bucket's rows ascending by entry. Leaves {@code bucketRow0}/{@code bucketGroup0}
     * {@code [H*NFC + 1]} and {@code rows [entries]}; {@code groupCount [H*NFC, NG]} ends as the per-(bucket, group)
     * cursors.
     */
    void route(CUstream stream, Supplier<String> context, CUdeviceptr sel, CUdeviceptr cuSeqlens,
               CUdeviceptr chunkBase, int numSequences, int heads, int selectionWidth, int numFullChunks,
               int numTokens, BackwardScratch scratch, int rowsPerGroup, CUdeviceptr groupCount,
               CUdeviceptr bucketCount, CUdeviceptr bucketRow0, CUdeviceptr bucketGroup0, CUdeviceptr bucketCursor,
               CUdeviceptr rows) {
        int buckets = Math.toIntExact(scratch.buckets());
        int groups = scratch.numGroups();
        int groupTokens = scratch.groupTokens();
        int entries = Math.toIntExact(scratch.entries());
        long cells = (long) buckets * groups;
        check(JCudaDriver.cuMemsetD32Async(groupCount, 0, cells, stream),
                () -> "zeroing the backward's group counts (" + cells + ") for " + context.get());
        launch(routeCount, stream, context, MobaKernels.blocks(entries, MobaKernels.ROUTE_THREADS), 1,
                MobaKernels.ROUTE_THREADS, 0, sel, cuSeqlens, chunkBase, numSequences, heads, selectionWidth,
                numFullChunks, entries, groupTokens, groups, groupCount);
        int bucketBlocks = MobaKernels.blocks(buckets, ROUTE_WARPS_PER_BLOCK);
        launch(routeTotals, stream, context, bucketBlocks, 1, ROUTE_WARP_THREADS, 0,
                groupCount, buckets, groups, bucketCount);
        launch(routeScan, stream, context, 1, 1, MobaKernels.ROUTE_SCAN_THREADS, 0,
                bucketCount, buckets, rowsPerGroup, bucketRow0, bucketGroup0, bucketCursor);
        launch(routePlace, stream, context, bucketBlocks, 1, ROUTE_WARP_THREADS, 0,
                groupCount, bucketRow0, buckets, groups);
        int fillWarps = Math.multiplyExact(groups, heads);  // one warp per (token group, head)
        launch(routeFill, stream, context, MobaKernels.blocks(fillWarps, ROUTE_WARPS_PER_BLOCK), 1,
                ROUTE_WARP_THREADS, 0, sel, cuSeqlens, chunkBase, numSequences, heads, selectionWidth,
                numFullChunks, numTokens, groupTokens, groups, groupCount, rows);
    }

    /**
     * Step 8: {@code partialDq [T, H, W, D]}, {@code scale * dS K} of every routed entry over its one selected
     * chunk. The grid is an upper bound on the number of (bucket, row group) pairs (surplus blocks exit).
     */
    void dqSelected(CUstream stream, Supplier<String> context, CUdeviceptr q, CUdeviceptr k, CUdeviceptr v,
                    CUdeviceptr dout, CUdeviceptr lse, CUdeviceptr deltaIn, CUdeviceptr cuSeqlens,
                    CUdeviceptr chunkBase, int numSequences, CUdeviceptr bucketRow0, CUdeviceptr bucketGroup0,
                    CUdeviceptr rows, int rowsPerGroup, CUdeviceptr partialDq, int heads, int kvHeads,
                    int selectionWidth, int chunkSize, int numFullChunks, int entries, float scale) {
        int grid = MobaKernels.selectedGrid(entries, rowsPerGroup, heads, numFullChunks);
        launch(dqSelected, stream, context, grid, 1, GRADIENT_THREADS,
                MobaKernels.SharedMemory.backwardDqSelected(headDim),
                q, k, v, dout, lse, deltaIn, cuSeqlens, chunkBase, numSequences, bucketRow0, bucketGroup0, rows,
                rowsPerGroup, partialDq, heads, kvHeads, selectionWidth, chunkSize, numFullChunks, scale);
    }

    /** Whether {@link #dq} runs on wgmma and so takes the plan's 128-row tiles instead of its 64-row ones. */
    boolean wideDq() {
        return wideDq != null;
    }

    /**
     * Step 9: {@code dq [T, H, D]} per query tile: the own chunk's causal prefix (dense: the whole causal prefix),
     * plus each entry's {@code partialDq} in slot order ({@code sel}/{@code partialDq} NULL and {@code selectionWidth}
     * 0 when not routed). {@code tiles}: the plan's 128-row tiles where {@link #wideDq()}, else its 64-row tiles.
     */
    void dq(CUstream stream, Supplier<String> context, CUdeviceptr q, CUdeviceptr k, CUdeviceptr v,
            CUdeviceptr dout, CUdeviceptr lse, CUdeviceptr deltaIn, CUdeviceptr dqOut, CUdeviceptr cuSeqlens,
            CUdeviceptr sel, int selectionWidth, CUdeviceptr tiles, int numTiles, int heads, int kvHeads,
            int chunkSize, float scale, boolean dense, CUdeviceptr partialDq) {
        boolean wide = wideDq();
        launch(wide ? wideDq : dq, stream, context, numTiles, heads, wide ? WIDE_DQ_THREADS : GRADIENT_THREADS,
                wide ? MobaKernels.SharedMemory.backwardWideDq(headDim) : MobaKernels.SharedMemory.backwardDq(headDim),
                q, k, v, dout, lse, deltaIn, dqOut, cuSeqlens, sel, selectionWidth, tiles, heads, kvHeads, chunkSize,
                scale, dense ? 1 : 0, partialDq);
    }

    /**
     * Step 10: {@code dk, dv [T, Hkv, D]} per 64-key tile and kv head, summed over the kv head's query heads: the own
     * chunk's causal queries, then the rows of the tile's chunk's buckets ({@code bucketRow0}/{@code rows} NULL and
     * {@code selectionWidth} 0 when not routed).
     */
    void dkdv(CUstream stream, Supplier<String> context, CUdeviceptr q, CUdeviceptr k, CUdeviceptr v,
              CUdeviceptr dout, CUdeviceptr lse, CUdeviceptr deltaIn, CUdeviceptr dkOut, CUdeviceptr dvOut,
              CUdeviceptr cuSeqlens, CUdeviceptr chunkBase, CUdeviceptr tiles, int numTiles, CUdeviceptr bucketRow0,
              CUdeviceptr rows, int heads, int kvHeads, int selectionWidth, int chunkSize, int numFullChunks,
              float scale, boolean dense) {
        launch(dkdv, stream, context, numTiles, kvHeads, GRADIENT_THREADS,
                MobaKernels.SharedMemory.backwardDkdv(headDim),
                q, k, v, dout, lse, deltaIn, dkOut, dvOut, cuSeqlens, chunkBase, tiles, bucketRow0, rows, heads,
                kvHeads, selectionWidth, chunkSize, numFullChunks, scale, dense ? 1 : 0);
    }

    /** Whether {@link #fused} replaces {@link #dqSelected} and {@link #dkdv} for a call on this module. */
    boolean usesFused(boolean dense, int chunkSize) {
        return usesFused(module.engine(), headDim, dense, chunkSize);
    }

    /**
     * The fused sm_90a backward serves the wgmma engine at D = 128 when a chunk is one 128-key block (each routed
     * entry's partial dQ then comes from one block) or attention is dense (no partials); elsewhere dq_selected and
     * dkdv run. Forcing the mma.sync engine ({@link ForwardEngine#PROPERTY}) forces the separate kernels on Hopper.
     */
    static boolean usesFused(ForwardEngine engine, int headDim, boolean dense, int chunkSize) {
        return engine == ForwardEngine.WGMMA && headDim == FUSED_HEAD_DIM && (dense || chunkSize == FUSED_BLOCK_KEYS);
    }

    /**
     * Steps 8 + 10 fused (sm_90a, {@link #usesFused}): {@code dk, dv [T, Hkv, D]} per 128-key block ({@code blocks}:
     * the plan's 128-row tiles) and kv head, and the routed entries' {@code partialDq}, which {@link #dq} then adds.
     */
    void fused(CUstream stream, Supplier<String> context, CUdeviceptr q, CUdeviceptr k, CUdeviceptr v,
               CUdeviceptr dout, CUdeviceptr lse, CUdeviceptr deltaIn, CUdeviceptr dkOut, CUdeviceptr dvOut,
               CUdeviceptr partialDq, CUdeviceptr cuSeqlens, CUdeviceptr chunkBase, CUdeviceptr blocks,
               int numBlocks, CUdeviceptr bucketRow0, CUdeviceptr rows, int heads, int kvHeads, int selectionWidth,
               int chunkSize, int numFullChunks, float scale, boolean dense) {
        launch(fused, stream, context, numBlocks, kvHeads, FUSED_THREADS,
                MobaKernels.SharedMemory.backwardFused(headDim),
                q, k, v, dout, lse, deltaIn, dkOut, dvOut, partialDq, cuSeqlens, chunkBase, blocks, bucketRow0, rows,
                heads, kvHeads, selectionWidth, chunkSize, numFullChunks, scale, dense ? 1 : 0);
    }

    private void launch(Kernel kernel, CUstream stream, Supplier<String> context, int gridX, int gridY, int threads,
                        int dynamicSmem, Object... args) {
        MobaKernels.launch(module, kernel, stream, context, gridX, gridY, threads, dynamicSmem, args);
    }

    @Override
    public String toString() {
        return delta.name + ", " + routeCount.name + ", " + routeTotals.name + ", " + routeScan.name + ", "
                + routePlace.name + ", " + routeFill.name + ", " + dqSelected.name + ", " + dq.name + ", "
                + dkdv.name + (fused != null ? ", " + fused.name : "") + (wideDq != null ? ", " + wideDq.name : "");
    }
}
