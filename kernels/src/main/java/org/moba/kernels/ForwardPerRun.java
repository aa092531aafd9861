package org.moba.kernels;

/**
 * The {@link PreparedBatch} of a backend without a device: nothing stays anywhere between passes, so every
 * {@link #run()} is a whole {@link MobaAttention#forward}, and {@link #download()} hands back its latest output.
 */
final class ForwardPerRun implements PreparedBatch {
    private final MobaAttention backend;
    private final PackedBatch batch;
    private final MobaParams params;
    private MobaOutput latest;

    ForwardPerRun(MobaAttention backend, PackedBatch batch, MobaParams params) {
        this.backend = backend;
        this.batch = batch;
        this.params = params;
    }

    @Override
    public PhaseTimings run() {
        latest = backend.forward(batch, params);
        return latest.timings();
    }

    @Override
    public MobaOutput download() {
        if (latest == null) {
            throw new IllegalStateException("download() before run() on " + batch + ", " + params);
        }
        return latest;
    }

    @Override
    public void close() {
        latest = null;
    }
}
