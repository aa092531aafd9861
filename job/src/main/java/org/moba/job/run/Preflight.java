package org.moba.job.run;

import java.util.Collection;
import org.moba.kernels.BackendName;
import org.moba.job.Shape;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.MobaParams;
import org.moba.kernels.cuda.CudaInputRules;

/**
 * Option checks every job makes on the driver before Spark runs anything: numbers in range, and the CUDA backend's
 * limits against the requested shapes when CUDA is the requested backend (with {@code auto} the backend is known
 * only on the executors, where every batch is checked again).
 */
public final class Preflight {
    private Preflight() {
    }

    /** {@code value >= min}, else a usage error naming the option. */
    public static void atLeast(String option, long value, long min) {
        if (value < min) {
            throw JobException.usage(option + " must be at least " + min, option, Long.toString(value),
                    "give a value >= " + min);
        }
    }

    /** Every shape is one the CUDA kernels run (head dim, chunk multiple), when CUDA is the requested backend. */
    public static void cudaShapes(BackendName backend, Collection<Shape> shapes) {
        if (backend != BackendName.CUDA) {
            return;
        }
        for (Shape s : shapes) {
            cuda(() -> CudaInputRules.checkShape(s.headDim(), s.params()), "--chunk/--head-dim", s.label());
        }
    }

    /** The chunk size is one the CUDA kernels run, when CUDA is the requested backend (score: D is in the data). */
    public static void cudaChunk(BackendName backend, MobaParams params) {
        if (backend == BackendName.CUDA) {
            cuda(() -> CudaInputRules.checkChunk(params), "--chunk", Integer.toString(params.chunkSize()));
        }
    }

    /** The largest batch of a shape keeps its selection within the kernels' 32-bit bound, when CUDA is requested. */
    public static void cudaSelection(BackendName backend, Shape shape, long batchTokens, int maxLength, String label) {
        if (backend == BackendName.CUDA) {
            cuda(() -> CudaInputRules.checkSelection(batchTokens, shape.heads(), maxLength, shape.params(), label),
                    "--tokens-per-batch", Long.toString(batchTokens));
        }
    }

    private static void cuda(Runnable check, String where, String value) {
        try {
            check.run();
        } catch (MobaInputException e) {
            throw JobException.usage("the CUDA backend cannot run this: " + e.getMessage(), where, value,
                    "change the option (chunk sizes: multiples of 64; head dims: 64, 128), or use --backend cpu");
        }
    }
}
