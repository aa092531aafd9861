package org.moba.kernels.cuda;

import java.util.Arrays;

import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;

/**
 * The index arrays the kernels read besides the tensors (kernels/src/main/cuda/ABI.md), built on the host from
 * {@code cu_seqlens} and the parameters.
 *
 * <ul>
 *   <li>{@code chunkBase [B+1]}: prefix sums of the full chunks per sequence, {@code floor(L_b / C)}; full chunk
 *       {@code j} of sequence {@code b} is global chunk {@code chunkBase[b] + j}.</li>
 *   <li>{@code tiles [numTiles, 2]}: (sequence, first local row) of every 64-row query tile, ordered by descending
 *       estimated work so that the longest tiles start first and the short ones fill the gaps at the end.</li>
 * </ul>
 */
final class BatchPlan {
    /** Query rows per attention thread block. */
    static final int TILE_ROWS = 64;

    final int selectionWidth;
    final boolean dense;
    final float scale;
    final int[] chunkBase;
    final int numFullChunks;
    final int[] tiles;
    final int numTiles;

    private BatchPlan(PackedBatch batch, MobaParams params) {
        this.dense = params.denseCausal();
        this.selectionWidth = params.selectionWidth(batch.maxSeqlen());
        this.scale = params.scale(batch.headDim());
        int sequences = batch.numSequences();
        int chunk = params.chunkSize();
        this.chunkBase = new int[sequences + 1];
        long tileCount = 0;
        for (int b = 0; b < sequences; b++) {
            int length = batch.seqLength(b);
            chunkBase[b + 1] = chunkBase[b] + length / chunk;
            tileCount += (length + TILE_ROWS - 1) / TILE_ROWS;
        }
        this.numFullChunks = chunkBase[sequences];
        this.numTiles = (int) tileCount;
        this.tiles = orderedTiles(batch, chunk);
    }

    static BatchPlan of(PackedBatch batch, MobaParams params) {
        return new BatchPlan(batch, params);
    }

    /** Whether the chunk-mean and gate kernels run: only when some query selects chunks. */
    boolean runsGate() {
        return !dense && selectionWidth > 0;
    }

    private int[] orderedTiles(PackedBatch batch, int chunk) {
        // Sort keys: (descending work, ascending tile index) packed into one long, so ties stay deterministic.
        long[] keys = new long[numTiles];
        int[] sequenceOfTile = new int[numTiles];
        int[] rowOfTile = new int[numTiles];
        int t = 0;
        for (int b = 0; b < batch.numSequences(); b++) {
            int length = batch.seqLength(b);
            for (int row = 0; row < length; row += TILE_ROWS) {
                int work = estimatedKeys(row, Math.min(TILE_ROWS, length - row), chunk);
                keys[t] = ((long) (Integer.MAX_VALUE - work) << 32) | t;
                sequenceOfTile[t] = b;
                rowOfTile[t] = row;
                t++;
            }
        }
        Arrays.sort(keys);
        int[] ordered = new int[2 * numTiles];
        for (int i = 0; i < numTiles; i++) {
            int tile = (int) keys[i];
            ordered[2 * i] = sequenceOfTile[tile];
            ordered[2 * i + 1] = rowOfTile[tile];
        }
        return ordered;
    }

    /**
     * Keys a tile's thread block is expected to visit: the own chunk's causal prefix plus the union of the chunks
     * its rows select. Each of the {@code rows} queries picks {@code w} of {@code c} candidates; for unrelated
     * picks the union covers {@code c * (1 - (1 - w/c)^rows)} chunks on average. Only the order matters.
     */
    int estimatedKeys(int firstRow, int rows, int chunk) {
        int ownChunk = firstRow / chunk;
        long ownPrefix = firstRow % chunk + rows;
        double pastChunks;
        if (dense) {
            pastChunks = ownChunk;
        } else {
            int w = Math.min(selectionWidth, ownChunk);
            pastChunks = w == 0 ? 0 : ownChunk * (1 - Math.pow(1 - (double) w / ownChunk, rows));
        }
        return (int) Math.min(Integer.MAX_VALUE - 1L, ownPrefix + Math.round(pastChunks * chunk));
    }
}
