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
 * normal; blocks repeat across tensors, which does not matter for timing. Deterministic: the same seed (or generator
 * state) and the same calls give the same tensors.
 */
public final class BenchInputs {
    private static final int TAPE_ELEMENTS = 1 << 23;
    private static final int BLOCK = 4096;
    /** The tape is cut from the q, k and v of a sequence of one head of this dimension. */
    private static final int TAPE_HEAD_DIM = 64;

    private final SplittableRandom rng;
    private final short[] tape;

    /** Inputs drawn from {@code rng}, which they go on using for the offsets of the blocks. */
    BenchInputs(SplittableRandom rng, DType dtype) {
        this(rng, dtype, TAPE_ELEMENTS);
    }

    /** With a tape of at least {@code tapeElements} samples. */
    private BenchInputs(SplittableRandom rng, DType dtype, long tapeElements) {
        this.rng = rng;
        // q, k and v of a one-head sequence together make the tape: every sample drawn is used.
        BatchLayout oneHead = new BatchLayout(dtype, 1, 1, TAPE_HEAD_DIM);
        int tokens = Math.toIntExact(Math.max(1, (tapeElements + 3 * TAPE_HEAD_DIM - 1) / (3 * TAPE_HEAD_DIM)));
        Sequence s = SyntheticSequences.random(rng, oneHead, "tape", tokens);
        this.tape = new short[s.q().length + s.k().length + s.v().length];
        System.arraycopy(s.q(), 0, tape, 0, s.q().length);
        System.arraycopy(s.k(), 0, tape, s.q().length, s.k().length);
        System.arraycopy(s.v(), 0, tape, s.q().length + s.k().length, s.v().length);
    }

    /**
     * The batches of a benchmark shape: {@code lengths} split by {@link #pack} into batches of at most
     * {@code tokenBudget} tokens, each filled with random normal q, k and v of {@code layout}; a pure function of its
     * arguments. Small shapes draw a shorter tape, no longer than their largest tensor.
     */
    public static List<PackedBatch> batches(long seed, BatchLayout layout, int[] lengths, int tokenBudget) {
        List<int[]> groups = pack(lengths, tokenBudget);
        long largest = groups.stream().mapToLong(g -> Arrays.stream(g).asLongStream().sum()).max().orElse(0)
                * Math.max(layout.qElementsPerToken(), layout.kvElementsPerToken());
        BenchInputs inputs = new BenchInputs(new SplittableRandom(seed), layout.dtype(),
                Math.min(TAPE_ELEMENTS, largest));
        return groups.stream().map(group -> inputs.batch(layout, group)).toList();
    }

    /** One batch of sequences of {@code lengths}, in order, with random normal q, k and v. */
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

    /**
     * Splits {@code lengths} into consecutive groups of at most {@code tokenBudget} tokens (a longer one alone), the
     * rule of {@link org.moba.kernels.SequencePacker}.
     */
    public static List<int[]> pack(int[] lengths, int tokenBudget) {
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
