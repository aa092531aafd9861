package org.moba.kernels.cpu;

import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;

/**
 * What every worker of one forward call shares: the fp32 tensors, the work units and the sizes derived from the
 * batch and parameters. Scratch sizes follow the longest sequence present (max_seqlen may be a loose upper bound);
 * the selection width follows max_seqlen, as {@link MobaParams#selectionWidth} defines it.
 *
 * @param maxChunks chunks of the longest sequence
 */
record ForwardPlan(FloatTensors x, RowBlocks blocks, int[] cuSeqlens, int heads, int headDim, int groupSize,
                   int chunkSize, int topk, int width, int maxChunks) {

    static ForwardPlan of(FloatTensors x, RowBlocks blocks, PackedBatch batch, MobaParams params) {
        int longest = 0;
        for (int b = 0; b < batch.numSequences(); b++) {
            longest = Math.max(longest, batch.seqLength(b));
        }
        return new ForwardPlan(x, blocks, batch.cuSeqlens(), batch.heads(), batch.headDim(), batch.groupSize(),
                params.chunkSize(), params.topk(), params.selectionWidth(batch.maxSeqlen()), params.chunksOf(longest));
    }

    /** Candidates of the last chunk of the longest sequence: the most any query has. */
    int maxCandidates() {
        return Math.max(0, maxChunks - 1);
    }

    /** Offset of the {@code [D]} row of a query (or output) in {@code [T, H, D]}. */
    int rowOffset(int token, int head) {
        return (token * heads + head) * headDim;
    }

    /** Offset of a (token, head)'s selection in {@code [T, H, W]}. */
    int selectionOffset(int token, int head) {
        return (token * heads + head) * width;
    }
}
