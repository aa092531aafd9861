package org.moba.kernels.cuda;

import java.util.function.LongSupplier;

/**
 * How the attention phase of a call runs (kernels/src/main/cuda/ABI.md sections 3 and 4), chosen per call by
 * {@link #choose}, the only place that decides it.
 */
public enum AttentionPath {
    /**
     * {@code moba_attn_fwd}: each 64-row query tile walks its own chunk plus the union of its rows' selected chunks.
     * Used for dense attention, for own-chunk-only MoBA (W == 0), where it is estimated to cost less than GATHERED
     * (short sequences: few past chunks per row), and as the fallback when the gathered scratch does not fit.
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
    /**
     * What one (query row, key) pair of the selected-chunk kernel costs, in pairs of the mma.sync union kernel's
     * walk, on the mma.sync engine. Measured on an H100 (docs/perf.md, "Path by cost"): the gathered path pays the
     * routing, a 16-bit partial written and read back per (row, chunk), and a latency-bound kernel; fitted on
     * 512 sequences of 256..2048 tokens (chunk 128, topk 4: union 17.7 ms, gathered 20.1 ms) and FlashMoBA 2x8K
     * (union 2.55 ms, gathered 1.46 ms).
     */
    static final double GATHERED_PAIR_COST = 3.0;
    /**
     * The same on the wgmma engine, which runs the gathered pair for chunks of {@link MobaKernels#MIN_WIDE_GATHERED_CHUNK}
     * keys and more (1.6x faster than mma.sync at chunk 4096) and, on the persistent kernel, for chunks of
     * {@link MobaKernels#MAX_RESIDENT_CHUNK} or fewer (FlashMoBA 2x64K attention 7.9 ms against 11.6 ms on the mma.sync
     * kernel the 3.0 above was fitted on: 1.5x).
     */
    static final double WIDE_GATHERED_PAIR_COST = GATHERED_PAIR_COST / 1.6;
    /**
     * A pair of the wgmma union walk ({@code moba_attn_union_h}), in the same units. Predicted from the dense kernels'
     * ratio on the many-short shape (13.8 against 19.7 ms), then measured on an H100: the union walk of 512 short
     * sequences took 12.13 ms on wgmma against 17.67 ms on mma.sync (0.69; docs/perf.md, "wgmma union walk").
     */
    static final double WIDE_UNION_PAIR_COST = 0.70;

    /**
     * The cost of one (row, key) pair of each MoBA kernel on a call's engine, in mma.sync union pairs: the union
     * walk, the gathered path's own-chunk walk and its selected-chunk kernel.
     */
    record PairCosts(double union, double own, double gathered) {
        static final PairCosts MMA_SYNC = new PairCosts(1.0, 1.0, GATHERED_PAIR_COST);

        /** The costs of the kernels {@code kernels} runs for chunks of {@code chunkSize} keys. */
        static PairCosts of(MobaKernels kernels, int chunkSize) {
            boolean wideGathered = kernels.gatheredOnWgmma(chunkSize);
            return new PairCosts(kernels.unionOnWgmma(chunkSize) ? WIDE_UNION_PAIR_COST : 1.0,
                    wideGathered ? WIDE_UNION_PAIR_COST : 1.0,
                    wideGathered ? WIDE_GATHERED_PAIR_COST : GATHERED_PAIR_COST);
        }
    }

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
     * The path of one call: dense or W == 0 -> UNION; W > 0 -> {@code forced} when not null, else UNION when its
     * estimated cost is lower ({@link #unionCostsLess}), else GATHERED unless its scratch exceeds
     * {@link #GATHERED_BUDGET_FRACTION} of {@code availableBytes} (queried only then) or the entries exceed the ABI's
     * 32-bit limit, then UNION. A forced GATHERED past the 32-bit limit still gets UNION. {@code costs}: what a pair
     * of each path costs on the engine this call runs ({@link PairCosts#of}).
     */
    static Choice choose(BatchPlan plan, long tokens, int heads, int headDim, AttentionPath forced,
                         LongSupplier availableBytes, PairCosts costs) {
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
        if (unionCostsLess(plan, costs)) {
            return new Choice(UNION, scratch, -1, String.format("union walk estimated cheaper: %.2f x %d (row, key)"
                    + " pairs against %.0f for gathered (%.2f x %d own-chunk + %.1f x %d selected)", costs.union(),
                    plan.unionKeyRows, gatheredCost(plan, costs), costs.own(), plan.ownKeyRows, costs.gathered(),
                    plan.gatheredKeyRows));
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

    /**
     * Whether the union walk is estimated to cost less than the gathered path: its (row, key) pairs against the
     * gathered path's own-chunk pairs plus its selected-chunk pairs, each at its kernel's cost. The union estimate
     * assumes unrelated selections across a tile's rows (the worst case for the union), so a coherent selection that
     * makes the union cheaper can only be underrated.
     */
    static boolean unionCostsLess(BatchPlan plan, PairCosts costs) {
        return costs.union() * plan.unionKeyRows < gatheredCost(plan, costs);
    }

    private static double gatheredCost(BatchPlan plan, PairCosts costs) {
        return costs.own() * plan.ownKeyRows + costs.gathered() * plan.gatheredKeyRows;
    }
}
