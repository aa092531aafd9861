package org.moba.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.moba.kernels.cpu.CpuMobaAttention;

/** {@link MobaAttention#prepare} on a backend without a device (the CPU): every run is a forward. */
class PreparedBatchTest {
    private static final BatchLayout LAYOUT = new BatchLayout(DType.BF16, 4, 2, 32);
    private static final MobaParams PARAMS = MobaParams.of(32, 2);

    private static PackedBatch batch() {
        SplittableRandom rng = new SplittableRandom(11);
        return new SequencePacker(LAYOUT, 1024).concat(List.of(SyntheticSequences.random(rng, LAYOUT, "a", 100),
                SyntheticSequences.random(rng, LAYOUT, "b", 70))).batch();
    }

    @Test
    void everyRunIsOneForwardAndDownloadReturnsTheLatestWithoutAnother() {
        PackedBatch batch = batch();
        try (CpuMobaAttention cpu = new CpuMobaAttention(2)) {
            CountingForwards counting = new CountingForwards(cpu);
            MobaOutput downloaded;
            try (PreparedBatch prepared = counting.prepare(batch, PARAMS)) {
                for (int r = 1; r <= 3; r++) {
                    PhaseTimings t = prepared.run();
                    assertEquals(r, counting.forwards(), "forwards after run " + r);
                    assertTrue(t.get("attention") > 0 && t.get("gate_topk") > 0, "phases of a forward: " + t);
                }
                downloaded = prepared.download();
            }
            assertEquals(3, counting.forwards(), "download runs nothing");
            MobaOutput direct = cpu.forward(batch, PARAMS);
            assertArrayEquals(direct.out(), downloaded.out());
            assertArrayEquals(direct.lse(), downloaded.lse());
            assertArrayEquals(direct.selected(), downloaded.selected());
            assertEquals(0, downloaded.timings().get("h2d") + downloaded.timings().get("d2h"),
                    "no device, no copies");
        }
    }

    @Test
    void downloadBeforeRunIsRefused() {
        try (CpuMobaAttention cpu = new CpuMobaAttention(1); PreparedBatch prepared = cpu.prepare(batch(), PARAMS)) {
            assertThrows(IllegalStateException.class, prepared::download);
        }
    }
}
