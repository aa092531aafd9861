package org.moba.job.score;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.moba.kernels.HostMemory;

class HostBuffersTest {
    private static final int MIB = 1 << 20;

    /** A locking service that locks every buffer and records what it is asked, as a backend's would be. */
    private static final class RecordingMemory implements HostMemory {
        final Set<ByteBuffer> pinned = Collections.newSetFromMap(new IdentityHashMap<>());
        final List<ByteBuffer> unpinned = new ArrayList<>();

        @Override
        public boolean pin(ByteBuffer buffer) {
            pinned.add(buffer);
            return true;
        }

        @Override
        public void unpin(ByteBuffer buffer) {
            assertTrue(pinned.remove(buffer), "unpinned a buffer that was not pinned");
            unpinned.add(buffer);
        }

        @Override
        public long pinnedBytes() {
            return pinned.stream().mapToLong(ByteBuffer::capacity).sum();
        }
    }

    @Test
    void aLockedBufferIsUnlockedBeforeItIsDropped() {
        HostBuffers pool = new HostBuffers(16L * MIB);
        RecordingMemory memory = new RecordingMemory();
        ByteBuffer a = pool.take(8 * MIB, memory);
        ByteBuffer b = pool.take(8 * MIB, memory);
        ByteBuffer c = pool.take(8 * MIB, memory);
        assertEquals(24L * MIB, memory.pinnedBytes(), "each buffer locked when taken");
        pool.give(a);
        pool.give(b);
        assertTrue(memory.unpinned.isEmpty(), "kept buffers stay locked");
        pool.give(c); // 24 MiB idle > 16 MiB kept: the oldest goes
        assertEquals(List.of(a), memory.unpinned);
        assertSame(b, pool.take(8 * MIB, memory), "a kept buffer is reused");
        assertEquals(16L * MIB, memory.pinnedBytes());
    }

    @Test
    void aPageableBufferIsDroppedWithoutUnlocking() {
        HostBuffers pool = new HostBuffers(0);
        RecordingMemory memory = new RecordingMemory();
        pool.give(pool.take(MIB));
        ByteBuffer locked = pool.take(MIB, memory);
        pool.give(locked);
        assertEquals(List.of(locked), memory.unpinned);
    }

    /**
     * Two idle buffers with equal bytes (ByteBuffer.equals compares contents): taking the better-fitting one must
     * take that one, so that it is never handed out twice.
     */
    @Test
    void buffersOfEqualContentsAreNeverHandedOutTwice() {
        HostBuffers pool = new HostBuffers(1L << 30);
        ByteBuffer large = pool.take(16 * MIB);
        pool.give(large);
        ByteBuffer largeAgain = pool.take(8 * MIB); // the only idle one: limit 8 MiB now
        assertSame(large, largeAgain);
        ByteBuffer small = pool.take(8 * MIB);
        pool.give(largeAgain);
        pool.give(small); // idle: [large, small], both 8 MiB of zeros from position to limit: equal
        ByteBuffer first = pool.take(8 * MIB);
        ByteBuffer second = pool.take(8 * MIB);
        assertSame(small, first, "the smallest that fits");
        assertNotSame(first, second);
    }
}
