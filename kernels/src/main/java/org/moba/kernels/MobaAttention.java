package org.moba.kernels;

/**
 * A MoBA backend: computes exactly the function of MOBA.md on a packed batch.
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

    @Override
    void close();
}
