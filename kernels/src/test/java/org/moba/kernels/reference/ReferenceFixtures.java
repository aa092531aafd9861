package org.moba.kernels.reference;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.Sequence;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;

/** Inputs and an independent brute-force attention for the oracle's tests. */
final class ReferenceFixtures {
    private ReferenceFixtures() {
    }

    /** Which local key positions {@code j} query {@code p} of sequence {@code b}, head {@code h} attends. */
    interface KeyMask {
        boolean attends(int b, int p, int h, int j);
    }

    /** Brute-force result: {@code out [T, H, D]}, {@code lse [T, H]}. */
    record Attention(double[] out, double[] lse) {
    }

    static List<Sequence> randomSequences(long seed, BatchLayout layout, int... lengths) {
        SplittableRandom rng = new SplittableRandom(seed);
        List<Sequence> sequences = new ArrayList<>();
        for (int i = 0; i < lengths.length; i++) {
            sequences.add(SyntheticSequences.random(rng, layout, "seq" + i, lengths[i]));
        }
        return sequences;
    }

    static PackedBatch randomBatch(long seed, BatchLayout layout, int... lengths) {
        return pack(layout, randomSequences(seed, layout, lengths));
    }

    static PackedBatch pack(BatchLayout layout, List<Sequence> sequences) {
        return new SequencePacker(layout, Integer.MAX_VALUE).concat(sequences).batch();
    }

    static BatchLayout layout(int heads, int kvHeads) {
        return new BatchLayout(DType.BF16, heads, kvHeads, 32);
    }

    static double[] gaussians(SplittableRandom rng, int count) {
        double[] a = new double[count];
        for (int i = 0; i < count; i++) {
            // Box-Muller
            a[i] = Math.sqrt(-2 * Math.log(1 - rng.nextDouble())) * Math.cos(2 * Math.PI * rng.nextDouble());
        }
        return a;
    }

    /** A float64 batch of i.i.d. normal values with sequences of the given lengths. */
    static VarlenDoubles randomDoubles(long seed, int heads, int kvHeads, int headDim, int... lengths) {
        int[] cu = new int[lengths.length + 1];
        for (int i = 0; i < lengths.length; i++) {
            cu[i + 1] = cu[i] + lengths[i];
        }
        int tokens = cu[lengths.length];
        SplittableRandom rng = new SplittableRandom(seed);
        return new VarlenDoubles(cu, heads, kvHeads, headDim, gaussians(rng, tokens * heads * headDim),
                gaussians(rng, tokens * kvHeads * headDim), gaussians(rng, tokens * kvHeads * headDim));
    }

    /**
     * Textbook masked softmax attention, one query at a time over the whole sequence with the mask applied to the
     * score list: written without any of the oracle's key-list machinery.
     */
    static Attention bruteForce(VarlenDoubles x, double scale, KeyMask mask) {
        int heads = x.heads();
        int d = x.headDim();
        double[] out = new double[x.totalTokens() * heads * d];
        double[] lse = new double[x.totalTokens() * heads];
        for (int b = 0; b < x.numSequences(); b++) {
            int start = x.seqStart(b);
            for (int p = 0; p < x.seqLength(b); p++) {
                for (int h = 0; h < heads; h++) {
                    int g = h / (heads / x.kvHeads());
                    int qRow = ((start + p) * heads + h) * d;
                    double[] scores = new double[x.seqLength(b)];
                    Arrays.fill(scores, Double.NEGATIVE_INFINITY);
                    for (int j = 0; j < x.seqLength(b); j++) {
                        if (mask.attends(b, p, h, j)) {
                            double s = 0;
                            for (int i = 0; i < d; i++) {
                                s += x.q()[qRow + i] * x.k()[((start + j) * x.kvHeads() + g) * d + i];
                            }
                            scores[j] = scale * s;
                        }
                    }
                    double max = Arrays.stream(scores).max().orElseThrow();
                    double sum = 0;
                    for (int j = 0; j < scores.length; j++) {
                        double w = Math.exp(scores[j] - max);
                        sum += w;
                        for (int i = 0; i < d; i++) {
                            out[qRow + i] += w * x.v()[((start + j) * x.kvHeads() + g) * d + i];
                        }
                    }
                    for (int i = 0; i < d; i++) {
                        out[qRow + i] /= sum;
                    }
                    lse[(start + p) * heads + h] = max + Math.log(sum);
                }
            }
        }
        return new Attention(out, lse);
    }

    static KeyMask causal() {
        return (b, p, h, j) -> j <= p;
    }

    static KeyMask ownChunkOnly(int chunkSize) {
        return (b, p, h, j) -> j <= p && j >= p / chunkSize * chunkSize;
    }

    /**
     * MoBA's key set from its definition by ranks: candidate chunk {@code j < c} is selected when fewer than
     * {@code topk - 1} candidates beat it (a higher score, or an equal score at a lower index).
     */
    static KeyMask mobaByRank(VarlenDoubles x, int chunkSize, int topk) {
        int heads = x.heads();
        int d = x.headDim();
        boolean[][][] selected = new boolean[x.totalTokens()][heads][];
        for (int b = 0; b < x.numSequences(); b++) {
            int start = x.seqStart(b);
            for (int p = 0; p < x.seqLength(b); p++) {
                int c = p / chunkSize;
                for (int h = 0; h < heads; h++) {
                    int g = h / (heads / x.kvHeads());
                    double[] scores = new double[c];
                    for (int j = 0; j < c; j++) {
                        for (int i = 0; i < d; i++) {
                            double sum = 0;
                            for (int pos = j * chunkSize; pos < (j + 1) * chunkSize; pos++) {
                                sum += x.k()[((start + pos) * x.kvHeads() + g) * d + i];
                            }
                            scores[j] += x.q()[((start + p) * heads + h) * d + i] * (sum / chunkSize);
                        }
                    }
                    boolean[] chosen = new boolean[c];
                    for (int j = 0; j < c; j++) {
                        int beaten = 0;
                        for (int i = 0; i < c; i++) {
                            if (scores[i] > scores[j] || (scores[i] == scores[j] && i < j)) {
                                beaten++;
                            }
                        }
                        chosen[j] = beaten < topk - 1;
                    }
                    selected[start + p][h] = chosen;
                }
            }
        }
        return (b, p, h, j) -> j <= p && (j / chunkSize == p / chunkSize
                || (j / chunkSize < p / chunkSize && selected[x.seqStart(b) + p][h][j / chunkSize]));
    }
}
