package org.moba.kernels.cuda;

import org.moba.kernels.MobaInputException;
import org.moba.kernels.MobaOutput;
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
        if (batch == null) {
            throw new MobaInputException("batch is missing");
        }
        if (params == null) {
            throw new MobaInputException("params are missing");
        }
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
        long rows = (long) batch.totalTokens() * batch.heads();
        int width = params.selectionWidth(batch.maxSeqlen());
        checkLength("dout", dout == null ? -1 : dout.length, batch.q().length, "T*H*D");
        checkLength("forward.out", forward.out() == null ? -1 : forward.out().length, batch.q().length, "T*H*D");
        checkLength("forward.lse", forward.lse() == null ? -1 : forward.lse().length, rows, "T*H");
        if (forward.selectionWidth() != width) {
            throw new MobaInputException("forward.selectionWidth is " + forward.selectionWidth() + ", expected "
                    + width + " for " + params + " and max_seqlen = " + batch.maxSeqlen()
                    + " (was the forward run with other parameters?)");
        }
        checkLength("forward.selected", forward.selected() == null ? -1 : forward.selected().length, rows * width,
                "T*H*selectionWidth");
        if (!params.denseCausal() && width > 0) {
            checkSelection(batch, params.chunkSize(), forward.selected(), width);
        }
    }

    private static void checkLength(String field, long actual, long expected, String formula) {
        if (actual < 0) {
            throw new MobaInputException(field + " is missing (expected " + formula + " = " + expected
                    + " elements)");
        }
        if (actual != expected) {
            throw new MobaInputException(field + " has " + actual + " elements, expected " + formula + " = "
                    + expected);
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
                    int base = ((start + p) * heads + h) * width;
                    int previous = -1;
                    for (int i = 0; i < width; i++) {
                        int j = selected[base + i];
                        if (j == -1) {
                            for (int rest = i + 1; rest < width; rest++) {
                                if (selected[base + rest] != -1) {
                                    throw badSelection(b, p, h, rest, selected[base + rest], own,
                                            "padding -1 before it");
                                }
                            }
                            break;
                        }
                        if (j <= previous || j >= own) {
                            throw badSelection(b, p, h, i, j, own, previous >= 0 ? "after chunk " + previous : "");
                        }
                        previous = j;
                    }
                }
            }
        }
    }

    private static MobaInputException badSelection(int b, int p, int h, int slot, int value, int own, String why) {
        return new MobaInputException("forward.selected: sequence " + b + ", token " + p + ", head " + h + ", slot "
                + slot + " holds " + value + ", expected -1 or an earlier chunk in [0, " + own
                + ") in ascending order, -1 only as trailing padding" + (why.isEmpty() ? "" : " (" + why + ")"));
    }
}
