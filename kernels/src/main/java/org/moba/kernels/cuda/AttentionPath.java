package org.moba.kernels.cuda;

import java.util.function.LongSupplier;

/**
 * How the attention phase of a call runs (kernels/src/main/cuda/ABI.md sections 3 and 4), chosen per call by
 * {@link #choose}, the only place that decides it.
 */
public enum AttentionPath {
    /**
     * {@code moba_attn_fwd}: each 64-row query tile walks its own chunk plus the union of its rows' selected chunks.
     * Used for dense attention, for own-chunk-only MoBA (W == 0), and as the fallback when the gathered scratch does
     * not fit.
     */
    UNION,
    /**
     * MoBA with W > 0: the selection is routed into (head, chunk) buckets, {@code moba_attn_selected} attends each
     * bucket's rows to that one chunk (writing per-entry partials), {@code moba_attn_own_combine} adds the own chunk
     * and merges. Needs {@link GatheredScratch} on the device.
     */
    GATHERED;

    /** Share of the device memory available at the time of a call that the gathered scratch may take. */
    static final double GATHERED_BUDGET_FRACTION = 0.25;
    /** ABI.md: the routing (the gathered forward's and the backward's) indexes its {@code T*H*W} entries in 32 bits. */
    static final long MAX_GATHERED_ENTRIES = (1L << 31) - 1;

    /** A call's path, the gathered scratch it would need (null without a selection) and why. */
    record Choice(AttentionPath path, GatheredScratch scratch, long budgetBytes, String reason) {
        /** Whether MoBA with a selection runs on UNION because the gathered path did not fit (not forced). */
        boolean fellBack() {
            return path == UNION && scratch != null && budgetBytes >= 0;
        }

        /** Device bytes of the gathered scratch this call allocates (0 on UNION). */
        long scratchBytes() {
            return path == GATHERED ? scratch.totalBytes() : 0;
        }
    }

    /**
     * The path of one call: dense or W == 0 -> UNION; W > 0 -> {@code forced} when not null, else GATHERED unless
     * its scratch exceeds {@link #GATHERED_BUDGET_FRACTION} of {@code availableBytes} (queried only then) or the
     * entries exceed the ABI's 32-bit limit, then UNION. A forced GATHERED past the 32-bit limit still gets UNION.
     */
    static Choice choose(BatchPlan plan, long tokens, int heads, int headDim, AttentionPath forced,
                         LongSupplier availableBytes) {
        if (plan.dense) {
            return new Choice(UNION, null, -1, "dense causal");
        }
        if (plan.selectionWidth == 0) {
            return new Choice(UNION, null, -1, "no query selects chunks (W = 0)");
        }
        GatheredScratch scratch = GatheredScratch.of(tokens, heads, plan.selectionWidth, headDim,
                plan.numFullChunks);
        if (scratch.entries() > MAX_GATHERED_ENTRIES) {
            return new Choice(UNION, scratch, 0, "T*H*W = " + scratch.entries() + " entries, beyond the gathered "
                    + "path's 32-bit limit " + MAX_GATHERED_ENTRIES);
        }
        if (forced != null) {
            return new Choice(forced, scratch, -1, "forced " + forced);
        }
        long available = availableBytes.getAsLong();
        long budget = (long) (available * GATHERED_BUDGET_FRACTION);
        if (scratch.totalBytes() > budget) {
            return new Choice(UNION, scratch, budget, "gathered scratch of " + scratch + " exceeds the budget of "
                    + budget + " bytes (" + Math.round(GATHERED_BUDGET_FRACTION * 100) + "% of " + available
                    + " bytes available)");
        }
        return new Choice(GATHERED, scratch, budget, "gathered scratch " + scratch.totalBytes() + " bytes within "
                + "the budget of " + budget + " bytes");
    }
}
