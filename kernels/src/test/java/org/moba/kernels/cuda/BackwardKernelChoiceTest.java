package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Which backward kernels a call gets (ABI.md, "Hopper backward"): the fused key-block kernel on the wgmma engine at
 * D = 128 when a chunk is one 128-key block or attention is dense; dq_selected + dkdv everywhere else, and always on
 * the mma.sync engine (which a Hopper GPU runs when {@link ForwardEngine#PROPERTY} forces it).
 */
class BackwardKernelChoiceTest {
    @ParameterizedTest(name = "{0}, D {1}, dense {2}, chunk {3}: fused {4}")
    @CsvSource({
        "WGMMA, 128, false, 128, true",
        "WGMMA, 128, true, 64, true",
        "WGMMA, 128, true, 4096, true",
        "WGMMA, 128, false, 64, false",
        "WGMMA, 128, false, 256, false",
        "WGMMA, 128, false, 4096, false",
        "WGMMA, 64, false, 128, false",
        "WGMMA, 64, true, 128, false",
        "MMA_SYNC, 128, false, 128, false",
        "MMA_SYNC, 128, true, 128, false",
    })
    void fusedOnlyWhereOneBlockHoldsAChunk(ForwardEngine engine, int headDim, boolean dense, int chunkSize,
                                           boolean fused) {
        assertEquals(fused, MobaBackwardKernels.usesFused(engine, headDim, dense, chunkSize));
    }
}
