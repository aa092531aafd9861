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
 *   <li>{@code wideTiles [numWideTiles, 2]}: the same for 128-row tiles, which the wgmma engine's dense and own-chunk
 *       kernels walk ({@link ForwardEngine#WGMMA}); their work is the keys of that walk. Built only for that engine.</li>
 *   <li>{@code gateTiles [numGateTiles, 2]}: every 128-row tile for the gate, ordered by descending candidate
 *       chunks (the gate's work: every past full chunk of the tile's last row). The first {@code numScoredGateTiles}
 *       are scored; the rest, whose rows all select every past chunk, get their ascending lists written without
 *       scoring ({@code moba_sel_all_past}). Built only when the gate runs.</li>
 * </ul>
 * With a selection, the plan also estimates the attention work of the two MoBA paths ({@link #unionKeyRows},
 * {@link #gatheredKeyRows}), from which {@link AttentionPath#choose} picks the cheaper one.
 */
final class BatchPlan {
    /** Query rows per attention thread block (FlashConfig; the backward's BwdConfig tiles are the same). */
    static final int TILE_ROWS = KernelGeometry.get("flash.block_m");
    /** Query rows per thread block of the wgmma engine's forward kernels (two consumer warpgroups of 64). */
    static final int WIDE_TILE_ROWS = KernelGeometry.get("hopper_fwd.block_m");
    /** Query rows per thread block of the gate (GateConfig: four warps of 32). */
    static final int GATE_TILE_ROWS = KernelGeometry.get("gate.block_m");

    final int selectionWidth;
    final boolean dense;
    final float scale;
    final int[] chunkBase;
    final int numFullChunks;
    final int[] tiles;
    final int numTiles;
    final int[] wideTiles;
    final int numWideTiles;
    final int[] gateTiles;
    final int numGateTiles;
    /** Gate tiles with something to rank: their last row's own chunk {@code c > W}. A prefix of {@link #gateTiles}. */
    final int numScoredGateTiles;
    /**
     * (query row, key) pairs the union kernel is expected to walk: every 64-row tile's {@link #estimatedKeys} times
     * its rows. 0 without a selection.
     */
    final long unionKeyRows;
    /**
     * The gathered path's pairs, split by kernel: those of the selected-chunk kernel (every routed row times its
     * {@code W} chunks) and those of the own-chunk kernel (each tile's own-chunk prefix; the whole causal prefix for
     * tiles whose rows selected every past chunk, which are not routed). 0 without a selection.
     */
    final long gatheredKeyRows;
    final long ownKeyRows;

    private BatchPlan(PackedBatch batch, MobaParams params, ForwardEngine engine) {
        this.dense = params.denseCausal();
        this.selectionWidth = params.selectionWidth(batch.maxSeqlen());
        this.scale = params.scale(batch.headDim());
        int sequences = batch.numSequences();
        int chunk = params.chunkSize();
        this.chunkBase = new int[sequences + 1];
        for (int b = 0; b < sequences; b++) {
            chunkBase[b + 1] = chunkBase[b] + batch.seqLength(b) / chunk;
        }
        this.numFullChunks = chunkBase[sequences];
        this.tiles = orderedTiles(batch, TILE_ROWS, (row, rows) -> estimatedKeys(row, rows, chunk));
        this.numTiles = tiles.length / 2;
        this.wideTiles = engine == ForwardEngine.WGMMA
                ? orderedTiles(batch, WIDE_TILE_ROWS, (row, rows) -> walkedKeys(row, rows, chunk)) : new int[0];
        this.numWideTiles = wideTiles.length / 2;
        this.gateTiles = runsGate()
                ? orderedTiles(batch, GATE_TILE_ROWS, (row, rows) -> (row + rows - 1) / chunk) : new int[0];
        this.numGateTiles = gateTiles.length / 2;
        int scored = 0;
        while (scored < numGateTiles
                && !allPastSelected(lastRowOfTile(batch, gateTiles, scored, GATE_TILE_ROWS), chunk)) {
            scored++;
        }
        this.numScoredGateTiles = scored;
        long union = 0;
        long gathered = 0;
        long own = 0;
        if (runsGate()) {
            for (int b = 0; b < sequences; b++) {
                int length = batch.seqLength(b);
                for (int row = 0; row < length; row += TILE_ROWS) {
                    int rows = Math.min(TILE_ROWS, length - row);
                    union += (long) estimatedKeys(row, rows, chunk) * rows;
                    if (allPastSelected(row, chunk)) { // every past chunk selected: walked as a causal prefix
                        own += ((long) row + 1 + row + rows) * rows / 2;
                    } else {
                        gathered += (long) selectionWidth * chunk * rows;
                        own += ((long) row % chunk + 1 + row % chunk + rows) * rows / 2;
                    }
                }
            }
        }
        this.unionKeyRows = union;
        this.gatheredKeyRows = gathered;
        this.ownKeyRows = own;
    }

    /** The plan with the 64-row tiles only (what the mma.sync engine and the backward read) and the gate's. */
    static BatchPlan of(PackedBatch batch, MobaParams params) {
        return new BatchPlan(batch, params, ForwardEngine.MMA_SYNC);
    }

    static BatchPlan of(PackedBatch batch, MobaParams params, ForwardEngine engine) {
        return new BatchPlan(batch, params, engine);
    }

    /** The tiles ({@code (sequence, first row)} pairs) and their count for an engine's attention kernels. */
    int[] tilesFor(ForwardEngine engine) {
        return engine == ForwardEngine.WGMMA ? wideTiles : tiles;
    }

    int numTilesFor(ForwardEngine engine) {
        return engine == ForwardEngine.WGMMA ? numWideTiles : numTiles;
    }

    /**
     * Whether the query at local row {@code row} selected every past chunk: its own chunk {@code c <= W}, so it ranks
     * all {@code c} of its candidates (MOBA semantics: {@code min(topk - 1, c)}); as do all rows before it.
     */
    private boolean allPastSelected(int row, int chunk) {
        return row / chunk <= selectionWidth;
    }

    private static int lastRowOfTile(PackedBatch batch, int[] tiles, int tile, int tileRows) {
        int sequence = tiles[2 * tile];
        int first = tiles[2 * tile + 1];
        return Math.min(first + tileRows, batch.seqLength(sequence)) - 1;
    }

    /** Whether the chunk-mean and gate kernels run: only when some query selects chunks. */
    boolean runsGate() {
        return !dense && selectionWidth > 0;
    }

    /** Keys a tile of {@code rows} rows from {@code firstRow} is expected to visit. */
    private interface TileWork {
        int keys(int firstRow, int rows);
    }

    private static int[] orderedTiles(PackedBatch batch, int tileRows, TileWork work) {
        long count = 0;
        for (int b = 0; b < batch.numSequences(); b++) {
            count += (batch.seqLength(b) + tileRows - 1) / tileRows;
        }
        int numTiles = Math.toIntExact(count);
        // Sort keys: (descending work, ascending tile index) packed into one long, so ties stay deterministic.
        long[] keys = new long[numTiles];
        int[] sequenceOfTile = new int[numTiles];
        int[] rowOfTile = new int[numTiles];
        int t = 0;
        for (int b = 0; b < batch.numSequences(); b++) {
            int length = batch.seqLength(b);
            for (int row = 0; row < length; row += tileRows) {
                keys[t] = ((long) (Integer.MAX_VALUE - work.keys(row, Math.min(tileRows, length - row))) << 32) | t;
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

    /**
     * Keys the wgmma engine's dense / own-chunk walk of a tile visits: from the first row's first key (0 when dense,
     * else its chunk's start) to the tile's last row.
     */
    int walkedKeys(int firstRow, int rows, int chunk) {
        int walkStart = dense ? 0 : (firstRow / chunk) * chunk;
        return firstRow + rows - walkStart;
    }
}
