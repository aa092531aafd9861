package org.moba.job.bench;

import java.io.Serializable;
import org.moba.job.LengthMix;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaParams;

/** One point of the benchmark grid. */
public record BenchShape(DType dtype, int heads, int kvHeads, int headDim, int chunk, int topk, LengthMix lengths,
                         int tokensPerBatch) implements Serializable {

    public BatchLayout layout() {
        return new BatchLayout(dtype, heads, kvHeads, headDim);
    }

    public MobaParams params() {
        return MobaParams.of(chunk, topk);
    }

    /** A compact label for tables: {@code bf16 H16/16 D128 C128 k8 2x65536}. */
    public String label() {
        return dtype.label() + " H" + heads + "/" + kvHeads + " D" + headDim + " C" + chunk + " k" + topk + " "
                + lengths;
    }
}
