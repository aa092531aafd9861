package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.List;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.DenseComparison;
import org.moba.kernels.HostMemory;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;

/**
 * Uploads straight from page-locked Java buffers ({@link PinnedHostRanges}, {@link CudaMobaAttention#hostMemory()})
 * against the pinned-slab path, the lock accounting, and the host-to-device timing. Needs a GPU; skipped, with the
 * reason, without one.
 */
@Tag("gpu")
class PinnedUploadTest {
    private static CudaMobaAttention cuda;
    @RegisterExtension
    static final CudaTestSupport gpu = new CudaTestSupport(c -> cuda = c);

    /** Offsets of q, k and v in their one host buffer: not at its start, and not 256-byte aligned. */
    private static final int GAP = 1000;

    /**
     * The same batch from arrays, from pageable direct buffers (slab path) and from a locked buffer (straight
     * copies): forward and dense comparison give the same bits.
     */
    @Test
    void uploadsFromLockedBuffersGiveTheSameBitsAsTheSlabPath() {
        gpu.requireDevice();
        BatchLayout layout = new BatchLayout(DType.BF16, 8, 2, 128);
        PackedBatch arrays = CudaTestSupport.randomBatch(CudaTestSupport.rng("pinned upload"), layout,
                1500, 700, 2049, 64);
        MobaParams params = MobaParams.of(128, 3);
        ByteBuffer pageable = hostCopy(arrays);
        ByteBuffer locked = hostCopy(arrays);
        HostMemory memory = cuda.hostMemory();
        assertTrue(memory.pin(locked), "a direct buffer of a few MB can be locked");
        try {
            PackedBatch slab = inBuffers(arrays, pageable);
            PackedBatch straight = inBuffers(arrays, locked);
            assertFalse(PinnedHostRanges.PROCESS.covers(slab.qBytes()), "pageable q goes through the slabs");
            for (ByteBuffer b : List.of(straight.qBytes(), straight.kBytes(), straight.vBytes())) {
                assertTrue(PinnedHostRanges.PROCESS.covers(b), "locked q, k, v are copied straight");
            }
            MobaOutput expected = cuda.forward(arrays, params);
            for (PackedBatch b : List.of(slab, straight)) {
                MobaOutput got = cuda.forward(b, params);
                assertArrayEquals(expected.out(), got.out(), "out (seed " + CudaTestSupport.SEED + ")");
                assertArrayEquals(expected.lse(), got.lse(), "lse (seed " + CudaTestSupport.SEED + ")");
                assertArrayEquals(expected.selected(), got.selected(), "selection (seed " + CudaTestSupport.SEED + ")");
            }
            DenseComparison viaSlab = cuda.compareWithDense(slab, params, true);
            DenseComparison viaLock = cuda.compareWithDense(straight, params, true);
            assertArrayEquals(viaSlab.moba().out(), viaLock.moba().out());
            for (int s = 0; s < arrays.numSequences(); s++) {
                assertArrayEquals(viaSlab.metrics().get(s).recall(), viaLock.metrics().get(s).recall());
                assertArrayEquals(viaSlab.metrics().get(s).cosine(), viaLock.metrics().get(s).cosine());
                assertArrayEquals(viaSlab.metrics().get(s).relError(), viaLock.metrics().get(s).relError());
            }
        } finally {
            memory.unpin(locked);
        }
    }

    @Test
    void lockingCountsBytesOnceAndUnlockingGivesThemBack() {
        gpu.requireDevice();
        HostMemory memory = cuda.hostMemory();
        long before = memory.pinnedBytes();
        ByteBuffer a = ByteBuffer.allocateDirect(8 << 20);
        ByteBuffer b = ByteBuffer.allocateDirect(3 << 20);
        assertTrue(memory.pin(a));
        assertTrue(memory.pin(a), "locking a locked buffer again is a no-op that says it is locked");
        assertTrue(memory.pin(b));
        assertEquals(before + a.capacity() + b.capacity(), memory.pinnedBytes());
        assertTrue(PinnedHostRanges.PROCESS.covers(a.slice(4096, 1 << 20)), "a slice inside a locked buffer");
        memory.unpin(a);
        assertEquals(before + b.capacity(), memory.pinnedBytes());
        assertFalse(PinnedHostRanges.PROCESS.covers(a), "unlocked");
        memory.unpin(a);
        assertEquals(before + b.capacity(), memory.pinnedBytes(), "unlocking twice changes nothing");
        memory.unpin(b);
        assertEquals(before, memory.pinnedBytes());
        assertFalse(memory.pin(ByteBuffer.allocate(1 << 20)), "a heap buffer cannot be locked");
    }

    @Test
    void hostToDeviceRateIsPositiveAndFinite() {
        gpu.requireDevice();
        double gbps = cuda.measureHostToDeviceGBps();
        System.out.printf("host-to-device on %s: %.1f GB/s%n", cuda.device(), gbps);
        assertTrue(gbps > 0 && Double.isFinite(gbps), "rate " + gbps);
    }

    /** q, k and v of {@code batch} one after another in one new direct buffer, each {@value #GAP} bytes after a gap. */
    private static ByteBuffer hostCopy(PackedBatch batch) {
        long bytes = 2L * (batch.qElements() + 2 * batch.kvElements()) + 3L * GAP;
        ByteBuffer root = ByteBuffer.allocateDirect(Math.toIntExact(bytes)).order(ByteOrder.LITTLE_ENDIAN);
        int at = 0;
        for (short[] t : List.of(batch.q(), batch.k(), batch.v())) {
            at += GAP;
            root.duplicate().order(ByteOrder.LITTLE_ENDIAN).position(at).asShortBuffer().put(t);
            at += 2 * t.length;
        }
        return root;
    }

    /** {@code batch} over the q, k and v {@link #hostCopy} laid out in {@code root}. */
    private static PackedBatch inBuffers(PackedBatch batch, ByteBuffer root) {
        int q = 2 * batch.q().length;
        int kv = 2 * batch.k().length;
        return PackedBatch.ofBuffers(batch.layout(), batch.cuSeqlens(), batch.maxSeqlen(), root.slice(GAP, q),
                root.slice(2 * GAP + q, kv), root.slice(3 * GAP + q + kv, kv));
    }
}
