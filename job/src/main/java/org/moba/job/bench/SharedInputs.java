package org.moba.job.bench;

import java.lang.ref.SoftReference;
import java.util.List;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.bench.BenchInputs;

/**
 * The inputs of the shape the bench slots of this JVM (an executor, or the driver in local mode) are measuring:
 * built by the first slot to reach the shape ({@link BenchInputs#batches}) and shared with the others, which run the
 * same grid in the same order and so arrive at the same shape about together; one copy of a 2 x 64K-token batch
 * (1.5 GiB at H16, D128) per executor is enough. Only the latest shape's inputs are kept, behind a soft reference,
 * so that they go when memory runs short.
 */
final class SharedInputs {
    /** What the inputs of a shape are a function of. */
    private record Key(BenchShape shape, long seed) {
    }

    private static Key latestKey;
    private static SoftReference<List<PackedBatch>> latest = new SoftReference<>(null);

    private SharedInputs() {
    }

    /**
     * The packed batches of {@code shape} for {@code seed}: its lengths in batches of at most its token budget, with
     * random normal q, k and v. A slot asking for the shape another slot is building waits for it.
     */
    static synchronized List<PackedBatch> of(BenchShape shape, long seed) {
        Key key = new Key(shape, seed);
        List<PackedBatch> batches = key.equals(latestKey) ? latest.get() : null;
        if (batches == null) {
            latest.clear(); // the previous shape's inputs may go while these are built
            batches = BenchInputs.batches(seed, shape.shape().layout(), shape.lengths().lengths(seed,
                    shape.shape().chunk()), shape.tokensPerBatch());
            latestKey = key;
            latest = new SoftReference<>(batches);
        }
        return batches;
    }
}
