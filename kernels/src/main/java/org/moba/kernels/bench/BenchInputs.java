package org.moba.kernels.bench;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.Sequence;
import org.moba.kernels.SyntheticSequences;

/**
 * Random normal batches for timing, built fast enough for billions of elements: a tape of a few million normal
 * samples is drawn once, and tensors are filled with blocks copied from random offsets of it. Every block is
 * normal; blocks repeat across tensors, which does not matter for timing.
 */
final class BenchInputs {
    private static final int TAPE_ELEMENTS = 1 << 23;
    private static final int BLOCK = 4096;

    private final SplittableRandom rng;
    private final short[] tape;

    BenchInputs(SplittableRandom rng, DType dtype) {
        this.rng = rng;
        BatchLayout oneHead = new BatchLayout(dtype, 1, 1, 64);
        Sequence s = SyntheticSequences.random(rng, oneHead, "tape", TAPE_ELEMENTS / 64);
        this.tape = s.q();
    }

    PackedBatch batch(BatchLayout layout, int[] lengths) {
        int[] cu = new int[lengths.length + 1];
        int max = 0;
        for (int i = 0; i < lengths.length; i++) {
            cu[i + 1] = Math.addExact(cu[i], lengths[i]);
            max = Math.max(max, lengths[i]);
        }
        long tokens = cu[lengths.length];
        return PackedBatch.of(layout, cu, max, fill(tokens * layout.qElementsPerToken()),
                fill(tokens * layout.kvElementsPerToken()), fill(tokens * layout.kvElementsPerToken()));
    }

    /** A random normal tensor of {@code elements} values (e.g. {@code dout} of a batch). */
    short[] tensor(long elements) {
        return fill(elements);
    }

    private short[] fill(long elements) {
        short[] a = new short[Math.toIntExact(elements)];
        for (int at = 0; at < a.length; at += BLOCK) {
            int n = Math.min(BLOCK, a.length - at);
            System.arraycopy(tape, rng.nextInt(tape.length - n + 1), a, at, n);
        }
        return a;
    }

    /** Splits {@code lengths} into consecutive groups of at most {@code tokenBudget} tokens (a longer one alone). */
    static List<int[]> pack(int[] lengths, int tokenBudget) {
        List<int[]> groups = new ArrayList<>();
        int from = 0;
        long tokens = 0;
        for (int i = 0; i < lengths.length; i++) {
            if (i > from && tokens + lengths[i] > tokenBudget) {
                groups.add(Arrays.copyOfRange(lengths, from, i));
                from = i;
                tokens = 0;
            }
            tokens += lengths[i];
        }
        if (from < lengths.length) {
            groups.add(Arrays.copyOfRange(lengths, from, lengths.length));
        }
        return groups;
    }
}
