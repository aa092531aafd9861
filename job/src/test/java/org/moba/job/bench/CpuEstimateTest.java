package org.moba.job.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.moba.job.LengthMix;
import org.moba.job.Shape;
import org.moba.kernels.AttendedPairs;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;
import org.moba.kernels.cpu.CpuMobaAttention;

/** The CPU-time estimate's work count is the work the backends do, and its measured rate is a rate. */
class CpuEstimateTest {

    @Test
    void mobaPairsAreThePairsTheBackendAttends() {
        BatchLayout layout = new BatchLayout(DType.BF16, 2, 2, 32);
        int[] lengths = {1, 63, 64, 65, 700};
        SplittableRandom rng = new SplittableRandom(3);
        List<org.moba.kernels.Sequence> seqs = java.util.Arrays.stream(lengths)
                .mapToObj(l -> SyntheticSequences.random(rng, layout, "s" + l, l)).toList();
        PackedBatch batch = new SequencePacker(layout, 10_000).concat(seqs).batch();
        MobaParams params = MobaParams.of(64, 3);
        try (CpuMobaAttention cpu = new CpuMobaAttention(1)) {
            long attended = AttendedPairs.count(batch, params, cpu.forward(batch, params));
            double estimated = 0;
            for (int l : lengths) {
                estimated += CpuEstimate.mobaPairs(l, 64, 3) * layout.heads();
            }
            assertEquals(attended, estimated, 0.0);
        }
    }

    @Test
    void aGpuSizedShapeIsEstimatedAtHoursAndASmallOneAtSeconds() {
        BenchShape flashMoba = new BenchShape(new Shape(DType.FP16, 16, 16, 128, 128, 8), new LengthMix("2x65536"),
                131_072);
        BenchShape small = new BenchShape(new Shape(DType.BF16, 8, 2, 64, 128, 3), new LengthMix("4x2048"), 65_536);
        double rate = CpuEstimate.measureFlopsPerSecond();
        assertTrue(rate > 1e8 && rate < 1e14, "a CPU's flop rate: " + rate);
        // At 100 GFLOP/s (a fast many-core CPU) the FlashMoBA shape still takes hours; the default grid seconds.
        assertTrue(CpuEstimate.seconds(List.of(flashMoba), 2, 10, 1, 100e9) > 3600);
        assertTrue(CpuEstimate.seconds(List.of(small), 2, 10, 1, 100e9) < 10);
    }
}
