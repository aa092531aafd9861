package org.moba.kernels.cuda;

import org.moba.kernels.MobaInputException;

/**
 * Device scratch of one backward call (kernels/src/main/cuda/ABI.md, "# Backward", extra buffers), for
 * {@code entries = T * H * W} selection entries, {@code buckets = H * NFC} (head, full chunk) buckets and
 * {@code numGroups = ceil(T / groupTokens)} token groups. {@code delta} always; the routing buffers and
 * {@code partial_dq} only when the call is {@link #routed()} (MoBA with W > 0 and at least one full chunk).
 */
record BackwardScratch(long tokens, int heads, int selectionWidth, int headDim, long buckets, boolean routed,
                       int groupTokens, int numGroups) {
    /** ABI.md: {@code H*NFC*NG <= 2^24} cells of {@code group_count}. */
    static final long MAX_GROUP_CELLS = 1L << 24;
    /** ABI.md: {@code group_tokens} is a power of two of at least 64. */
    static final int MIN_GROUP_TOKENS = 64;

    /**
     * The scratch of a backward call with {@code plan}. Routed when MoBA selects chunks ({@code W > 0}) and the batch
     * has a full chunk ({@code NFC > 0}); otherwise (dense, {@code W == 0}, or no full chunk, where every selection
     * entry is padding) only {@code delta}.
     *
     * @throws MobaInputException when the routing's 32-bit limits cannot be met (the batch must be split)
     */
    static BackwardScratch of(BatchPlan plan, long tokens, int heads, int headDim) {
        boolean routed = !plan.dense && plan.selectionWidth > 0 && plan.numFullChunks > 0 && tokens > 0;
        if (!routed) {
            return new BackwardScratch(tokens, heads, plan.selectionWidth, headDim, 0, false, 0, 0);
        }
        long entries = tokens * heads * plan.selectionWidth;
        if (entries > AttentionPath.MAX_GATHERED_ENTRIES) {
            throw new MobaInputException("the backward's routing of T*H*W = " + tokens + "*" + heads + "*"
                    + plan.selectionWidth + " = " + entries + " selection entries exceeds its 32-bit limit "
                    + AttentionPath.MAX_GATHERED_ENTRIES + "; split the batch (e.g. halve the token budget)");
        }
        long buckets = (long) heads * plan.numFullChunks;
        int groupTokens = groupTokens(tokens, buckets);
        int numGroups = Math.toIntExact((tokens + groupTokens - 1) / groupTokens);
        return new BackwardScratch(tokens, heads, plan.selectionWidth, headDim, buckets, true, groupTokens,
                numGroups);
    }

    /**
     * ABI.md: the smallest power of two {@code >= 64} with {@code buckets * ceil(tokens / g) <= 2^24}.
     *
     * @throws MobaInputException when {@code buckets} alone exceeds {@code 2^24}
     */
    static int groupTokens(long tokens, long buckets) {
        if (buckets > MAX_GROUP_CELLS) {
            throw new MobaInputException("the backward's routing needs H*NFC = " + buckets + " (head, chunk) "
                    + "buckets, more than its limit of " + MAX_GROUP_CELLS + "; split the batch (e.g. halve the "
                    + "token budget) or use a larger chunk_size");
        }
        long g = MIN_GROUP_TOKENS;
        while (buckets * ((tokens + g - 1) / g) > MAX_GROUP_CELLS) {
            g *= 2;
        }
        return Math.toIntExact(g);
    }

    long entries() {
        return tokens * heads * selectionWidth;
    }

    /** {@code delta} float {@code [T, H]}. */
    long deltaBytes() {
        return 4L * tokens * heads;
    }

    /** {@code group_count} int {@code [H*NFC, NG]}, zeroed before counting. */
    long groupCountBytes() {
        return routed ? 4L * buckets * numGroups : 0;
    }

    /** {@code bucket_count} and {@code bucket_cursor}, each int {@code [H*NFC]}. */
    long bucketCountBytes() {
        return routed ? 4L * buckets : 0;
    }

    /** {@code bucket_row0} and {@code bucket_group0}, each int {@code [H*NFC + 1]}. */
    long bucketPrefixBytes() {
        return routed ? 4L * (buckets + 1) : 0;
    }

    /** {@code rows} int {@code [T*H*W]}. */
    long rowsBytes() {
        return routed ? 4L * entries() : 0;
    }

    /** {@code partial_dq} 16-bit {@code [T, H, W, D]} (the input dtype). */
    long partialDqBytes() {
        return routed ? 2L * entries() * headDim : 0;
    }

    long totalBytes() {
        return deltaBytes() + groupCountBytes() + 2 * bucketCountBytes() + 2 * bucketPrefixBytes() + rowsBytes()
                + partialDqBytes();
    }

    @Override
    public String toString() {
        if (!routed) {
            return totalBytes() + " bytes (delta only, not routed)";
        }
        return totalBytes() + " bytes (partial_dq " + partialDqBytes() + ", rows " + rowsBytes() + ", group_count "
                + groupCountBytes() + ", delta " + deltaBytes() + ", buckets "
                + (2 * bucketCountBytes() + 2 * bucketPrefixBytes()) + "; " + entries() + " entries, " + buckets
                + " buckets, " + numGroups + " groups of " + groupTokens + " tokens, D=" + headDim + ")";
    }
}
