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
 * The three MoBA kernels of one (dtype, head dim), launched exactly as kernels/src/main/cuda/ABI.md specifies:
 * the only place that knows the kernels' names, parameter lists, grids and shared memory.
 */
final class MobaKernels {
    private static final int ATTENTION_THREADS = 128;
    private static final int GATE_THREADS = 128;
    private static final int CHUNK_MEAN_THREADS = 128;

    private final KernelModule module;
    private final Kernel chunkMean;
    private final Kernel gateTopk;
    private final Kernel attention;

    MobaKernels(KernelModule module, DType dtype, int headDim) {
        this.module = module;
        String suffix = dtype.label() + "_d" + headDim;
        this.chunkMean = module.function("moba_chunk_mean_" + suffix);
        this.gateTopk = module.function("moba_gate_topk_" + suffix);
        this.attention = module.function("moba_attn_fwd_" + suffix);
    }

    @Override
    public String toString() {
        return chunkMean.name + ", " + gateTopk.name + ", " + attention.name;
    }

    /** {@code mu [numFullChunks, Hkv, D]} = fp32 mean of each full chunk's keys. */
    void chunkMeans(CUstream stream, Supplier<String> context, CUdeviceptr k, CUdeviceptr mu, CUdeviceptr cuSeqlens,
                    CUdeviceptr chunkBase, int numSequences, int numFullChunks, int kvHeads, int chunkSize) {
        launch(chunkMean, stream, context, numFullChunks, kvHeads, CHUNK_MEAN_THREADS, 0,
                k, mu, cuSeqlens, chunkBase, numSequences, kvHeads, chunkSize);
    }

    /** {@code sel [T, H, W]}: each query's top-W candidate chunks by fp32 gate score, ascending, -1 padded. */
    void gateTopk(CUstream stream, Supplier<String> context, CUdeviceptr q, CUdeviceptr mu, CUdeviceptr sel,
                  CUdeviceptr cuSeqlens, CUdeviceptr chunkBase, CUdeviceptr tiles, int numTiles, int heads,
                  int kvHeads, int chunkSize, int selectionWidth) {
        launch(gateTopk, stream, context, numTiles, heads, GATE_THREADS, 0,
                q, mu, sel, cuSeqlens, chunkBase, tiles, numTiles, heads, kvHeads, chunkSize, selectionWidth);
    }

    /** {@code out [T, H, D]} and {@code lse [T, H]} over the own chunk's causal prefix plus the selected chunks. */
    void attention(CUstream stream, Supplier<String> context, CUdeviceptr q, CUdeviceptr k, CUdeviceptr v,
                   CUdeviceptr out, CUdeviceptr lse, CUdeviceptr cuSeqlens, CUdeviceptr sel, int selectionWidth,
                   CUdeviceptr tiles, int numTiles, int heads, int kvHeads, int chunkSize, float scale,
                   boolean dense) {
        launch(attention, stream, context, numTiles, heads, ATTENTION_THREADS, 0,
                q, k, v, out, lse, cuSeqlens, sel, selectionWidth, tiles, numTiles, heads, kvHeads, chunkSize, scale,
                dense ? 1 : 0);
    }

    private void launch(Kernel kernel, CUstream stream, Supplier<String> context, int gridX, int gridY, int threads,
                        int dynamicSmem, Object... args) {
        module.allowDynamicSharedMemory(kernel, dynamicSmem);
        check(JCudaDriver.cuLaunchKernel(kernel.function, gridX, gridY, 1, threads, 1, 1, dynamicSmem, stream,
                parameters(args), null), () -> "launching " + kernel.name + " (grid " + gridX + "x" + gridY
                + ") for " + context.get());
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
}
