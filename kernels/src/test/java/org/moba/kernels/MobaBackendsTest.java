package org.moba.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.moba.kernels.cuda.CudaMobaAttention;

class MobaBackendsTest {

    @Test
    void cpuByName() {
        try (MobaAttention cpu = MobaBackends.open(" CPU ", 0, 1)) {
            assertEquals("cpu", cpu.name());
        }
    }

    @Test
    void autoPicksCudaExactlyWhenTheDeviceIsUsable() {
        String reason = CudaMobaAttention.unavailableReason(0);
        try (MobaAttention auto = MobaBackends.open("auto", 0, 1)) {
            assertEquals(reason == null ? "cuda" : "cpu", auto.name(), "CUDA unavailable because: " + reason);
        }
    }

    @Test
    void cudaWithoutAUsableDeviceSaysWhy() {
        String reason = CudaMobaAttention.unavailableReason(0);
        Assumptions.assumeTrue(reason != null, "a usable GPU is present, so there is no refusal to check");
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> MobaBackends.open("cuda", 0, 1));
        assertTrue(e.getMessage().startsWith("backend 'cuda' requested but CUDA device 0 is not usable: "),
                e.getMessage());
    }

    @Test
    void unknownNameListsTheChoices() {
        MobaInputException e = assertThrows(MobaInputException.class, () -> MobaBackends.open("tpu", 0, 1));
        assertEquals("unknown backend 'tpu' (choose one of: cpu, cuda, auto)", e.getMessage());
    }
}
