package org.moba.kernels;

import java.util.SplittableRandom;

/**
 * Deterministic synthetic q/k/v: the tensors of a sequence are a pure function of
 * {@code (seed, sequence id, length)} and the layout, so any executor regenerates the same sequence without
 * shipping tensors.
 *
 * <p>Keys carry chunk-level structure so that the gate's choices matter: the sequence is cut into segments of
 * {@code segmentLength} tokens, each segment draws one of a few "topic" directions per kv head, and its keys are
 * that topic plus noise. Queries are noise plus a random topic, so they align with some chunks' means far more
 * than with others. Values are standard normal.
 */
public final class SyntheticSequences {
    private static final int TOPICS = 16;
    private static final double TOPIC_SCALE = 1.0;
    private static final double QUERY_TOPIC_SCALE = 0.5;

    private final long seed;
    private final BatchLayout layout;
    private final int segmentLength;

    public SyntheticSequences(long seed, BatchLayout layout, int segmentLength) {
        if (segmentLength <= 0) {
            throw new MobaInputException("segment length must be > 0, got " + segmentLength);
        }
        this.seed = seed;
        this.layout = layout;
        this.segmentLength = segmentLength;
    }

    public SyntheticSequences(long seed, BatchLayout layout) {
        this(seed, layout, 64);
    }

    public BatchLayout layout() {
        return layout;
    }

    public Sequence generate(long sequenceId, int length) {
        if (length < 0) {
            throw new MobaInputException("sequence " + sequenceId + ": length must be >= 0, got " + length);
        }
        SplittableRandom rng = new SplittableRandom(mix(seed, sequenceId, length));
        int d = layout.headDim();
        int hkv = layout.kvHeads();
        int h = layout.heads();
        double[][] topics = new double[TOPICS * hkv][d];
        for (double[] topic : topics) {
            double norm = 0;
            for (int i = 0; i < d; i++) {
                topic[i] = gaussian(rng);
                norm += topic[i] * topic[i];
            }
            // Scaled to the norm of the noise (sqrt(D)): each token's topic is as strong as its noise.
            double s = Math.sqrt(d) / Math.sqrt(norm);
            for (int i = 0; i < d; i++) {
                topic[i] *= s;
            }
        }
        DType dt = layout.dtype();
        short[] q = new short[length * h * d];
        short[] k = new short[length * hkv * d];
        short[] v = new short[length * hkv * d];
        int[] segmentTopic = new int[hkv];
        for (int t = 0; t < length; t++) {
            if (t % segmentLength == 0) {
                for (int g = 0; g < hkv; g++) {
                    segmentTopic[g] = rng.nextInt(TOPICS);
                }
            }
            for (int g = 0; g < hkv; g++) {
                double[] topic = topics[g * TOPICS + segmentTopic[g]];
                int base = (t * hkv + g) * d;
                for (int i = 0; i < d; i++) {
                    k[base + i] = dt.fromFloat((float) (TOPIC_SCALE * topic[i] + gaussian(rng)));
                    v[base + i] = dt.fromFloat((float) gaussian(rng));
                }
            }
            for (int head = 0; head < h; head++) {
                int g = head / (h / hkv);
                double[] topic = topics[g * TOPICS + rng.nextInt(TOPICS)];
                int base = (t * h + head) * d;
                for (int i = 0; i < d; i++) {
                    q[base + i] = dt.fromFloat((float) (QUERY_TOPIC_SCALE * TOPIC_SCALE * topic[i] + gaussian(rng)));
                }
            }
        }
        return new Sequence(Long.toString(sequenceId), length, q, k, v);
    }

    /** Fresh i.i.d. standard normal tensors for tests and benchmarks (no structure). */
    public static Sequence random(SplittableRandom rng, BatchLayout layout, String id, int length) {
        DType dt = layout.dtype();
        short[] q = new short[length * layout.qElementsPerToken()];
        short[] k = new short[length * layout.kvElementsPerToken()];
        short[] v = new short[length * layout.kvElementsPerToken()];
        for (short[] a : new short[][] {q, k, v}) {
            for (int i = 0; i < a.length; i++) {
                a[i] = dt.fromFloat((float) gaussian(rng));
            }
        }
        return new Sequence(id, length, q, k, v);
    }

    private static long mix(long seed, long id, int length) {
        long h = seed * 0x9E3779B97F4A7C15L + id;
        h = (h ^ (h >>> 31)) * 0xBF58476D1CE4E5B9L + length;
        h = (h ^ (h >>> 29)) * 0x94D049BB133111EBL;
        return h ^ (h >>> 32);
    }

    /** One standard normal draw. */
    public static double gaussian(SplittableRandom rng) {
        // Box-Muller; SplittableRandom has no nextGaussian on Java 17.
        double u1 = 1.0 - rng.nextDouble();
        double u2 = rng.nextDouble();
        return Math.sqrt(-2.0 * Math.log(u1)) * Math.cos(2.0 * Math.PI * u2);
    }
}
