package org.moba.job.sweep;

import java.io.Serializable;
import org.moba.job.LengthMix;
import org.moba.job.Shape;

/** One configuration of the correctness sweep: a shape, a length mix and a seed. */
public record SweepConfig(Shape shape, LengthMix lengths, long seed) implements Serializable {

    public String label() {
        return shape.label() + " " + lengths + " seed " + seed;
    }

    /** The command that reruns exactly this configuration alone, into results/sweep-reproduce. */
    public String reproduceCommand(String backend, int oracleRows, int tokensPerBatch, boolean backward) {
        return "./submit.sh sweep --backend " + backend + " --dtype " + shape.dtype().label() + " --heads "
                + shape.heads() + "/" + shape.kvHeads() + " --head-dim " + shape.headDim() + " --chunk "
                + shape.chunk() + " --topk " + shape.topk() + " --mixes '" + lengths + "' --seeds " + seed
                + " --oracle-rows " + oracleRows + " --tokens-per-batch " + tokensPerBatch
                // Its own folder, replaced by each reproduction: never the sweep's outputs, never refused.
                + " --out results/sweep-reproduce --overwrite" + (backward ? " --backward" : "");
    }
}
