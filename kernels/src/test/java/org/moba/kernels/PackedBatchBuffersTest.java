package org.moba.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A batch over byte buffers ({@link PackedBatch#ofBuffers}) is the same batch as one over arrays: same arrays on
 * demand, same bytes, same validation and the same non-finite message, for heap and direct buffers, at any position.
 */
class PackedBatchBuffersTest {
    private static final BatchLayout LAYOUT = new BatchLayout(DType.FP16, 4, 2, 32);

    private static PackedBatch arrays() {
        SplittableRandom rng = new SplittableRandom(11);
        List<Sequence> s = List.of(SyntheticSequences.random(rng, LAYOUT, "a", 7),
                SyntheticSequences.random(rng, LAYOUT, "b", 0), SyntheticSequences.random(rng, LAYOUT, "c", 13));
        return new SequencePacker(LAYOUT, Integer.MAX_VALUE).concat(s).batch();
    }

    /** {@code bytes} copied into a buffer after {@code pad} bytes of other data, positioned on the copy. */
    private static ByteBuffer placed(ByteBuffer bytes, boolean direct, int pad) {
        ByteBuffer b = direct ? ByteBuffer.allocateDirect(pad + bytes.remaining())
                : ByteBuffer.allocate(pad + bytes.remaining());
        for (int i = 0; i < pad; i++) {
            b.put((byte) 0x7F); // would read as NaN if the batch looked before its position
        }
        b.put(bytes.duplicate()).position(pad);
        return b;
    }

    private static PackedBatch buffers(PackedBatch a, boolean direct, int pad) {
        return PackedBatch.ofBuffers(LAYOUT, a.cuSeqlens(), a.maxSeqlen(), placed(a.qBytes(), direct, pad),
                placed(a.kBytes(), direct, pad), placed(a.vBytes(), direct, pad));
    }

    @ParameterizedTest(name = "direct={0}")
    @ValueSource(booleans = {false, true})
    void buffersHoldTheSameTensorsAsArrays(boolean direct) {
        PackedBatch a = arrays();
        PackedBatch b = buffers(a, direct, 6);
        assertTrue(b.inBuffers());
        assertEquals(a.qElements(), b.qElements());
        assertEquals(a.kvElements(), b.kvElements());
        assertEquals(a.qBytes(), b.qBytes());
        assertEquals(a.vBytes(), b.vBytes());
        assertArrayEquals(a.q(), b.q());
        assertArrayEquals(a.k(), b.k());
        assertArrayEquals(a.v(), b.v());
        b.checkFinite(); // the padding before each buffer's position is not part of the batch
    }

    @Test
    void nonFiniteValueInABufferIsNamedAsInAnArray() {
        PackedBatch a = arrays();
        short[] k = a.k().clone();
        int at = (7 + 3) * LAYOUT.kvElementsPerToken() + 1 * 32 + 5; // sequence 2, token 3, head 1, dim 5
        k[at] = (short) 0x7C00; // +inf
        PackedBatch withInf = PackedBatch.of(LAYOUT, a.cuSeqlens(), a.maxSeqlen(), a.q(), k, a.v());
        PackedBatch inBuffers = buffers(withInf, true, 2);
        MobaInputException fromArray = assertThrows(MobaInputException.class, withInf::checkFinite);
        MobaInputException fromBuffer = assertThrows(MobaInputException.class, inBuffers::checkFinite);
        assertEquals("sequence 2: k holds Infinity at token 3, head 1, dim 5", fromArray.getMessage());
        assertEquals(fromArray.getMessage(), fromBuffer.getMessage());
    }

    @Test
    void bufferOfTheWrongSizeIsRejectedWithTheFormula() {
        PackedBatch a = arrays();
        ByteBuffer shortQ = ByteBuffer.allocateDirect(a.qBytes().remaining() - 2);
        MobaInputException e = assertThrows(MobaInputException.class, () -> PackedBatch.ofBuffers(LAYOUT,
                a.cuSeqlens(), a.maxSeqlen(), shortQ, a.kBytes(), a.vBytes()));
        assertEquals("q has 5118 bytes, expected 2 x (T*H*D = 20*4*32 = 2560) = 5120", e.getMessage());
    }
}
