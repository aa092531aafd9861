package org.moba.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.SplittableRandom;

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

    /** Every backend opened by name computes gradients; on a host without a GPU, auto's is the CPU backward. */
    @Test
    void backendsByNameAreTrainable() {
        BatchLayout layout = new BatchLayout(DType.BF16, 2, 1, 64);
        SplittableRandom rng = new SplittableRandom(7);
        PackedBatch batch = new SequencePacker(layout, Integer.MAX_VALUE)
                .concat(List.of(SyntheticSequences.random(rng, layout, "s", 70))).batch();
        MobaParams params = MobaParams.of(64, 2);
        short[] dout = SyntheticSequences.random(rng, layout, "dout", 70).q();
        for (String name : List.of("cpu", "auto")) {
            try (MobaTraining backend = MobaBackends.open(name, 0, 1)) {
                MobaGradients g = backend.backward(batch, params, backend.forward(batch, params), dout);
                assertEquals(batch.q().length, g.dq().length, name + ": dq");
                assertEquals(batch.k().length, g.dk().length, name + ": dk");
                assertEquals(batch.v().length, g.dv().length, name + ": dv");
            }
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
        assertEquals("unknown backend 'tpu' (choose one of: auto, cpu, cuda)", e.getMessage());
    }
}
