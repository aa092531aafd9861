package org.moba.spark;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Path;
import java.util.List;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.SyntheticSequences;
import org.moba.kernels.cuda.CudaDriver;

/**
 * The Dataset API on the CUDA backend gives {@code score --backend cuda}'s bits and records the CUDA device each
 * task was bound to. Skipped, with the reason, where no usable CUDA device exists (run it on a GPU host).
 */
@Tag("gpu")
@Timeout(300)
class MobaDatasetCudaTest {
    private static final BatchLayout LAYOUT = new BatchLayout(DType.FP16, 4, 2, 64);

    @AfterAll
    static void stopSpark() {
        MobaDatasetTest.stopSpark();
    }

    @Test
    void cudaBackendGivesScoresBits(@TempDir Path dir) {
        assumeTrue(CudaDriver.deviceCount() > 0, "no usable CUDA device: " + CudaDriver.unavailableReason());
        SyntheticSequences synth = new SyntheticSequences(4, LAYOUT);
        List<Row> rows = List.of(70, 700, 64, 1300, 5).stream().map(n -> synth.generate(n, n))
                .map(s -> MobaTensors.row(s.id(), LAYOUT, s.q(), s.k(), s.v())).toList();
        Dataset<Row> input = MobaTensors.dataset(SparkSession.builder().master("local[2]").getOrCreate(), rows, 2);
        List<Row> api = MobaDataset.attention(input, MobaOptions.of(128, 3).withBackend("cuda").withMetrics(true))
                .all().collectAsList();
        for (Row r : api) {
            assertNotNull(r.getAs("pci_bus_id"), "bound to a CUDA device: " + r.getAs("device"));
        }
        ScoreParity.assertSameAsScore(input, api, dir, 128, 3, "--backend", "cuda");
        assertEquals(rows.size(), api.size());
    }
}
