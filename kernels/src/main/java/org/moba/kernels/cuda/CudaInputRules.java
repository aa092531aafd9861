package org.moba.kernels.cuda;

import static org.moba.kernels.BackwardInputRules.length;

import org.moba.kernels.BackwardInputRules;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;

/**
 * What the CUDA kernels support beyond the general batch rules; checked before any device work, and by the jobs
 * against the requested shapes before any task runs.
 */
public final class CudaInputRules {
    static final int[] HEAD_DIMS = {64, 128};
    /** Attention tiles are 64 query rows and must not straddle a chunk boundary. */
    static final int CHUNK_MULTIPLE = BatchPlan.TILE_ROWS;
    static final int MAX_CHUNK = 65536;
    /** Largest Java array, which bounds the selection returned per batch. */
    static final long MAX_ARRAY = Integer.MAX_VALUE - 8;

    private CudaInputRules() {
    }

    static void check(PackedBatch batch, MobaParams params) {
        if (batch == null) {
            throw new MobaInputException("batch is missing");
        }
        if (params == null) {
            throw new MobaInputException("params are missing");
        }
        checkShape(batch.headDim(), params);
        checkSelection(batch.totalTokens(), batch.heads(), batch.maxSeqlen(), params, batch.toString());
    }

    /** The head dim and chunk size the kernels are built for. */
    public static void checkShape(int headDim, MobaParams params) {
        if (headDim != HEAD_DIMS[0] && headDim != HEAD_DIMS[1]) {
            throw new MobaInputException("head_dim (D) = " + headDim + " is not supported by the CUDA backend"
                    + " (supported: " + HEAD_DIMS[0] + ", " + HEAD_DIMS[1] + ")");
        }
        checkChunk(params);
    }

    /** The chunk sizes the kernels are built for (a job checks this before it knows the data's head dim). */
    public static void checkChunk(MobaParams params) {
        int c = params.chunkSize();
        if (c % CHUNK_MULTIPLE != 0 || c > MAX_CHUNK) {
            throw new MobaInputException("chunk_size = " + c + " is not supported by the CUDA backend (supported: "
                    + "a positive multiple of " + CHUNK_MULTIPLE + " up to " + MAX_CHUNK + ")");
        }
    }

    /**
     * The selection of a batch of {@code tokens} x {@code heads} whose longest sequence is {@code maxSeqlen} fits one
     * Java array (and so the routing's 32-bit indices).
     */
    public static void checkSelection(long tokens, int heads, int maxSeqlen, MobaParams params, String batch) {
        long selected = tokens * heads * params.selectionWidth(maxSeqlen);
        if (selected > MAX_ARRAY) {
            throw new MobaInputException("the selection of " + batch + " with " + params + " has " + selected
                    + " entries (T*H*W), more than one array holds; split the batch (e.g. halve the token budget)");
        }
    }

    /**
     * What a backward call needs beyond {@link #check}: {@code dout} and the forward's out, lse and selection with the
     * batch's shapes, and a selection the kernels can route (each entry -1 or an earlier full chunk of the query's
     * sequence, ascending, -1 only as trailing padding; an entry out of range would send the kernels outside the
     * chunk arrays). The messages name the field, its value and what was expected, as the CPU backend's do.
     */
    static void checkBackward(PackedBatch batch, MobaParams params, MobaOutput forward, short[] dout) {
        check(batch, params);
        if (forward == null) {
            throw new MobaInputException("forward is missing");
        }
        BackwardInputRules.checkSizes(batch, params, length(dout), length(forward.out()), length(forward.lse()),
                forward.selectionWidth(), length(forward.selected()));
        int width = forward.selectionWidth();
        if (!params.denseCausal() && width > 0) {
            checkSelection(batch, params.chunkSize(), forward.selected(), width);
        }
    }

    private static void checkSelection(PackedBatch batch, int chunkSize, int[] selected, int width) {
        int heads = batch.heads();
        for (int b = 0; b < batch.numSequences(); b++) {
            int start = batch.seqStart(b);
            int length = batch.seqLength(b);
            for (int p = 0; p < length; p++) {
                int own = p / chunkSize;
                for (int h = 0; h < heads; h++) {
                    BackwardInputRules.checkSelectionRow(selected, ((start + p) * heads + h) * width, width, own, b,
                            p, h);
                }
            }
        }
    }
}
