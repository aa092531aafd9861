package org.moba.kernels;

import java.util.concurrent.atomic.AtomicInteger;

/**
 * A backend with only a forward pass, that of {@code delegate}, counting its calls: what the interface's defaults
 * make of such a backend is what the tests beside it check.
 */
final class CountingForwards implements MobaAttention {
    private final MobaAttention delegate;
    private final AtomicInteger forwards = new AtomicInteger();

    CountingForwards(MobaAttention delegate) {
        this.delegate = delegate;
    }

    /** Forward calls so far. */
    int forwards() {
        return forwards.get();
    }

    @Override
    public String name() {
        return "counting " + delegate.name();
    }

    @Override
    public String device() {
        return delegate.device();
    }

    @Override
    public MobaOutput forward(PackedBatch batch, MobaParams params) {
        forwards.incrementAndGet();
        return delegate.forward(batch, params);
    }

    /** Leaves the delegate open: its owner closes it. */
    @Override
    public void close() {
    }
}
