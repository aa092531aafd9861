package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.function.IntBinaryOperator;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;

class BatchPlanTest {
    private static final BatchLayout LAYOUT = new BatchLayout(DType.FP16, 2, 1, 64);

    private static PackedBatch batchOf(int... lengths) {
        int[] cu = new int[lengths.length + 1];
        int max = 0;
        for (int i = 0; i < lengths.length; i++) {
            cu[i + 1] = cu[i] + lengths[i];
            max = Math.max(max, lengths[i]);
        }
        int t = cu[lengths.length];
        return PackedBatch.of(LAYOUT, cu, max, new short[t * 2 * 64], new short[t * 64], new short[t * 64]);
    }

    @Test
    void chunkBaseCountsOnlyFullChunksPerSequence() {
        BatchPlan plan = BatchPlan.of(batchOf(0, 1, 63, 64, 130, 200), MobaParams.of(64, 3));
        assertArrayEquals(new int[] {0, 0, 0, 0, 1, 3, 6}, plan.chunkBase);
        assertEquals(6, plan.numFullChunks);
    }

    static Stream<Arguments> randomBatches() {
        long seed = new SplittableRandom().nextLong();
        System.out.println("BatchPlanTest seed " + seed);
        SplittableRandom rng = new SplittableRandom(seed);
        List<Arguments> cases = new ArrayList<>();
        for (MobaParams params : List.of(MobaParams.of(64, 3), MobaParams.of(128, 8), MobaParams.of(64, 1),
                MobaParams.denseCausal(128))) {
            int[] lengths = new int[1 + rng.nextInt(12)];
            for (int i = 0; i < lengths.length; i++) {
                lengths[i] = rng.nextInt(4) == 0 ? 0 : rng.nextInt(1, 3000);
            }
            cases.add(Arguments.of(params, lengths, seed));
        }
        return cases.stream();
    }

    @ParameterizedTest(name = "{0}, lengths {1}")
    @MethodSource("randomBatches")
    void tilesCoverEveryQueryRowOnceInsideOneChunkLongestFirst(MobaParams params, int[] lengths, long seed) {
        BatchPlan plan = BatchPlan.of(batchOf(lengths), params);
        assertCoverEveryBlockOnceMostWorkFirst("tiles", plan.tiles, plan.numTiles, BatchPlan.TILE_ROWS, lengths,
                (row, rows) -> plan.estimatedKeys(row, rows, params.chunkSize()), seed);
        for (int i = 0; i < plan.numTiles; i++) {
            int b = plan.tiles[2 * i];
            int row = plan.tiles[2 * i + 1];
            int rows = Math.min(BatchPlan.TILE_ROWS, lengths[b] - row);
            assertEquals(row / params.chunkSize(), (row + rows - 1) / params.chunkSize(),
                    "tile (" + b + ", " + row + ") straddles a chunk, seed " + seed);
        }
        assertEquals(2 * plan.numTiles, plan.tiles.length);
    }

    @ParameterizedTest(name = "{0}, lengths {1}")
    @MethodSource("randomBatches")
    void wideTilesCoverEveryQueryRowOnceLongestWalkFirst(MobaParams params, int[] lengths, long seed) {
        BatchPlan plan = BatchPlan.of(batchOf(lengths), params, ForwardEngine.WGMMA);
        assertCoverEveryBlockOnceMostWorkFirst("wide tiles", plan.wideTiles, plan.numWideTiles,
                BatchPlan.WIDE_TILE_ROWS, lengths, (row, rows) -> plan.walkedKeys(row, rows, params.chunkSize()), seed);
        assertArrayEquals(plan.wideTiles, plan.tilesFor(ForwardEngine.WGMMA));
        assertEquals(plan.numWideTiles, plan.numTilesFor(ForwardEngine.WGMMA));
        assertArrayEquals(plan.tiles, plan.tilesFor(ForwardEngine.MMA_SYNC));
        assertArrayEquals(plan.tiles, BatchPlan.of(batchOf(lengths), params).tiles, "64-row tiles as without them");
    }

    @Test
    void wideTilesAreBuiltOnlyForTheWgmmaEngine() {
        assertEquals(0, BatchPlan.of(batchOf(500), MobaParams.of(64, 3)).numWideTiles);
        assertEquals(0, BatchPlan.of(batchOf(500), MobaParams.of(64, 3), ForwardEngine.MMA_SYNC).wideTiles.length);
    }

    @ParameterizedTest(name = "{0}, lengths {1}")
    @MethodSource("randomBatches")
    void gateTilesCoverEveryQueryRowOnceMostCandidatesFirst(MobaParams params, int[] lengths, long seed) {
        BatchPlan plan = BatchPlan.of(batchOf(lengths), params);
        if (!plan.runsGate()) {
            assertEquals(0, plan.numGateTiles, "no gate, no gate tiles");
            return;
        }
        // The gate's work: every past full chunk of the tile's last row.
        assertCoverEveryBlockOnceMostWorkFirst("gate tiles", plan.gateTiles, plan.numGateTiles,
                BatchPlan.GATE_TILE_ROWS, lengths, (row, rows) -> (row + rows - 1) / params.chunkSize(), seed);
        // The scored prefix: exactly the tiles whose last row has more candidates than the selection width.
        for (int i = 0; i < plan.numGateTiles; i++) {
            int b = plan.gateTiles[2 * i];
            int lastRow = Math.min(plan.gateTiles[2 * i + 1] + BatchPlan.GATE_TILE_ROWS, lengths[b]) - 1;
            boolean ranks = lastRow / params.chunkSize() > plan.selectionWidth;
            assertEquals(ranks, i < plan.numScoredGateTiles, "gate tile " + i + " (sequence " + b + ", last row "
                    + lastRow + ", W " + plan.selectionWidth + "), seed " + seed);
        }
    }

    @Test
    void gateTilesWhoseRowsSelectEveryPastChunkAreNotScored() {
        // chunk 64, topk 3 (W = 2): rows 0..191 have own chunk <= 2, so the first 128-row tile selects all; the second
        // (rows 128..255) holds rows of chunk 3, which rank.
        BatchPlan plan = BatchPlan.of(batchOf(256), MobaParams.of(64, 3));
        assertEquals(2, plan.numGateTiles);
        assertEquals(1, plan.numScoredGateTiles);
        assertEquals(128, plan.gateTiles[1], "the scored tile comes first");
        // 191 tokens: both tiles' rows lie in chunks 0..2.
        assertEquals(0, BatchPlan.of(batchOf(191), MobaParams.of(64, 3)).numScoredGateTiles);
    }

    /**
     * {@code tiles} ({@code (sequence, first row)} pairs) hold every {@code tileRows}-row block of every sequence
     * exactly once, in non-increasing order of {@code work(firstRow, rows)}.
     */
    private static void assertCoverEveryBlockOnceMostWorkFirst(String what, int[] tiles, int numTiles, int tileRows,
                                                               int[] lengths, IntBinaryOperator work, long seed) {
        Set<Long> expected = new HashSet<>();
        for (int b = 0; b < lengths.length; b++) {
            for (int row = 0; row < lengths[b]; row += tileRows) {
                expected.add(((long) b << 32) | row);
            }
        }
        Set<Long> seen = new HashSet<>();
        int previousWork = Integer.MAX_VALUE;
        for (int i = 0; i < numTiles; i++) {
            int b = tiles[2 * i];
            int row = tiles[2 * i + 1];
            assertTrue(seen.add(((long) b << 32) | row), what + ": (" + b + ", " + row + ") twice, seed " + seed);
            int tileWork = work.applyAsInt(row, Math.min(tileRows, lengths[b] - row));
            assertTrue(tileWork <= previousWork, what + ": tile " + i + " has more work than the one before, seed "
                    + seed);
            previousWork = tileWork;
        }
        assertEquals(expected, seen, what + " must cover every " + tileRows + "-row block of every sequence, seed "
                + seed);
    }

    @Test
    void gateTilesExistOnlyWhenTheGateRuns() {
        assertEquals(0, BatchPlan.of(batchOf(500), MobaParams.denseCausal(64)).numGateTiles, "dense");
        assertEquals(0, BatchPlan.of(batchOf(500), MobaParams.of(64, 1)).numGateTiles, "own chunk only");
        assertEquals(4, BatchPlan.of(batchOf(500), MobaParams.of(64, 3)).numGateTiles, "ceil(500 / 128)");
    }

    @Test
    void wideTileWalkStartsAtTheFirstRowsChunk() {
        BatchPlan plan = BatchPlan.of(batchOf(1000), MobaParams.of(192, 1), ForwardEngine.WGMMA);
        assertEquals(128 + 128 - 0, plan.walkedKeys(128, 128, 192), "rows 128..255 walk from chunk 0's start");
        assertEquals(384 + 128 - 384, plan.walkedKeys(384, 128, 192), "rows 384..511 walk from 384");
        BatchPlan dense = BatchPlan.of(batchOf(1000), MobaParams.denseCausal(192), ForwardEngine.WGMMA);
        assertEquals(384 + 128, dense.walkedKeys(384, 128, 192), "dense walks the whole prefix");
    }

    @Test
    void longestTileOfALongSequenceComesFirst() {
        BatchPlan plan = BatchPlan.of(batchOf(100, 4096, 300), MobaParams.denseCausal(64));
        assertEquals(1, plan.tiles[0], "sequence of the first tile");
        assertEquals(4096 - 64, plan.tiles[1], "first row of the first tile");
    }

    @Test
    void equalWorkKeepsBatchOrder() {
        BatchPlan plan = BatchPlan.of(batchOf(64, 64, 64), MobaParams.of(64, 2));
        assertArrayEquals(new int[] {0, 0, 1, 0, 2, 0}, plan.tiles);
    }

    @Test
    void gateRunsOnlyWhenSomeQuerySelectsChunks() {
        PackedBatch batch = batchOf(10, 500);
        assertTrue(BatchPlan.of(batch, MobaParams.of(64, 3)).runsGate());
        assertFalse(BatchPlan.of(batch, MobaParams.of(64, 1)).runsGate(), "topk 1: own chunk only");
        assertFalse(BatchPlan.of(batch, MobaParams.denseCausal(64)).runsGate(), "dense");
        assertFalse(BatchPlan.of(batchOf(10, 64), MobaParams.of(64, 3)).runsGate(), "no query has a candidate");
    }

    @Test
    void pathCostEstimatesCountTheRowKeyPairsOfEachKernel() {
        // One sequence of 256 tokens, chunk 64, topk 2 (W = 1): 64-row tiles in chunks 0..3.
        BatchPlan plan = BatchPlan.of(batchOf(256), MobaParams.of(64, 2));
        // Chunks 0 and 1 select every past chunk: causal prefixes 1..64 and 65..128; chunks 2 and 3 walk their own
        // chunk's prefix (1..64 per row) and gather W = 1 chunk of 64 keys per row.
        assertEquals(64 * 65 / 2 + (65 + 128) * 64 / 2 + 2 * (64 * 65 / 2), plan.ownKeyRows);
        assertEquals(2L * 64 * 64, plan.gatheredKeyRows);
        // The union walk: own-chunk keys to the diagonal (64 per tile) plus the expected union of past chunks
        // (0, 1, ~2 and ~3 chunks), times 64 rows.
        assertEquals(64L * (64 + 128 + 192 + 256), plan.unionKeyRows);
        BatchPlan dense = BatchPlan.of(batchOf(256), MobaParams.denseCausal(64));
        assertEquals(0, dense.unionKeyRows + dense.gatheredKeyRows + dense.ownKeyRows, "no estimate without a gate");
    }
}
