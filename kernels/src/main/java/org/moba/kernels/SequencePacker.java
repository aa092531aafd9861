package org.moba.kernels;

import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;

/**
 * Packs a stream of sequences into {@link PackedBatch}es of at most {@code tokenBudget} tokens, in arrival order,
 * never splitting a sequence. A sequence longer than the budget travels alone in a batch of its own.
 * {@link #unpack} turns a batch's results back into per-sequence results.
 */
public final class SequencePacker {
    /** A packed batch and the ids of its sequences, in batch order. */
    public record Packed(PackedBatch batch, List<String> ids) {
    }

    /** One sequence's share of a forward result. {@code selected} is {@code [L, H, width]}. */
    public record SequenceResult(String id, int length, short[] out, float[] lse, int[] selected, int selectionWidth) {
    }

    private final BatchLayout layout;
    private final int tokenBudget;

    public SequencePacker(BatchLayout layout, int tokenBudget) {
        if (tokenBudget <= 0) {
            throw new MobaInputException("token budget must be > 0, got " + tokenBudget);
        }
        this.layout = layout;
        this.tokenBudget = tokenBudget;
    }

    public int tokenBudget() {
        return tokenBudget;
    }

    /** Lazily packs {@code sequences}; each sequence is checked against the layout as it arrives. */
    public Iterator<Packed> pack(Iterator<Sequence> sequences) {
        return new Iterator<>() {
            private Sequence pending;

            @Override
            public boolean hasNext() {
                return pending != null || sequences.hasNext();
            }

            @Override
            public Packed next() {
                if (!hasNext()) {
                    throw new NoSuchElementException();
                }
                List<Sequence> group = new ArrayList<>();
                long tokens = 0;
                while (pending != null || sequences.hasNext()) {
                    Sequence s = pending != null ? pending : sequences.next();
                    pending = null;
                    layout.check(s);
                    if (!group.isEmpty() && tokens + s.length() > tokenBudget) {
                        pending = s;
                        break;
                    }
                    group.add(s);
                    tokens += s.length();
                }
                return concat(group);
            }
        };
    }

    public List<Packed> packAll(List<Sequence> sequences) {
        List<Packed> out = new ArrayList<>();
        pack(sequences.iterator()).forEachRemaining(out::add);
        return out;
    }

    /** Concatenates sequences into one batch (no budget applied). */
    public Packed concat(List<Sequence> group) {
        int[] cu = new int[group.size() + 1];
        long total = 0;
        int maxLen = 0;
        for (int i = 0; i < group.size(); i++) {
            Sequence s = group.get(i);
            layout.check(s);
            total += s.length();
            if (total > Integer.MAX_VALUE / Math.max(layout.qElementsPerToken(), 1)) {
                throw new MobaInputException("sequence '" + s.id() + "': batch of " + total
                        + " tokens exceeds the largest array a batch can hold; lower the token budget");
            }
            cu[i + 1] = (int) total;
            maxLen = Math.max(maxLen, s.length());
        }
        int t = (int) total;
        short[] q = new short[t * layout.qElementsPerToken()];
        short[] k = new short[t * layout.kvElementsPerToken()];
        short[] v = new short[t * layout.kvElementsPerToken()];
        List<String> ids = new ArrayList<>(group.size());
        for (int i = 0; i < group.size(); i++) {
            Sequence s = group.get(i);
            System.arraycopy(s.q(), 0, q, cu[i] * layout.qElementsPerToken(), s.q().length);
            System.arraycopy(s.k(), 0, k, cu[i] * layout.kvElementsPerToken(), s.k().length);
            System.arraycopy(s.v(), 0, v, cu[i] * layout.kvElementsPerToken(), s.v().length);
            ids.add(s.id());
        }
        return new Packed(PackedBatch.of(layout, cu, maxLen, q, k, v), ids);
    }

    /** Splits a forward result of {@code packed} back into one result per sequence, in batch order. */
    public static List<SequenceResult> unpack(Packed packed, MobaOutput output) {
        PackedBatch batch = packed.batch();
        int qRow = batch.heads() * batch.headDim();
        int h = batch.heads();
        int w = output.selectionWidth();
        List<SequenceResult> results = new ArrayList<>(batch.numSequences());
        for (int b = 0; b < batch.numSequences(); b++) {
            int start = batch.seqStart(b);
            int len = batch.seqLength(b);
            short[] out = new short[len * qRow];
            System.arraycopy(output.out(), start * qRow, out, 0, out.length);
            float[] lse = new float[len * h];
            System.arraycopy(output.lse(), start * h, lse, 0, lse.length);
            int[] sel = new int[len * h * w];
            if (w > 0) {
                System.arraycopy(output.selected(), start * h * w, sel, 0, sel.length);
            }
            results.add(new SequenceResult(packed.ids().get(b), len, out, lse, sel, w));
        }
        return results;
    }
}
