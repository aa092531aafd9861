package org.moba.kernels.cuda;

/**
 * Device scratch of the gathered MoBA path (kernels/src/main/cuda/ABI.md, scratch table), for
 * {@code buckets = H * NFC} (head, full chunk) buckets and {@code entries = T * H * W} selection entries.
 */
record GatheredScratch(long buckets, long entries, int headDim) {
    static GatheredScratch of(long tokens, int heads, int selectionWidth, int headDim, int numFullChunks) {
        return new GatheredScratch((long) heads * numFullChunks, tokens * heads * selectionWidth, headDim);
    }

    /** {@code bucket_count} int {@code [H*NFC]}, zeroed before counting. */
    long bucketCountBytes() {
        return 4L * buckets;
    }

    /** {@code bucket_row0} and {@code bucket_group0}, each int {@code [H*NFC + 1]}. */
    long bucketPrefixBytes() {
        return 4L * (buckets + 1);
    }

    /** {@code bucket_cursor} int {@code [H*NFC]}. */
    long bucketCursorBytes() {
        return 4L * buckets;
    }

    /** {@code rows} int {@code [T*H*W]}. */
    long rowsBytes() {
        return 4L * entries;
    }

    /** {@code partial_o} 16-bit {@code [T, H, W, D]} (the input dtype). */
    long partialOutBytes() {
        return 2L * entries * headDim;
    }

    /** {@code partial_lse} float {@code [T, H, W]}. */
    long partialLseBytes() {
        return 4L * entries;
    }

    long totalBytes() {
        return bucketCountBytes() + 2 * bucketPrefixBytes() + bucketCursorBytes() + rowsBytes() + partialOutBytes()
                + partialLseBytes();
    }

    @Override
    public String toString() {
        return totalBytes() + " bytes (partial_o " + partialOutBytes() + ", partial_lse " + partialLseBytes()
                + ", rows " + rowsBytes() + ", buckets " + (bucketCountBytes() + 2 * bucketPrefixBytes()
                + bucketCursorBytes()) + "; " + entries + " entries, " + buckets + " buckets, D=" + headDim + ")";
    }
}
