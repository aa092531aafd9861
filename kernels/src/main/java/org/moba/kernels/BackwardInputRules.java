package org.moba.kernels;

/**
 * The rules every backend applies to a backward call's inputs, with one wording of their messages (the field, its
 * value and what was expected): {@code dout} and the forward's out, lse and selection sized for the batch, the
 * forward's selection width that of the parameters ({@link #checkSizes}), and each row of the selection one the
 * backward can route ({@link #checkSelectionRow}).
 */
public final class BackwardInputRules {
    private BackwardInputRules() {
    }

    /** An array's length, or -1 when it is missing (what {@link #checkLength} reads as missing). */
    public static long length(short[] a) {
        return a == null ? -1 : a.length;
    }

    public static long length(float[] a) {
        return a == null ? -1 : a.length;
    }

    public static long length(int[] a) {
        return a == null ? -1 : a.length;
    }

    /** {@code field} has {@code expected} elements ({@code formula} names them); {@code actual} -1 is missing. */
    public static void checkLength(String field, long actual, long expected, String formula) {
        if (actual < 0) {
            throw new MobaInputException(field + " is missing (expected " + formula + " = " + expected
                    + " elements)");
        }
        if (actual != expected) {
            throw new MobaInputException(field + " has " + actual + " elements, expected " + formula + " = "
                    + expected);
        }
    }

    /**
     * {@code dout} and the forward's out, lse and selection (their lengths, -1 where missing) have the batch's shapes
     * and the forward's selection width is what {@code params} give for the batch. The batch and params must be
     * present, the forward itself too.
     */
    public static void checkSizes(PackedBatch batch, MobaParams params, long doutLength, long outLength,
                                  long lseLength, int forwardWidth, long selectedLength) {
        long rows = (long) batch.totalTokens() * batch.heads();
        int width = params.selectionWidth(batch.maxSeqlen());
        checkLength("dout", doutLength, batch.q().length, "T*H*D");
        checkLength("forward.out", outLength, batch.q().length, "T*H*D");
        checkLength("forward.lse", lseLength, rows, "T*H");
        if (forwardWidth != width) {
            throw new MobaInputException("forward.selectionWidth is " + forwardWidth + ", expected "
                    + width + " for " + params + " and max_seqlen = " + batch.maxSeqlen()
                    + " (was the forward run with other parameters?)");
        }
        checkLength("forward.selected", selectedLength, rows * width, "T*H*selectionWidth");
    }

    /**
     * One (token, head) row of a selection, {@code selected[base .. base + width)}: each entry -1 or an earlier chunk
     * of the token's sequence (below {@code own}, the token's own chunk), ascending, -1 only as trailing padding. An
     * entry out of range would send a backward outside its chunk arrays.
     *
     * @param sequence the row's sequence, {@code position} its token within it and {@code head} its head, for the
     *                 message
     */
    public static void checkSelectionRow(int[] selected, int base, int width, int own, int sequence, int position,
                                         int head) {
        int previous = -1;
        for (int i = 0; i < width; i++) {
            int j = selected[base + i];
            if (j == -1) {
                for (int rest = i + 1; rest < width; rest++) {
                    if (selected[base + rest] != -1) {
                        throw badSelection(sequence, position, head, rest, selected[base + rest], own,
                                "padding -1 before it");
                    }
                }
                return;
            }
            if (j <= previous || j >= own) {
                throw badSelection(sequence, position, head, i, j, own,
                        previous >= 0 ? "after chunk " + previous : "");
            }
            previous = j;
        }
    }

    private static MobaInputException badSelection(int b, int p, int h, int slot, int value, int own, String why) {
        return new MobaInputException("forward.selected: sequence " + b + ", token " + p + ", head " + h + ", slot "
                + slot + " holds " + value + ", expected -1 or an earlier chunk in [0, " + own
                + ") in ascending order, -1 only as trailing padding" + (why.isEmpty() ? "" : " (" + why + ")"));
    }
}
