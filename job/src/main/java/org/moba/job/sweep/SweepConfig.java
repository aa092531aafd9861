package org.moba.job.sweep;

import java.io.Serializable;
import org.moba.job.LengthMix;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaParams;

/** One configuration of the correctness sweep: a shape, a length mix and a seed. */
public record SweepConfig(DType dtype, int heads, int kvHeads, int headDim, int chunk, int topk, LengthMix lengths,
                          long seed) implements Serializable {

    public BatchLayout layout() {
        return new BatchLayout(dtype, heads, kvHeads, headDim);
    }

    public MobaParams params() {
        return MobaParams.of(chunk, topk);
    }

    public String label() {
        return dtype.label() + " H" + heads + "/" + kvHeads + " D" + headDim + " C" + chunk + " k" + topk + " "
                + lengths + " seed " + seed;
    }

    /** The command that reruns exactly this configuration alone. */
    public String reproduceCommand(String backend, int oracleRows, int tokensPerBatch) {
        return "./submit.sh sweep --backend " + backend + " --dtype " + dtype.label() + " --heads " + heads + "/"
                + kvHeads + " --head-dim " + headDim + " --chunk " + chunk + " --topk " + topk + " --mixes '"
                + lengths + "' --seeds " + seed + " --oracle-rows " + oracleRows + " --tokens-per-batch "
                + tokensPerBatch;
    }
}
