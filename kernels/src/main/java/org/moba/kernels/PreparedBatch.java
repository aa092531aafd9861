package org.moba.kernels;

/**
 * A batch made ready for repeated forward passes with one set of parameters ({@link MobaAttention#prepare}), so
 * that a caller can time the passes apart from moving the batch: a backend with a device uploads the batch once and
 * {@link #run()} runs only its kernels; a backend without one runs {@link MobaAttention#forward} each time. Used by
 * one thread at a time; {@link #close()} releases what it holds (device memory, a stream).
 */
public interface PreparedBatch extends AutoCloseable {

    /**
     * Runs the forward pass once and waits for it. Returns its phases in ms: on a device the kernels only
     * ({@code chunk_means}, {@code gate_topk}, {@code attention}), else every phase of the call.
     */
    PhaseTimings run();

    /**
     * The output of the latest {@link #run()}, whose timings include the batch's copies to and from the device
     * ({@code h2d}, {@code d2h}) where it has a device: the upload made once, and this download.
     *
     * @throws IllegalStateException before the first run
     */
    MobaOutput download();

    @Override
    void close();
}
