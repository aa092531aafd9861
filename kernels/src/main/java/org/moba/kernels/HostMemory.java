package org.moba.kernels;

import java.nio.ByteBuffer;

/**
 * Page-locking of the direct host buffers a backend's inputs arrive in, so that a backend with a device copies
 * straight from them instead of through a staging buffer of its own. The buffers stay Java's: a backend only locks
 * and unlocks their pages, so nothing it releases (a device context) can free memory a caller still holds. Whoever
 * pools such buffers {@link #pin}s one before filling it and {@link #unpin}s it before dropping it to the garbage
 * collector. Thread-safe.
 */
public interface HostMemory {
    /** Nothing to lock: the backend reads host memory where it lies (the CPU backend). */
    HostMemory PAGEABLE = new HostMemory() {
        @Override
        public boolean pin(ByteBuffer buffer) {
            return false;
        }

        @Override
        public void unpin(ByteBuffer buffer) {
        }

        @Override
        public long pinnedBytes() {
            return 0;
        }
    };

    /**
     * Page-locks the whole of {@code buffer} (address to capacity) when possible; a buffer already locked stays so.
     * Never fails the caller: a buffer that cannot be locked (not direct, over the backend's cap, not permitted)
     * stays pageable and is copied the slower way.
     *
     * @return whether the buffer is locked now; if so, {@link #unpin} it before dropping it
     */
    boolean pin(ByteBuffer buffer);

    /** Unlocks a buffer {@link #pin} locked; nothing when it is not locked. No transfer may still read from it. */
    void unpin(ByteBuffer buffer);

    /** Bytes of host memory locked through this service now. */
    long pinnedBytes();
}
