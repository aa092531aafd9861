package org.moba.job.bench;

import java.io.Serializable;
import org.moba.job.LengthMix;
import org.moba.job.Shape;

/** One point of the benchmark grid: a shape, its sequence lengths and the token budget of a packed batch. */
public record BenchShape(Shape shape, LengthMix lengths, int tokensPerBatch) implements Serializable {

    /** A compact label for tables: {@code bf16 H16/16 D128 C128 k8 2x65536}. */
    public String label() {
        return shape.label() + " " + lengths;
    }
}
