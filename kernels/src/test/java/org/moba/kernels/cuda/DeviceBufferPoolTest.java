package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;

import org.junit.jupiter.api.Test;

class DeviceBufferPoolTest {

    @Test
    void sizeClassesAreQuarterPowerOfTwoStepsWithAtMostAQuarterSlack() {
        assertEquals(DeviceBufferPool.MIN_CLASS_BYTES, DeviceBufferPool.sizeClass(1));
        assertEquals(1024, DeviceBufferPool.sizeClass(1024));
        assertEquals(1280, DeviceBufferPool.sizeClass(1025));
        assertEquals(1792, DeviceBufferPool.sizeClass(1700));
        assertEquals(2048, DeviceBufferPool.sizeClass(1793));
        long seed = new SplittableRandom().nextLong();
        SplittableRandom rng = new SplittableRandom(seed);
        for (int i = 0; i < 100_000; i++) {
            long bytes = rng.nextLong(1, 1L << 40);
            long c = DeviceBufferPool.sizeClass(bytes);
            assertTrue(c >= bytes && c <= Math.max(DeviceBufferPool.MIN_CLASS_BYTES, bytes + bytes / 4),
                    bytes + " -> " + c + " (seed " + seed + ")");
            assertEquals(c, DeviceBufferPool.sizeClass(c), "a class is its own class (seed " + seed + ")");
        }
    }
}
