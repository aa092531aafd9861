package org.moba.kernels;

import java.util.List;

/**
 * What {@link MobaAttention#compareWithDense} returns for one batch: MoBA's own output when it was kept, the quality
 * of MoBA against dense causal attention per sequence and head, and where the time went.
 *
 * @param moba    MoBA's forward output, exactly what {@link MobaAttention#forward} returns for the batch (its
 *                timings are the MoBA pass's), or null when the caller did not ask to keep it
 * @param metrics one entry per sequence of the batch, in batch order, each with one value per query head
 * @param timings milliseconds per phase: {@value #H2D} (host to device copies), {@value #MOBA} and {@value #DENSE}
 *                (the two forward passes' kernels), {@value #METRICS} (the quality metrics) and {@value #D2H}
 *                (device to host copies); the copy phases are zero on a backend without a device. On a device
 *                the two passes may run at the same time, so the phases can add up to more than the call took.
 */
public record DenseComparison(MobaOutput moba, List<QualityMetrics> metrics, PhaseTimings timings) {
    public static final String H2D = "h2d";
    public static final String MOBA = "moba";
    public static final String DENSE = "dense";
    public static final String METRICS = "metrics";
    public static final String D2H = "d2h";

    /** The dense causal baseline of {@code params}: every causal key, same chunk (tile) size and softmax scale. */
    public static MobaParams denseParams(MobaParams params) {
        return MobaParams.denseCausal(params.chunkSize()).withSoftmaxScale(params.softmaxScale());
    }

    /**
     * The backend-independent way: a MoBA and a dense {@link MobaAttention#forward} of the batch, then the metrics on
     * the host ({@link QualityMetrics}). What {@link MobaAttention#compareWithDense} does unless a backend does better.
     */
    static DenseComparison withTwoForwards(MobaAttention backend, PackedBatch batch, MobaParams params,
                                           boolean keepOutputs) {
        MobaOutput moba = backend.forward(batch, params);
        MobaOutput dense = backend.forward(batch, denseParams(params));
        long start = System.nanoTime();
        List<QualityMetrics> metrics = QualityMetrics.of(batch, moba.out(), moba.lse(), dense.out(), dense.lse());
        double metricsMs = (System.nanoTime() - start) / 1e6;
        PhaseTimings timings = new PhaseTimings()
                .put(H2D, moba.timings().get(H2D) + dense.timings().get(H2D))
                .put(MOBA, kernelMs(moba.timings()))
                .put(DENSE, kernelMs(dense.timings()))
                .put(METRICS, metricsMs)
                .put(D2H, moba.timings().get(D2H) + dense.timings().get(D2H));
        return new DenseComparison(keepOutputs ? moba : null, metrics, timings);
    }

    /** A forward's time other than its copies. */
    private static double kernelMs(PhaseTimings t) {
        return t.total() - t.get(H2D) - t.get(D2H);
    }
}
