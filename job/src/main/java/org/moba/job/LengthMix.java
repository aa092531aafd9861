package org.moba.job;

import java.io.Serializable;
import java.util.Arrays;
import java.util.Locale;
import java.util.SplittableRandom;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.SyntheticSequences;

/**
 * A recipe for a list of sequence lengths, written as a short spec on command lines and in spec files:
 * <pre>
 *   2x65536                  2 sequences of 65,536 tokens
 *   uniform:4096:256-2048    4,096 lengths uniform in [256, 2048]
 *   lognormal:500:1024:1.0   500 lengths, log-normal with median 1,024 and sigma 1.0 (long tail)
 *   bimodal:200:128:8192:0.1 200 lengths, 10% of 8,192 tokens and the rest of 128
 *   boundary:3               lengths kC-1, kC, kC+1 for k = 1..3 (C = the chunk size)
 *   single:64                64 sequences of one token
 *   huge:100:256:65536       one sequence of 65,536 among 99 of 256
 * </pre>
 * Lengths are a pure function of the spec, the seed and the chunk size.
 */
public record LengthMix(String spec) implements Serializable {

    public LengthMix {
        spec = spec.trim();
        lengths(spec, 0, 64); // validates eagerly, with the spec named in the error
    }

    public int[] lengths(long seed, int chunkSize) {
        return lengths(spec, seed, chunkSize);
    }

    private static int[] lengths(String spec, long seed, int chunkSize) {
        String[] p = spec.toLowerCase(Locale.ROOT).split(":");
        SplittableRandom rng = new SplittableRandom(seed * 31 + spec.hashCode());
        try {
            switch (p[0]) {
                case "uniform": {
                    expectParts(spec, p, 3);
                    String[] range = p[2].split("-");
                    int lo = positive(spec, range[0], "min length");
                    int hi = positive(spec, range[1], "max length");
                    if (hi < lo) {
                        throw bad(spec, "max length " + hi + " < min length " + lo);
                    }
                    return rng.ints(count(spec, p[1]), lo, hi + 1).toArray();
                }
                case "lognormal": {
                    expectParts(spec, p, 4);
                    double median = positive(spec, p[2], "median");
                    double sigma = Double.parseDouble(p[3]);
                    int[] out = new int[count(spec, p[1])];
                    for (int i = 0; i < out.length; i++) {
                        double z = SyntheticSequences.gaussian(rng);
                        out[i] = (int) Math.max(1, Math.min(1 << 20, Math.round(median * Math.exp(sigma * z))));
                    }
                    return out;
                }
                case "bimodal": {
                    expectParts(spec, p, 5);
                    int shortLen = positive(spec, p[2], "short length");
                    int longLen = positive(spec, p[3], "long length");
                    double fraction = Double.parseDouble(p[4]);
                    return rng.doubles(count(spec, p[1])).mapToInt(u -> u < fraction ? longLen : shortLen).toArray();
                }
                case "boundary": {
                    expectParts(spec, p, 2);
                    int k = count(spec, p[1]);
                    int[] out = new int[3 * k];
                    for (int i = 1; i <= k; i++) {
                        out[3 * i - 3] = i * chunkSize - 1;
                        out[3 * i - 2] = i * chunkSize;
                        out[3 * i - 1] = i * chunkSize + 1;
                    }
                    return out;
                }
                case "single": {
                    expectParts(spec, p, 2);
                    int[] out = new int[count(spec, p[1])];
                    Arrays.fill(out, 1);
                    return out;
                }
                case "huge": {
                    expectParts(spec, p, 4);
                    int[] out = new int[count(spec, p[1])];
                    Arrays.fill(out, positive(spec, p[2], "short length"));
                    out[rng.nextInt(out.length)] = positive(spec, p[3], "huge length");
                    return out;
                }
                default: {
                    String[] nx = spec.toLowerCase(Locale.ROOT).split("x");
                    if (nx.length != 2) {
                        throw bad(spec, "unknown form");
                    }
                    int[] out = new int[count(spec, nx[0])];
                    Arrays.fill(out, Integer.parseInt(nx[1].trim()));
                    if (out.length > 0 && out[0] < 0) {
                        throw bad(spec, "negative length");
                    }
                    return out;
                }
            }
        } catch (NumberFormatException | ArrayIndexOutOfBoundsException e) {
            throw bad(spec, "cannot read a number in it (" + e.getMessage() + ")");
        }
    }

    private static void expectParts(String spec, String[] p, int n) {
        if (p.length != n) {
            throw bad(spec, "'" + p[0] + "' takes " + (n - 1) + " fields separated by ':'");
        }
    }

    private static int count(String spec, String s) {
        int n = Integer.parseInt(s.trim());
        if (n < 1) {
            throw bad(spec, "sequence count must be >= 1, got " + n);
        }
        return n;
    }

    private static int positive(String spec, String s, String what) {
        int n = Integer.parseInt(s.trim());
        if (n < 1) {
            throw bad(spec, what + " must be >= 1, got " + n);
        }
        return n;
    }

    private static MobaInputException bad(String spec, String why) {
        return new MobaInputException("length mix '" + spec + "': " + why + " (forms: NxL, uniform:N:MIN-MAX,"
                + " lognormal:N:MEDIAN:SIGMA, bimodal:N:SHORT:LONG:FRACTION, boundary:K, single:N, huge:N:SHORT:HUGE)");
    }

    @Override
    public String toString() {
        return spec;
    }
}
