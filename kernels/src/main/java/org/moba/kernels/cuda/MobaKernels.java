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
    static final int GATE_SLOTS_PER_PASS = 16;
    private static final int CHUNK_MEAN_THREADS = 256;
    private static final int GATE_THREADS = 128;
    private static final int SORT_THREADS = 128;
    private static final int ATTENTION_THREADS = 128;

    private final KernelModule module;
    private final int headDim;
    private final Kernel chunkMean;
    private final Kernel gateTopk;
    private final Kernel selectionSort;
    private final Kernel attention;

    MobaKernels(KernelModule module, DType dtype, int headDim) {
        this.module = module;
        this.headDim = headDim;
        String suffix = dtype.label() + "_d" + headDim;
        this.chunkMean = module.function("moba_chunk_mean_" + dtype.label());
        this.gateTopk = module.function("moba_gate_topk_" + suffix);
        this.selectionSort = module.function("moba_sel_sort");
        this.attention = module.function("moba_attn_fwd_" + suffix);
    }

    /** ABI.md: the gate's tiles of q and of the chunk-mean planes plus its top-k scratch. */
    static int gateSharedMemory(int headDim) {
        return Math.max(64 * headDim * 2, 64 * 4 * 17 * 8) + 3 * 32 * headDim * 2 + 128;
    }

    /** ABI.md: one q tile and four k/v stages of 64 rows. */
    static int attentionSharedMemory(int headDim) {
        return (64 + 4 * 64) * headDim * 2;
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
     * from the previous pass's last pick, using {@code selScores}) and a final per-row sort.
     */
    void gateTopk(CUstream stream, Supplier<String> context, CUdeviceptr q, CUdeviceptr muPlanes,
                  CUdeviceptr muUnscale, CUdeviceptr cuSeqlens, CUdeviceptr chunkBase, CUdeviceptr tiles,
                  int numTiles, CUdeviceptr sel, CUdeviceptr selScores, int selectionWidth, int heads, int kvHeads,
                  int chunkSize, int numFullChunks, int totalTokens) {
        int smem = gateSharedMemory(headDim);
        for (int slotBegin = 0; slotBegin < selectionWidth; slotBegin += GATE_SLOTS_PER_PASS) {
            launch(gateTopk, stream, context, numTiles, heads, GATE_THREADS, smem,
                    q, muPlanes, muUnscale, cuSeqlens, chunkBase, tiles, sel, selScores, selectionWidth, slotBegin,
                    heads, kvHeads, chunkSize, numFullChunks);
        }
        if (needsSelectionScores(selectionWidth)) {
            launch(selectionSort, stream, context, Math.multiplyExact(totalTokens, heads), 1, SORT_THREADS,
                    selectionWidth * Integer.BYTES, sel, selectionWidth);
        }
    }

    /** {@code out [T, H, D]} and {@code lse [T, H]} over the own chunk's causal prefix plus the selected chunks. */
    void attention(CUstream stream, Supplier<String> context, CUdeviceptr q, CUdeviceptr k, CUdeviceptr v,
                   CUdeviceptr out, CUdeviceptr lse, CUdeviceptr cuSeqlens, CUdeviceptr sel, int selectionWidth,
                   CUdeviceptr tiles, int numTiles, int heads, int kvHeads, int chunkSize, float scale,
                   boolean dense) {
        launch(attention, stream, context, numTiles, heads, ATTENTION_THREADS, attentionSharedMemory(headDim),
                q, k, v, out, lse, cuSeqlens, sel, selectionWidth, tiles, numTiles, heads, kvHeads, chunkSize, scale,
                dense ? 1 : 0);
    }

    private void launch(Kernel kernel, CUstream stream, Supplier<String> context, int gridX, int gridY, int threads,
                        int dynamicSmem, Object... args) {
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
        return chunkMean.name + ", " + gateTopk.name + ", " + selectionSort.name + ", " + attention.name;
    }
}
