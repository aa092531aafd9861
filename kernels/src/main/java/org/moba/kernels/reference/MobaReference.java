package org.moba.kernels.reference;

import java.util.Arrays;
import java.util.stream.IntStream;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;

/**
 * The float64 oracle: MoBA forward and backward exactly as docs/semantics.md defines them, gate included, written for
 * clarity rather than speed. Every backend is tested against it.
 *
 * <p>Two deliberate differences from a backend: the gate runs in float64 rather than fp32 (so on near-ties a backend
 * may legitimately choose differently; {@link Forward#selectionMargin} tells which queries are that close), and the
 * outputs stay in float64. Rows are independent, so they are computed in parallel.
 */
public final class MobaReference {
    /** Marks {@code selected} entries no row wrote; every row overwrites its whole slot. */
    private static final int UNWRITTEN = Integer.MIN_VALUE;

    /**
     * @param out             {@code [rows, H, D]}
     * @param lse             {@code [rows, H]} natural log of the softmax denominator of the scaled scores
     * @param selected        {@code [rows, H, selectionWidth]} selected local chunk indices, ascending, padded with -1
     * @param selectionWidth  {@link MobaParams#selectionWidth(int)} of the batch's max_seqlen
     * @param selectionMargin {@code [rows, H]} relative gap between the weakest selected and the strongest unselected
     *                        gate score; {@code +Inf} when the choice does not depend on the scores (no candidate was
     *                        left out, or topk == 1, or dense attention)
     */
    public record Forward(double[] out, double[] lse, int[] selected, int selectionWidth, double[] selectionMargin) {
    }

    /** {@code dq [T, H, D]}, {@code dk, dv [T, Hkv, D]}. */
    public record Gradients(double[] dq, double[] dk, double[] dv) {
    }

    private MobaReference() {
    }

    /** Every token; the selection width follows the batch's declared max_seqlen. */
    public static Forward forward(PackedBatch batch, MobaParams params) {
        return forwardRows(VarlenDoubles.of(batch), params, batch.maxSeqlen(), allTokens(batch.totalTokens()));
    }

    /** Every token; the selection width follows the longest sequence. */
    public static Forward forward(VarlenDoubles x, MobaParams params) {
        return forwardRows(x, params, x.maxSeqlen(), allTokens(x.totalTokens()));
    }

    /** Only the listed global tokens (all heads); arrays are [tokens.length, H, ...]. For sampling long sequences. */
    public static Forward forwardRows(PackedBatch batch, MobaParams params, int[] tokens) {
        for (int i = 0; i < tokens.length; i++) {
            if (tokens[i] < 0 || tokens[i] >= batch.totalTokens()) {
                throw new MobaInputException("tokens[" + i + "] = " + tokens[i] + " is outside the batch's "
                        + batch.totalTokens() + " tokens");
            }
        }
        return forwardRows(VarlenDoubles.of(batch), params, batch.maxSeqlen(), tokens);
    }

    public static Gradients backward(PackedBatch batch, MobaParams params, double[] dout) {
        return backward(VarlenDoubles.of(batch), params, dout);
    }

    /**
     * As {@link #backward(PackedBatch, MobaParams, double[])}, with the forward and backward run on a given selection
     * ({@code [T, H, selectionWidth]}, ascending, padded with -1; a backend's) instead of the float64 gate's: compares
     * a backend's gradients without gate near-ties (fp32 vs float64 scores) making the attended sets differ. The
     * selection is trusted, not checked.
     */
    public static Gradients backward(PackedBatch batch, MobaParams params, double[] dout, int[] selected,
                                     int selectionWidth) {
        VarlenDoubles x = VarlenDoubles.of(batch);
        if (params.denseCausal()) {
            return backward(x, params, dout);
        }
        long expected = (long) x.totalTokens() * x.heads() * selectionWidth;
        if (selected.length != expected) {
            throw new MobaInputException("selected has " + selected.length + " elements, expected T*H*width = "
                    + expected);
        }
        return backward(x, params, dout, new QueryPlanner(x, params, selected, selectionWidth));
    }

    /**
     * Gradients of {@code sum(out * dout)} with the selection held fixed (no gradient through the gate). Work is split
     * by (sequence, query head), each unit adding into dk/dv rows of its own query head; those are then summed over
     * each kv head's group in head order, so the result is deterministic.
     */
    public static Gradients backward(VarlenDoubles x, MobaParams params, double[] dout) {
        return backward(x, params, dout, new QueryPlanner(x, params));
    }

    private static Gradients backward(VarlenDoubles x, MobaParams params, double[] dout, QueryPlanner planner) {
        int heads = x.heads();
        int d = x.headDim();
        long expected = (long) x.totalTokens() * heads * d;
        if (dout.length != expected) {
            throw new MobaInputException("dout has " + dout.length + " elements, expected T*H*D = " + expected);
        }
        Forward forward = forwardRows(x, params, x.maxSeqlen(), allTokens(x.totalTokens()), planner);
        double scale = params.scale(d);
        double[] dq = poisoned(dout.length);
        double[] dkPerQueryHead = new double[dout.length];
        double[] dvPerQueryHead = new double[dout.length];
        IntStream.range(0, x.numSequences() * heads).parallel().forEach(unit -> {
            int b = unit / heads;
            int h = unit % heads;
            for (int t = x.seqStart(b); t < x.seqStart(b) + x.seqLength(b); t++) {
                AttentionRow.backward(x, t, h, planner.plan(t, h).keys(), scale, forward.out(),
                        forward.lse()[t * heads + h], dout, dq, dkPerQueryHead, dvPerQueryHead, heads, h);
            }
        });
        return new Gradients(dq, sumOverGroups(x, dkPerQueryHead), sumOverGroups(x, dvPerQueryHead));
    }

    /** {@code [T, H, D]} to {@code [T, Hkv, D]}: kv head {@code g} gets the sum of its query heads, in head order. */
    private static double[] sumOverGroups(VarlenDoubles x, double[] perQueryHead) {
        int d = x.headDim();
        double[] summed = new double[x.totalTokens() * x.kvHeads() * d];
        for (int t = 0; t < x.totalTokens(); t++) {
            for (int h = 0; h < x.heads(); h++) {
                int from = (t * x.heads() + h) * d;
                int to = (t * x.kvHeads() + x.kvHeadOf(h)) * d;
                for (int i = 0; i < d; i++) {
                    summed[to + i] += perQueryHead[from + i];
                }
            }
        }
        return summed;
    }

    private static Forward forwardRows(VarlenDoubles x, MobaParams params, int maxSeqlen, int[] tokens) {
        return forwardRows(x, params, maxSeqlen, tokens, new QueryPlanner(x, params));
    }

    private static Forward forwardRows(VarlenDoubles x, MobaParams params, int maxSeqlen, int[] tokens,
                                       QueryPlanner planner) {
        int heads = x.heads();
        int d = x.headDim();
        int width = params.selectionWidth(maxSeqlen);
        int rows = tokens.length * heads;
        double[] out = poisoned(rows * d);
        double[] lse = poisoned(rows);
        double[] margin = poisoned(rows);
        int[] selected = new int[rows * width];
        Arrays.fill(selected, UNWRITTEN);
        // The float scale MobaParams gives, widened: every backend multiplies by this same number.
        double scale = params.scale(d);
        IntStream.range(0, rows).parallel().forEach(row -> {
            int token = tokens[row / heads];
            int h = row % heads;
            QueryPlanner.QueryPlan plan = planner.plan(token, h);
            lse[row] = AttentionRow.forward(x, token, h, plan.keys(), scale, out, row * d);
            margin[row] = plan.choice().margin();
            int[] chunks = plan.choice().chunks();
            for (int i = 0; i < width; i++) {
                selected[row * width + i] = i < chunks.length ? chunks[i] : -1;
            }
        });
        return new Forward(out, lse, selected, width, margin);
    }

    private static int[] allTokens(int count) {
        return IntStream.range(0, count).toArray();
    }

    /** NaN-filled, so an element no row writes cannot pass a comparison. */
    private static double[] poisoned(int length) {
        double[] a = new double[length];
        Arrays.fill(a, Double.NaN);
        return a;
    }
}
