package org.moba.kernels.cuda;

import static org.moba.kernels.cuda.CudaCheck.check;

import java.util.function.Supplier;

import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

import org.moba.kernels.DType;
import org.moba.kernels.cuda.KernelModule.Kernel;

/**
 * The MoBA kernels of one (dtype, head dim), launched exactly as kernels/src/main/cuda/ABI.md specifies: the only
 * place that knows the kernels' names, parameter lists, grids, blocks and shared memory.
 */
final class MobaKernels {
    /** The gate writes at most this many selection slots per launch; wider selections take several passes. */
    static final int GATE_SLOTS_PER_PASS = KernelGeometry.get("gate.slots_per_pass");
    private static final int CHUNK_MEAN_THREADS = KernelGeometry.get("chunk_mean.threads");
    private static final int GATE_THREADS = KernelGeometry.get("gate.threads");
    private static final int SORT_THREADS = KernelGeometry.get("sel_sort.threads");
    /** moba_attn_fwd, moba_attn_own_combine and moba_attn_selected (FlashConfig). */
    private static final int ATTENTION_THREADS = KernelGeometry.get("flash.threads");
    /** The wgmma engine's blocks: a producer warpgroup and two consumer warpgroups. */
    private static final int WIDE_ATTENTION_THREADS = KernelGeometry.get("hopper_fwd.threads");
    /** RouteConfig: moba_route_count / fill, and the backward's moba_bwd_route_count. */
    static final int ROUTE_THREADS = KernelGeometry.get("route.threads");
    /** moba_route_scan, shared by the forward's and the backward's routing. */
    static final int ROUTE_SCAN_THREADS = KernelGeometry.get("route.scan_threads");
    private static final int SCORE_THREADS = KernelGeometry.get("score.threads");

    private final KernelModule module;
    private final int headDim;
    private final ForwardEngine engine;
    private final Kernel chunkMean;
    private final Kernel gateTopk;
    private final Kernel selectionSort;
    private final Kernel selectAllPast;
    private final Kernel attention;
    private final Kernel routeCount;
    private final Kernel routeScan;
    private final Kernel routeFill;
    private final Kernel selected;
    private final Kernel ownCombine;
    private final Kernel wideAttention;
    private final Kernel wideOwnCombine;
    private final Kernel wideSelected;
    private final Kernel wideResidentSelected;
    private final Kernel wideUnion;
    private final Kernel score;

    MobaKernels(KernelModule module, DType dtype, int headDim) {
        this.module = module;
        this.headDim = headDim;
        String suffix = dtype.label() + "_d" + headDim;
        this.chunkMean = module.function("moba_chunk_mean_" + dtype.label());
        this.gateTopk = module.function("moba_gate_topk_" + suffix);
        this.selectionSort = module.function("moba_sel_sort");
        this.selectAllPast = module.function("moba_sel_all_past");
        this.attention = module.function("moba_attn_fwd_" + suffix);
        this.routeCount = module.function("moba_route_count");
        this.routeScan = module.function("moba_route_scan");
        this.routeFill = module.function("moba_route_fill");
        this.selected = module.function("moba_attn_selected_" + suffix);
        this.ownCombine = module.function("moba_attn_own_combine_" + suffix);
        this.engine = module.engine();
        boolean wide = engine == ForwardEngine.WGMMA;
        this.wideAttention = wide ? module.function("moba_attn_fwd_h_" + suffix) : null;
        this.wideOwnCombine = wide ? module.function("moba_attn_own_combine_h_" + suffix) : null;
        this.wideSelected = wide ? module.function("moba_attn_selected_h_" + suffix) : null;
        this.wideResidentSelected = wide ? module.function("moba_attn_selected_resident_h_" + suffix) : null;
        this.wideUnion = wide ? module.function("moba_attn_union_h_" + suffix) : null;
        this.score = module.function("moba_score_" + suffix);
    }

    /**
     * Dynamic shared memory per block of every kernel, as compiled ({@link KernelGeometry}; ABI.md states the same
     * numbers). Kernels not listed use none.
     */
    static final class SharedMemory {
        private SharedMemory() {
        }

        /** Gate (GateConfig). */
        static int gate(int headDim) {
            return KernelGeometry.sharedMemory("gate", headDim);
        }

        /** moba_sel_sort: one row of the selection. */
        static int selectionSort(int selectionWidth) {
            return selectionWidth * Integer.BYTES;
        }

        /** moba_attn_fwd (FlashConfig): one q tile and two stages of k/v tiles. */
        static int attention(int headDim) {
            return KernelGeometry.sharedMemory("flash", headDim);
        }

        /** moba_attn_selected (SelectedConfig): two q tiles and two stages of k/v tiles. */
        static int selected(int headDim) {
            return KernelGeometry.sharedMemory("selected", headDim);
        }

        /** moba_attn_own_combine: as moba_attn_fwd. */
        static int ownCombine(int headDim) {
            return attention(headDim);
        }

        /** moba_attn_fwd_h / moba_attn_own_combine_h / moba_attn_union_h (HopperFwdConfig). */
        static int wideAttention(int headDim) {
            return KernelGeometry.sharedMemory("hopper_fwd", headDim);
        }

        /** moba_attn_selected_h (HopperSelectedConfig). */
        static int wideSelected(int headDim) {
            return KernelGeometry.sharedMemory("hopper_selected", headDim);
        }

        /** moba_attn_selected_resident_h (HopperResidentConfig): three query tiles and two whole chunks. */
        static int wideResidentSelected(int headDim) {
            return KernelGeometry.sharedMemory("hopper_resident", headDim);
        }

        /** moba_bwd_dq (backward step 9; BwdConfig). */
        static int backwardDq(int headDim) {
            return KernelGeometry.sharedMemory("bwd_dq", headDim);
        }

        /** moba_bwd_dq_selected (backward step 8). */
        static int backwardDqSelected(int headDim) {
            return KernelGeometry.sharedMemory("bwd_dq_selected", headDim);
        }

        /** moba_bwd_dkdv (backward step 10). */
        static int backwardDkdv(int headDim) {
            return KernelGeometry.sharedMemory("bwd_dkdv", headDim);
        }

        /** moba_bwd_dq_h (HopperDqConfig): the tile's Q and dO, two stages of K and V. */
        static int backwardWideDq(int headDim) {
            return KernelGeometry.sharedMemory("hopper_dq", headDim);
        }

        /** moba_bwd_fused_h (HopperBwdConfig, D = 128 only): the key block's K and V, three query stages, dS. */
        static int backwardFused(int headDim) {
            return KernelGeometry.sharedMemory("hopper_bwd", headDim);
        }
    }

    /**
     * Rows of one (head, chunk) bucket that one block of {@code moba_attn_selected} handles: 8 query tiles when the
     * chunk ({@code C <= 128}) stays resident in shared memory, else one tile (ABI.md section 4, step 3). The
     * backward's gathered kernel uses this too.
     */
    static int rowsPerGroup(int chunkSize) {
        return chunkSize <= 128 ? 8 * BatchPlan.TILE_ROWS : BatchPlan.TILE_ROWS;
    }

    /**
     * Smallest chunk whose gathered path (selected chunks + own chunk and merge) runs on the per-group wgmma kernel
     * ({@code moba_attn_selected_h}, chunks streamed in 128-key steps). Measured on an H100 (docs/perf.md, "Hopper
     * forward engine"): from C = 512 it beat the mma.sync kernels (C = 4096: 25.7 against 44.4 ms); C = 256 was not
     * measured and stays on mma.sync.
     */
    static final int MIN_WIDE_GATHERED_CHUNK = 512;

    /**
     * Largest chunk the persistent wgmma gathered kernel ({@code moba_attn_selected_resident_h}) keeps resident: one
     * key step of the engine. At C = 128 the per-group kernel lost to mma.sync (a block per group, one key step per
     * tile); the persistent one loads the next group's chunk while this group's tiles run (docs/perf.md, "The gather's
     * entries read early, and a persistent gathered kernel on sm_90a").
     */
    static final int MAX_RESIDENT_CHUNK = KernelGeometry.get("hopper_fwd.block_n");

    /**
     * Rows per group of the resident kernel: a group is the unit a block looks up and loads a chunk for; the 128-row
     * tiles of its groups stream without a break, so larger groups only save lookups and chunk loads.
     */
    static final int RESIDENT_ROWS_PER_GROUP = 4 * BatchPlan.WIDE_TILE_ROWS;

    /** Whether the gathered path of a call with {@code chunkSize} runs on the wgmma kernels (and 128-row tiles). */
    boolean gatheredOnWgmma(int chunkSize) {
        return gatheredOnWgmma(engine, chunkSize);
    }

    /** {@link #gatheredOnWgmma(int)} on {@code engine}: per-group kernel from C = 512, persistent one up to C = 128. */
    static boolean gatheredOnWgmma(ForwardEngine engine, int chunkSize) {
        return engine == ForwardEngine.WGMMA
                && (chunkSize >= MIN_WIDE_GATHERED_CHUNK || chunkSize <= MAX_RESIDENT_CHUNK);
    }

    /** Whether the gathered kernel on {@code engine} for {@code chunkSize} is the persistent, chunk-resident one. */
    static boolean residentGathered(ForwardEngine engine, int chunkSize) {
        return engine == ForwardEngine.WGMMA && chunkSize <= MAX_RESIDENT_CHUNK;
    }

    /**
     * {@link #rowsPerGroup} for the forward's gathered kernel: {@link #RESIDENT_ROWS_PER_GROUP} on the resident wgmma
     * kernel, one 128-row tile on the per-group one (whose chunks, {@code C >= 512}, stream; ABI.md section 5), else
     * {@link #rowsPerGroup}.
     */
    int forwardRowsPerGroup(int chunkSize) {
        return forwardRowsPerGroup(engine, chunkSize);
    }

    static int forwardRowsPerGroup(ForwardEngine engine, int chunkSize) {
        if (residentGathered(engine, chunkSize)) {
            return RESIDENT_ROWS_PER_GROUP;
        }
        return gatheredOnWgmma(engine, chunkSize) ? BatchPlan.WIDE_TILE_ROWS : rowsPerGroup(chunkSize);
    }

    /** Whether the gate needs the {@code sel_score [T, H, W]} scratch (only multi-pass selections do). */
    static boolean needsSelectionScores(int selectionWidth) {
        return selectionWidth > GATE_SLOTS_PER_PASS;
    }

    /**
     * {@code mu [NFC, Hkv, D]} (fp32 means of each full chunk's keys), {@code muPlanes [3, NFC, Hkv, D]} and
     * {@code muUnscale [NFC, Hkv]} (the scaled means split exactly into three 16-bit planes for the gate's MMAs).
     */
    void chunkMeans(CUstream stream, Supplier<String> context, CUdeviceptr k, CUdeviceptr cuSeqlens,
                    CUdeviceptr chunkBase, int numSequences, int kvHeads, int chunkSize, int numFullChunks,
                    CUdeviceptr mu, CUdeviceptr muPlanes, CUdeviceptr muUnscale) {
        launch(chunkMean, stream, context, numFullChunks, kvHeads, CHUNK_MEAN_THREADS, 0,
                k, cuSeqlens, chunkBase, numSequences, kvHeads, headDim, chunkSize, mu, muPlanes, muUnscale);
    }

    /**
     * {@code sel [T, H, W]}: each query's top-W candidate chunks by fp32 gate score, ascending, -1 padded. Up to
     * {@value #GATE_SLOTS_PER_PASS} slots in one pass; wider selections run one pass per 16 slots (each continues
     * from the previous pass's last pick, using {@code selScores}) and a final per-row sort. The first
     * {@code numScoredTiles} of {@code tiles} are scored; the rest select every past chunk and are written directly
     * ({@link BatchPlan#numScoredGateTiles}).
     */
    void gateTopk(CUstream stream, Supplier<String> context, CUdeviceptr q, CUdeviceptr muPlanes,
                  CUdeviceptr muUnscale, CUdeviceptr cuSeqlens, CUdeviceptr chunkBase, CUdeviceptr tiles,
                  int numTiles, int numScoredTiles, CUdeviceptr sel, CUdeviceptr selScores, int selectionWidth,
                  int heads, int kvHeads, int chunkSize, int numFullChunks, int totalTokens) {
        int smem = SharedMemory.gate(headDim);
        for (int slotBegin = 0; numScoredTiles > 0 && slotBegin < selectionWidth; slotBegin += GATE_SLOTS_PER_PASS) {
            launch(gateTopk, stream, context, numScoredTiles, heads, GATE_THREADS, smem,
                    q, muPlanes, muUnscale, cuSeqlens, chunkBase, tiles, sel, selScores, selectionWidth, slotBegin,
                    heads, kvHeads, chunkSize, numFullChunks);
        }
        if (numScoredTiles < numTiles) {
            CUdeviceptr rest = tiles.withByteOffset(2L * Integer.BYTES * numScoredTiles);
            launch(selectAllPast, stream, context, numTiles - numScoredTiles, heads, GATE_THREADS, 0,
                    cuSeqlens, rest, sel, selectionWidth, heads, chunkSize);
        }
        if (needsSelectionScores(selectionWidth)) {
            launch(selectionSort, stream, context, Math.multiplyExact(totalTokens, heads), 1, SORT_THREADS,
                    SharedMemory.selectionSort(selectionWidth), sel, selectionWidth);
        }
    }

    /** The forward engine these kernels run the dense / own-chunk / combine attention on. */
    ForwardEngine engine() {
        return engine;
    }

    /**
     * Whether {@link #attention} runs on the wgmma engine for this call, and so reads the 128-row tiles: dense and
     * own-chunk-only calls do, and the union walk over selected chunks ({@code moba_attn_union_h}) where a chunk is
     * whole 128-key steps; other chunk sizes walk the union on the mma.sync kernel.
     */
    boolean attentionOnWgmma(boolean dense, int selectionWidth, int chunkSize) {
        return engine == ForwardEngine.WGMMA && (dense || selectionWidth == 0) || unionOnWgmma(chunkSize);
    }

    /** Whether the union walk over selected chunks runs on the wgmma engine: its chunks are whole 128-key steps. */
    boolean unionOnWgmma(int chunkSize) {
        return engine == ForwardEngine.WGMMA && chunkSize % BatchPlan.WIDE_TILE_ROWS == 0;
    }

    /**
     * {@code out [T, H, D]} and {@code lse [T, H]} over the own chunk's causal prefix plus the selected chunks.
     * {@code tiles} are the plan's 64-row tiles, or its 128-row tiles where {@link #attentionOnWgmma} holds.
     */
    void attention(CUstream stream, Supplier<String> context, CUdeviceptr q, CUdeviceptr k, CUdeviceptr v,
                   CUdeviceptr out, CUdeviceptr lse, CUdeviceptr cuSeqlens, CUdeviceptr sel, int selectionWidth,
                   CUdeviceptr tiles, int numTiles, int heads, int kvHeads, int chunkSize, float scale,
                   boolean dense) {
        if (!attentionOnWgmma(dense, selectionWidth, chunkSize)) {
            launch(attention, stream, context, numTiles, heads, ATTENTION_THREADS, SharedMemory.attention(headDim),
                    q, k, v, out, lse, cuSeqlens, sel, selectionWidth, tiles, numTiles, heads, kvHeads, chunkSize,
                    scale, dense ? 1 : 0);
        } else if (dense || selectionWidth == 0) {
            launch(wideAttention, stream, context, numTiles, heads, WIDE_ATTENTION_THREADS,
                    SharedMemory.wideAttention(headDim), q, k, v, out, lse, cuSeqlens, tiles, heads, kvHeads,
                    chunkSize, scale, dense ? 1 : 0);
        } else {
            launch(wideUnion, stream, context, numTiles, heads, WIDE_ATTENTION_THREADS,
                    SharedMemory.wideAttention(headDim), q, k, v, out, lse, cuSeqlens, sel, selectionWidth, tiles,
                    heads, kvHeads, chunkSize, scale);
        }
    }

    /**
     * Gathered path, steps 1-4 of ABI.md section 4: buckets the {@code entries = T*H*W} selection entries by
     * (head, global chunk). Leaves {@code bucketRow0}/{@code bucketGroup0} {@code [H*NFC + 1]} (row and group
     * prefix sums) and {@code rows [entries]} (entry indices grouped by bucket; order inside a bucket varies).
     * Rows whose own chunk is at most W selected every past chunk and are not routed: {@link #attentionOwnCombine}
     * walks their whole causal prefix.
     */
    void route(CUstream stream, Supplier<String> context, CUdeviceptr sel, CUdeviceptr cuSeqlens,
               CUdeviceptr chunkBase, int numSequences, int heads, int selectionWidth, int numFullChunks,
               int entries, int chunkSize, int rowsPerGroup, CUdeviceptr bucketCount, CUdeviceptr bucketRow0,
               CUdeviceptr bucketGroup0, CUdeviceptr bucketCursor, CUdeviceptr rows) {
        int buckets = Math.multiplyExact(heads, numFullChunks);
        check(JCudaDriver.cuMemsetD32Async(bucketCount, 0, buckets, stream),
                () -> "zeroing the bucket counts (" + buckets + ") for " + context.get());
        int entryBlocks = blocks(entries, ROUTE_THREADS);
        launch(routeCount, stream, context, entryBlocks, 1, ROUTE_THREADS, 0,
                sel, cuSeqlens, chunkBase, numSequences, heads, selectionWidth, numFullChunks, entries, chunkSize,
                bucketCount);
        launch(routeScan, stream, context, 1, 1, ROUTE_SCAN_THREADS, 0,
                bucketCount, buckets, rowsPerGroup, bucketRow0, bucketGroup0, bucketCursor);
        launch(routeFill, stream, context, entryBlocks, 1, ROUTE_THREADS, 0,
                sel, cuSeqlens, chunkBase, numSequences, heads, selectionWidth, numFullChunks, entries, chunkSize,
                bucketCursor, rows);
    }

    /**
     * Gathered path, step 5: every routed entry's attention over its selected chunk alone, written as
     * {@code partialO [T, H, W, D]} (input dtype) and {@code partialLse [T, H, W]}. The grid is an upper bound on
     * the number of groups (surplus blocks exit).
     */
    void attentionSelected(CUstream stream, Supplier<String> context, CUdeviceptr q, CUdeviceptr k, CUdeviceptr v,
                           CUdeviceptr cuSeqlens, CUdeviceptr chunkBase, int numSequences, CUdeviceptr bucketRow0,
                           CUdeviceptr bucketGroup0, CUdeviceptr rows, int rowsPerGroup, CUdeviceptr partialO,
                           CUdeviceptr partialLse, int heads, int kvHeads, int selectionWidth, int chunkSize,
                           int numFullChunks, int entries, float scale) {
        int grid = selectedGrid(entries, rowsPerGroup, heads, numFullChunks);
        if (residentGathered(engine, chunkSize)) {  // persistent: one block per SM walks the groups
            launch(wideResidentSelected, stream, context, Math.min(grid, module.multiprocessors()), 1,
                    WIDE_ATTENTION_THREADS, SharedMemory.wideResidentSelected(headDim),
                    q, k, v, cuSeqlens, chunkBase, numSequences, bucketRow0, bucketGroup0, rows, rowsPerGroup,
                    partialO, partialLse, heads, kvHeads, selectionWidth, chunkSize, numFullChunks, scale);
            return;
        }
        boolean wide = gatheredOnWgmma(chunkSize);
        launch(wide ? wideSelected : selected, stream, context, grid, 1,
                wide ? WIDE_ATTENTION_THREADS : ATTENTION_THREADS,
                wide ? SharedMemory.wideSelected(headDim) : SharedMemory.selected(headDim),
                q, k, v, cuSeqlens, chunkBase, numSequences, bucketRow0, bucketGroup0, rows, rowsPerGroup, partialO,
                partialLse, heads, kvHeads, selectionWidth, chunkSize, numFullChunks, scale);
    }

    /**
     * Gathered path, step 6: the own chunk's causal prefix merged with the selected partials into out and lse.
     * {@code tiles} are the 128-row tiles where {@link #gatheredOnWgmma} holds, else the 64-row tiles.
     */
    void attentionOwnCombine(CUstream stream, Supplier<String> context, CUdeviceptr q, CUdeviceptr k,
                             CUdeviceptr v, CUdeviceptr out, CUdeviceptr lse, CUdeviceptr cuSeqlens, CUdeviceptr sel,
                             int selectionWidth, CUdeviceptr tiles, int numTiles, int heads, int kvHeads,
                             int chunkSize, float scale, CUdeviceptr partialO, CUdeviceptr partialLse) {
        boolean wide = gatheredOnWgmma(chunkSize);
        launch(wide ? wideOwnCombine : ownCombine, stream, context, numTiles, heads,
                wide ? WIDE_ATTENTION_THREADS : ATTENTION_THREADS,
                wide ? SharedMemory.wideAttention(headDim) : SharedMemory.ownCombine(headDim),
                q, k, v, out, lse, cuSeqlens, sel, selectionWidth, tiles, heads, kvHeads, chunkSize, scale, partialO,
                partialLse);
    }

    /**
     * The score job's metrics (ABI.md, "Score metrics"): {@code sums [B, H, 5]} doubles per (sequence, head) of
     * MoBA's {@code out}/{@code lse} against dense attention's, reduced as {@code QualityMetrics.sums} does.
     */
    void scoreSums(CUstream stream, Supplier<String> context, CUdeviceptr mobaOut, CUdeviceptr mobaLse,
                   CUdeviceptr denseOut, CUdeviceptr denseLse, CUdeviceptr cuSeqlens, int numSequences, int heads,
                   CUdeviceptr sums) {
        if (numSequences > 0) {
            launch(score, stream, context, numSequences, heads, SCORE_THREADS, 0,
                    mobaOut, mobaLse, denseOut, denseLse, cuSeqlens, heads, sums);
        }
    }

    /** Blocks of {@code moba_attn_selected}: {@code ceil(entries / rowsPerGroup) + H*NFC} (ABI.md section 4). */
    static int selectedGrid(int entries, int rowsPerGroup, int heads, int numFullChunks) {
        return Math.toIntExact(((long) entries + rowsPerGroup - 1) / rowsPerGroup + (long) heads * numFullChunks);
    }

    static int blocks(int items, int threads) {
        return (int) (((long) items + threads - 1) / threads);
    }

    private void launch(Kernel kernel, CUstream stream, Supplier<String> context, int gridX, int gridY, int threads,
                        int dynamicSmem, Object... args) {
        launch(module, kernel, stream, context, gridX, gridY, threads, dynamicSmem, args);
    }

    /**
     * Launches {@code kernel} of {@code module} with {@code args} (CUdeviceptr, Integer or Float, in the kernel's
     * parameter order), first raising its dynamic shared memory limit when {@code dynamicSmem} exceeds 48 KiB.
     * Failures name the kernel, grid, shared memory and {@code context}.
     */
    static void launch(KernelModule module, Kernel kernel, CUstream stream, Supplier<String> context, int gridX,
                       int gridY, int threads, int dynamicSmem, Object... args) {
        module.allowDynamicSharedMemory(kernel, dynamicSmem);
        check(JCudaDriver.cuLaunchKernel(kernel.function, gridX, gridY, 1, threads, 1, 1, dynamicSmem, stream,
                parameters(args), null), () -> "launching " + kernel.name + " (grid " + gridX + "x" + gridY
                + ", " + dynamicSmem + " B shared) for " + context.get());
    }

    /** cuLaunchKernel wants a pointer to an array of pointers, one per kernel parameter, in order. */
    private static Pointer parameters(Object... args) {
        Pointer[] pointers = new Pointer[args.length];
        for (int i = 0; i < args.length; i++) {
            Object a = args[i];
            if (a instanceof CUdeviceptr p) {
                pointers[i] = Pointer.to(p);
            } else if (a instanceof Integer n) {
                pointers[i] = Pointer.to(new int[] {n});
            } else if (a instanceof Float f) {
                pointers[i] = Pointer.to(new float[] {f});
            } else {
                throw new IllegalArgumentException("unsupported kernel argument type " + a.getClass());
            }
        }
        return Pointer.to(pointers);
    }

    @Override
    public String toString() {
        return chunkMean.name + ", " + gateTopk.name + ", " + selectAllPast.name + ", " + selectionSort.name + ", "
                + attention.name + ", " + routeCount.name + ", " + routeScan.name + ", " + routeFill.name + ", "
                + selected.name + ", " + ownCombine.name + ", " + score.name
                + (wideAttention == null ? "" : ", " + wideAttention.name + ", " + wideOwnCombine.name + ", "
                + wideSelected.name + ", " + wideResidentSelected.name)
                + " (forward engine " + engine.label() + ")";
    }
}
