package org.moba.kernels.cuda;

import org.moba.kernels.MobaInputException;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;

/** What the CUDA kernels support beyond the general batch rules; checked before any device work. */
final class CudaInputRules {
    static final int[] HEAD_DIMS = {64, 128};
    /** Attention tiles are 64 query rows and must not straddle a chunk boundary. */
    static final int CHUNK_MULTIPLE = BatchPlan.TILE_ROWS;
    static final int MAX_CHUNK = 65536;
    /** Largest Java array, which bounds the selection returned per batch. */
    static final long MAX_ARRAY = Integer.MAX_VALUE - 8;

    private CudaInputRules() {
    }

    static void check(PackedBatch batch, MobaParams params) {
        int d = batch.headDim();
        if (d != HEAD_DIMS[0] && d != HEAD_DIMS[1]) {
            throw new MobaInputException("head_dim (D) = " + d + " is not supported by the CUDA backend (supported: "
                    + HEAD_DIMS[0] + ", " + HEAD_DIMS[1] + ")");
        }
        int c = params.chunkSize();
        if (c % CHUNK_MULTIPLE != 0 || c > MAX_CHUNK) {
            throw new MobaInputException("chunk_size = " + c + " is not supported by the CUDA backend (supported: "
                    + "a positive multiple of " + CHUNK_MULTIPLE + " up to " + MAX_CHUNK + ")");
        }
        long selected = (long) batch.totalTokens() * batch.heads() * params.selectionWidth(batch.maxSeqlen());
        if (selected > MAX_ARRAY) {
            throw new MobaInputException("the selection of " + batch + " with " + params + " has " + selected
                    + " entries (T*H*W), more than one array holds; split the batch (e.g. halve the token budget)");
        }
    }
}
