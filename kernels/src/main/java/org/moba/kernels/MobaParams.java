package org.moba.kernels;

/**
 * The MoBA hyper-parameters of one call (docs/semantics.md "Inputs").
 *
 * @param chunkSize    C, the key chunk length (> 0)
 * @param topk         chunks attended per query, the own chunk included (>= 1)
 * @param softmaxScale the score scale; {@code NaN} means the default {@code 1/sqrt(D)}
 * @param denseCausal  attend every causal key instead (the dense baseline); no selection is produced
 */
public record MobaParams(int chunkSize, int topk, float softmaxScale, boolean denseCausal)
        implements java.io.Serializable {

    public MobaParams {
        if (chunkSize <= 0) {
            throw new MobaInputException("chunk_size must be > 0, got " + chunkSize);
        }
        if (topk < 1) {
            throw new MobaInputException("topk must be >= 1, got " + topk);
        }
        if (!Float.isNaN(softmaxScale) && !(softmaxScale > 0 && Float.isFinite(softmaxScale))) {
            throw new MobaInputException("softmax_scale must be finite and > 0, got " + softmaxScale);
        }
    }

    /** MoBA with the default softmax scale. */
    public static MobaParams of(int chunkSize, int topk) {
        return new MobaParams(chunkSize, topk, Float.NaN, false);
    }

    /** Dense causal attention, computed by the same backend (every past chunk selected). */
    public static MobaParams denseCausal(int chunkSize) {
        return new MobaParams(chunkSize, Integer.MAX_VALUE, Float.NaN, true);
    }

    public MobaParams withSoftmaxScale(float scale) {
        return new MobaParams(chunkSize, topk, scale, denseCausal);
    }

    /** The scale applied to {@code q . k}: the explicit one, or {@code 1/sqrt(headDim)}. */
    public float scale(int headDim) {
        return Float.isNaN(softmaxScale) ? (float) (1.0 / Math.sqrt(headDim)) : softmaxScale;
    }

    /** Number of chunks of a sequence of {@code length} tokens: {@code ceil(length / C)}. */
    public int chunksOf(int length) {
        return (int) ((length + (long) chunkSize - 1) / chunkSize);
    }

    /**
     * Width of the per-(token, head) selected-chunk list: {@code topk - 1}, capped by the most candidates any
     * query of the batch can have. Zero for dense attention, where no selection is produced.
     */
    public int selectionWidth(int maxSeqlen) {
        if (denseCausal) {
            return 0;
        }
        int maxCandidates = Math.max(0, chunksOf(maxSeqlen) - 1);
        return Math.min(topk - 1, maxCandidates);
    }

    @Override
    public String toString() {
        String scale = Float.isNaN(softmaxScale) ? "1/sqrt(D)" : Float.toString(softmaxScale);
        return denseCausal ? "dense causal (tile " + chunkSize + ", scale " + scale + ")"
                : "chunk " + chunkSize + ", topk " + topk + ", scale " + scale;
    }
}
