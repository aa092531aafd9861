package org.moba.job.bench;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;

import java.util.List;
import org.junit.jupiter.api.Test;
import org.moba.job.LengthMix;
import org.moba.job.Shape;
import org.moba.kernels.DType;
import org.moba.kernels.PackedBatch;

/** The slots of one JVM share the inputs of the shape they measure; another shape or seed gets its own. */
class SharedInputsTest {
    private static final BenchShape SHAPE = new BenchShape(new Shape(DType.BF16, 4, 2, 32, 64, 2),
            new LengthMix("3x300"), 512);

    @Test
    void slotsOnTheSameShapeAndSeedShareOneCopy() {
        List<PackedBatch> first = SharedInputs.of(SHAPE, 1);
        assertSame(first, SharedInputs.of(SHAPE, 1));
        assertEquals(3, first.size(), "3 x 300 tokens in batches of at most 512: one sequence each");
        assertArrayEquals(new int[] {0, 300}, first.get(0).cuSeqlens());
    }

    @Test
    void anotherSeedOrShapeBuildsItsOwnInputs() {
        List<PackedBatch> first = SharedInputs.of(SHAPE, 1);
        assertNotSame(first, SharedInputs.of(SHAPE, 2));
        BenchShape longer = new BenchShape(SHAPE.shape(), new LengthMix("1x700"), 512);
        List<PackedBatch> other = SharedInputs.of(longer, 1);
        assertArrayEquals(new int[] {0, 700}, other.get(0).cuSeqlens());
    }
}
