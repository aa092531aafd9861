package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Which gathered kernel a forward call gets, by engine and chunk size (ABI.md, "Hopper forward"): on wgmma the
 * persistent chunk-resident kernel up to one 128-key step, the per-group kernel from 512 keys, mma.sync in between
 * and on the mma.sync engine; and the routing's rows per group that each kernel expects.
 */
class GatheredKernelChoiceTest {
    @ParameterizedTest(name = "{0}, chunk {1}: on wgmma {2}, resident {3}, {4} rows per group")
    @CsvSource({
        "WGMMA, 64, true, true, 512",
        "WGMMA, 128, true, true, 512",
        "WGMMA, 192, false, false, 64",
        "WGMMA, 256, false, false, 64",
        "WGMMA, 512, true, false, 128",
        "WGMMA, 4096, true, false, 128",
        "MMA_SYNC, 64, false, false, 512",
        "MMA_SYNC, 128, false, false, 512",
        "MMA_SYNC, 512, false, false, 64",
    })
    void eachChunkSizeGetsItsKernelAndGroupSize(ForwardEngine engine, int chunkSize, boolean onWgmma, boolean resident,
                                                int rowsPerGroup) {
        assertEquals(onWgmma, MobaKernels.gatheredOnWgmma(engine, chunkSize));
        assertEquals(resident, MobaKernels.residentGathered(engine, chunkSize));
        assertEquals(rowsPerGroup, MobaKernels.forwardRowsPerGroup(engine, chunkSize));
    }
}
