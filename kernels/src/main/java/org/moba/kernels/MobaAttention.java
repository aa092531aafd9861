package org.moba.kernels;

/**
 * A MoBA backend: computes exactly the function of docs/semantics.md on a packed batch.
 * Implementations are thread-safe; {@link #close()} releases what the backend owns (device memory, threads).
 */
public interface MobaAttention extends AutoCloseable {

    /** Short name: {@code cpu}, {@code cuda}. */
    String name();

    /** Where it runs, for logs and reports (e.g. the CPU thread count or the GPU name and ordinal). */
    String device();

    /**
     * Forward pass. Validates {@code params} against the batch (and backend limits) before doing any work.
     *
     * @throws MobaInputException when the batch or parameters are not supported
     */
    MobaOutput forward(PackedBatch batch, MobaParams params);

    /**
     * MoBA against dense causal attention ({@link DenseComparison#denseParams}) on one batch: per sequence and query
     * head, recall, cosine similarity and relative error of MoBA's output ({@link QualityMetrics}). By default two
     * {@link #forward} calls and the metrics on the host; a backend with a device may keep both passes and the
     * metrics there and copy back only the metrics (and MoBA's output when {@code keepOutputs}).
     *
     * @param keepOutputs whether to return MoBA's output as well (else {@link DenseComparison#moba()} is null)
     * @throws MobaInputException when the batch or parameters are not supported
     */
    default DenseComparison compareWithDense(PackedBatch batch, MobaParams params, boolean keepOutputs) {
        return DenseComparison.withTwoForwards(this, batch, params, keepOutputs);
    }

    /**
     * The batch made ready for repeated forward passes with {@code params}, for timing them without the cost of
     * moving the batch ({@code bench}). By default each {@link PreparedBatch#run()} is a {@link #forward} call; a
     * backend with a device uploads the batch here once and runs only the kernels per run. Close it when done.
     *
     * @throws MobaInputException when the batch or parameters are not supported (checked here or at the first run)
     */
    default PreparedBatch prepare(PackedBatch batch, MobaParams params) {
        return new ForwardPerRun(this, batch, params);
    }

    /**
     * Where callers that pool direct host buffers for this backend's batches ({@link PackedBatch#ofBuffers}) get
     * them page-locked, so that uploads run straight from them. By default nothing is locked
     * ({@link HostMemory#PAGEABLE}): the backend reads host memory where it lies.
     */
    default HostMemory hostMemory() {
        return HostMemory.PAGEABLE;
    }

    /**
     * The host-to-device bandwidth this backend's device reaches, in GB/s (1e9 bytes per second): the median of a
     * few large transfers from page-locked host memory, timed on the device. The physical floor under any upload of
     * the same bytes. NaN where there is no host-to-device link (the CPU backend).
     */
    default double measureHostToDeviceGBps() {
        return Double.NaN;
    }

    @Override
    void close();
}
