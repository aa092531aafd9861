package org.moba.kernels.cpu;

import org.moba.kernels.PackedBatch;

/**
 * The unit of parallel work: a block of consecutive query rows of one sequence that lies inside one chunk, for one
 * query head. Blocks never cross a chunk boundary, so all rows of a block share their own chunk and candidate set;
 * splitting chunks into blocks lets one long sequence keep every thread busy.
 */
final class RowBlocks {
    /**
     * Default rows per block. A chunk's key and value tiles are read once per block from memory and then from cache
     * for each row that attends them, so bigger blocks save memory traffic (at 1x16K, C=512: 512 rows per block ran
     * attention 13% faster than 128 and 47% faster than 32); blocks still split long chunks for load balance.
     */
    static final int DEFAULT_MAX_ROWS = 512;

    private final int heads;
    private final int maxRows;
    private final int[] sequence;
    /** First local row of each block. */
    private final int[] firstRow;
    private final int[] rowCount;

    RowBlocks(PackedBatch batch, int chunkSize, int maxRows) {
        this.heads = batch.heads();
        int rowsPerBlock = Math.min(maxRows, chunkSize);
        this.maxRows = rowsPerBlock;
        int blocksPerChunk = (chunkSize - 1) / rowsPerBlock + 1; // ceil, without overflow near Integer.MAX_VALUE
        int count = 0;
        for (int b = 0; b < batch.numSequences(); b++) {
            count += blocksIn(batch.seqLength(b), chunkSize, rowsPerBlock, blocksPerChunk);
        }
        sequence = new int[count];
        firstRow = new int[count];
        rowCount = new int[count];
        int n = 0;
        for (int b = 0; b < batch.numSequences(); b++) {
            int length = batch.seqLength(b);
            for (int chunkStart = 0; chunkStart < length; chunkStart += chunkSize) {
                int chunkEnd = Math.min(length, chunkStart + chunkSize);
                for (int row = chunkStart; row < chunkEnd; row += rowsPerBlock) {
                    sequence[n] = b;
                    firstRow[n] = row;
                    rowCount[n] = Math.min(rowsPerBlock, chunkEnd - row);
                    n++;
                }
            }
        }
    }

    private static int blocksIn(int length, int chunkSize, int rowsPerBlock, int blocksPerChunk) {
        int fullChunks = length / chunkSize;
        int tail = length - fullChunks * chunkSize;
        return fullChunks * blocksPerChunk + (tail + rowsPerBlock - 1) / rowsPerBlock;
    }

    /** The most rows any block has. */
    int maxRows() {
        return maxRows;
    }

    /** Tasks: every block times every query head. */
    int tasks() {
        return sequence.length * heads;
    }

    int head(int task) {
        return task % heads;
    }

    int sequence(int task) {
        return sequence[task / heads];
    }

    int firstRow(int task) {
        return firstRow[task / heads];
    }

    int rowCount(int task) {
        return rowCount[task / heads];
    }
}
