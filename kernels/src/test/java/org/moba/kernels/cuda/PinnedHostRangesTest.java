package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

import jcuda.driver.CUresult;

import org.junit.jupiter.api.Test;

/**
 * The bookkeeping of {@link PinnedHostRanges} (ranges, cap, failures, a device's locks ending with it), with the
 * driver's page locking replaced by a recorder: it runs without a GPU. PinnedUploadTest covers the driver's.
 */
class PinnedHostRangesTest {
    /** Records what would be locked and unlocked, answering {@code answer} to locks. */
    private static final class Recorder implements PinnedHostRanges.PageLocker {
        final List<ByteBuffer> locked = new ArrayList<>();
        final List<ByteBuffer> unlocked = new ArrayList<>();
        int answer = CUresult.CUDA_SUCCESS;

        @Override
        public int lock(CudaDevice device, ByteBuffer buffer, long bytes) {
            assertEquals(buffer.capacity(), bytes, "a buffer is locked whole");
            locked.add(buffer);
            return answer;
        }

        @Override
        public int unlock(CudaDevice device, ByteBuffer buffer) {
            unlocked.add(buffer);
            return CUresult.CUDA_SUCCESS;
        }
    }

    @Test
    void addressesOfSlicesAreOffsetsFromTheirBuffer() {
        assertNull(DirectBufferAddress.unavailableReason());
        ByteBuffer root = ByteBuffer.allocateDirect(1 << 16);
        long base = DirectBufferAddress.of(root);
        assertTrue(base != 0);
        assertEquals(base + 4096, DirectBufferAddress.of(root.slice(4096, 100)));
        assertEquals(base + 4096, DirectBufferAddress.of(root.slice(4096, 100).asReadOnlyBuffer()));
        assertEquals(base, DirectBufferAddress.of(root.duplicate().position(10)), "element 0, not the position");
        assertEquals(0, DirectBufferAddress.of(ByteBuffer.allocate(16)), "a heap buffer has no address");
    }

    @Test
    void coversExactlyTheLockedBytes() {
        Recorder driver = new Recorder();
        PinnedHostRanges ranges = new PinnedHostRanges(1L << 30, driver);
        ByteBuffer a = ByteBuffer.allocateDirect(1 << 20);
        ByteBuffer other = ByteBuffer.allocateDirect(1 << 20);
        assertTrue(ranges.pin(a, null));
        assertTrue(ranges.pin(a, null), "already locked");
        assertEquals(1, driver.locked.size(), "locked once");
        assertEquals(a.capacity(), ranges.lockedBytes());
        assertTrue(ranges.covers(a));
        assertTrue(ranges.covers(a.slice(1000, 5000)));
        assertTrue(ranges.covers(a.duplicate().position(a.capacity() - 1)));
        assertTrue(ranges.covers(a.slice(0, 100).position(100)), "an empty range inside");
        assertFalse(ranges.covers(other), "another buffer");
        assertFalse(ranges.covers(ByteBuffer.allocate(10)), "a heap buffer");
        ranges.unpin(other);
        assertTrue(driver.unlocked.isEmpty(), "unpinning a buffer never locked does nothing");
        ranges.unpin(a);
        assertEquals(List.of(a), driver.unlocked);
        assertEquals(0, ranges.lockedBytes());
        assertFalse(ranges.covers(a.slice(1000, 5000)));
    }

    @Test
    void aSliceOfALockedBufferIsNotLockedAgain() {
        Recorder driver = new Recorder();
        PinnedHostRanges ranges = new PinnedHostRanges(1L << 30, driver);
        ByteBuffer a = ByteBuffer.allocateDirect(1 << 20);
        assertTrue(ranges.pin(a, null));
        assertFalse(ranges.pin(a.slice(4096, 4096), null), "overlaps a locked range");
        assertEquals(1, driver.locked.size());
        ranges.unpin(a.slice(0, 10));
        assertEquals(a.capacity(), ranges.lockedBytes(), "only the buffer that was locked unlocks its range");
    }

    @Test
    void buffersBeyondTheCapStayPageable() {
        Recorder driver = new Recorder();
        PinnedHostRanges ranges = new PinnedHostRanges(3L << 20, driver);
        ByteBuffer a = ByteBuffer.allocateDirect(2 << 20);
        ByteBuffer b = ByteBuffer.allocateDirect(2 << 20);
        assertTrue(ranges.pin(a, null));
        assertFalse(ranges.pin(b, null), "4 MiB would pass the 3 MiB cap");
        assertFalse(ranges.covers(b));
        ranges.unpin(a);
        assertTrue(ranges.pin(b, null), "fits once the first is unlocked");
        assertEquals(2 << 20, ranges.lockedBytes());
    }

    @Test
    void aFailedLockTurnsLockingOffWithoutFailingTheCaller() {
        Recorder driver = new Recorder();
        PinnedHostRanges ranges = new PinnedHostRanges(1L << 30, driver);
        driver.answer = CUresult.CUDA_ERROR_NOT_PERMITTED;
        ByteBuffer a = ByteBuffer.allocateDirect(1 << 20);
        assertFalse(ranges.pin(a, null));
        assertFalse(ranges.covers(a));
        driver.answer = CUresult.CUDA_SUCCESS;
        assertFalse(ranges.pin(ByteBuffer.allocateDirect(1 << 20), null), "off for the process after a failure");
        assertEquals(1, driver.locked.size(), "no second attempt");
        assertEquals(0, ranges.lockedBytes());
    }

    @Test
    void forgettingADeviceUnlocksOnlyItsBuffers() {
        Recorder driver = new Recorder();
        PinnedHostRanges ranges = new PinnedHostRanges(1L << 30, driver);
        ByteBuffer mine = ByteBuffer.allocateDirect(1 << 20);
        assertTrue(ranges.pin(mine, null));
        ranges.forget(null);
        assertEquals(List.of(mine), driver.unlocked);
        assertEquals(0, ranges.lockedBytes());
        assertFalse(ranges.covers(mine));
        ranges.unpin(mine);
        assertEquals(1, driver.unlocked.size(), "already unlocked when its device closed");
    }
}
