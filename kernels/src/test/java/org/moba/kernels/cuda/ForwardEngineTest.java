package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class ForwardEngineTest {
    @ParameterizedTest(name = "requested {0} on sm_{1} -> {2}")
    @CsvSource(nullValues = "null", value = {
        "null, 90, WGMMA", "auto, 90, WGMMA", "' AUTO ', 90, WGMMA", "'', 90, WGMMA",
        "null, 80, MMA_SYNC", "auto, 89, MMA_SYNC", "null, 100, MMA_SYNC",
        "mma-sync, 90, MMA_SYNC", "MMA-SYNC, 90, MMA_SYNC", "wgmma, 90, WGMMA", "' WGMMA ', 90, WGMMA",
        "mma-sync, 86, MMA_SYNC"})
    void autoPicksWgmmaOnSm90OnlyAndTheSwitchForcesEitherWhereItRuns(String requested, int cc, ForwardEngine expected) {
        assertEquals(expected, ForwardEngine.choose(requested, "-Dmoba.cuda.engine", cc, "cuda:0"));
    }

    @Test
    void wgmmaOnADeviceWithoutSm90aIsRefusedWithTheReason() {
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> ForwardEngine.choose("wgmma", "MOBA_CUDA_ENGINE", 86, "cuda:1 (NVIDIA A10)"));
        assertTrue(e.getMessage().contains("MOBA_CUDA_ENGINE=wgmma"), e.getMessage());
        assertTrue(e.getMessage().contains("cuda:1 (NVIDIA A10) has 8.6"), e.getMessage());
    }

    @Test
    void anUnknownEngineNamesTheChoices() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ForwardEngine.choose("tensor", "-Dmoba.cuda.engine", 90, "cuda:0"));
        assertTrue(e.getMessage().contains("auto, mma-sync or wgmma"), e.getMessage());
    }
}
