package org.moba.kernels.reference;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.TreeSet;
import java.util.stream.IntStream;
import org.moba.kernels.DType;
import org.moba.kernels.ErrorMetrics;
import org.moba.kernels.MobaGradients;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;

/**
 * Compares a backend's forward output with the float64 oracle, per sequence: relative L2 and max abs error of out
 * and lse, and the selection. A selection may differ from the oracle's only on a near-tie (the oracle's gate is
 * float64, the backends' fp32); such rows are counted and left out of the errors, since a legitimately different
 * chunk set changes the output. Any other difference is a selection mismatch and stays in the errors.
 */
public final class OracleComparison {
    /** Relative gate-score gap below which an fp32 gate may order two chunks either way. */
    public static final double NEAR_TIE = 1e-6;

    /** Relative L2 tolerance of a 16-bit output against the oracle. */
    public static double outTolerance(DType dtype) {
        return dtype == DType.FP16 ? 2e-3 : 1e-2;
    }

    /** Relative L2 tolerance of lse (fp32) against the oracle. */
    public static final double LSE_TOLERANCE = 1e-5;

    /** Relative L2 tolerance of 16-bit gradients (dq, dk, dv) against the oracle's backward. */
    public static double gradientTolerance(DType dtype) {
        return dtype == DType.FP16 ? 5e-3 : 2e-2;
    }

    /**
     * Floors of the denominator of a sequence's relative gradient error, as shares of (a) the batch's gradient norm
     * scaled to the sequence's size and (b) dout's RMS times sqrt(elements): dq and dk are sums of terms
     * {@code P * (dP - delta)} that cancel to exactly zero in some cases (every one-token sequence), where a relative
     * error would judge rounding noise against zero.
     */
    static final double GRADIENT_NORM_FLOOR = 1e-2;
    static final double GRADIENT_ABSOLUTE_FLOOR = 1e-3;

    /**
     * One sequence's gradient errors: relative L2 (against {@code max(||ref_seq||, GRADIENT_NORM_FLOOR * ||ref_batch|| *
     * sqrt(n_seq / n_batch), GRADIENT_ABSOLUTE_FLOOR * rms(dout) * sqrt(elements))}) and max abs error of dq, dk and dv
     * over all its tokens.
     */
    public record GradientErrors(int sequence, double dqRelL2, double dqMaxAbs, double dkRelL2, double dkMaxAbs,
                                 double dvRelL2, double dvMaxAbs) {

        public boolean passes(DType dtype) {
            double t = gradientTolerance(dtype);
            return dqRelL2 < t && dkRelL2 < t && dvRelL2 < t;
        }
    }

    /** One sequence's errors over its compared (token, head) rows. */
    public record SequenceErrors(int sequence, int tokensCompared, int rowsCompared, double outRelL2,
                                 double outMaxAbs, double lseRelL2, double lseMaxAbs, int selectionMismatches,
                                 int nearTies) {

        public boolean passes(DType dtype) {
            return outRelL2 < outTolerance(dtype) && lseRelL2 < LSE_TOLERANCE && selectionMismatches == 0;
        }
    }

    private OracleComparison() {
    }

    /**
     * Rows the oracle checks: every token when the batch has at most {@code maxRows}; otherwise each sequence's
     * chunk edges and ends, then random tokens up to {@code maxRows}. Sorted ascending.
     */
    public static int[] sampleRows(PackedBatch batch, MobaParams params, int maxRows, SplittableRandom rng) {
        int total = batch.totalTokens();
        if (total <= maxRows) {
            return IntStream.range(0, total).toArray();
        }
        TreeSet<Integer> rows = new TreeSet<>();
        int c = params.chunkSize();
        for (int b = 0; b < batch.numSequences(); b++) {
            int start = batch.seqStart(b);
            int length = batch.seqLength(b);
            for (int edge : new int[] {0, 1, c - 1, c, c + 1, 2 * c - 1, length - c - 1, length - 2, length - 1}) {
                if (edge >= 0 && edge < length && rows.size() < maxRows) {
                    rows.add(start + edge);
                }
            }
        }
        while (rows.size() < maxRows) {
            rows.add(rng.nextInt(total));
        }
        return rows.stream().mapToInt(Integer::intValue).toArray();
    }

    /**
     * Compares a backend's gradients with the oracle's backward run on the backend's own selection (so gate near-ties
     * cannot make the attended sets differ), per sequence with at least one token.
     */
    public static List<GradientErrors> compareGradients(PackedBatch batch, MobaParams params, MobaOutput forward,
                                                        short[] dout, MobaGradients actual) {
        DType dtype = batch.dtype();
        double[] doutWide = ErrorMetrics.toDouble(dout, dtype);
        MobaReference.Gradients ref = MobaReference.backward(batch, params, doutWide, forward.selected(),
                forward.selectionWidth());
        double[][] refs = {ref.dq(), ref.dk(), ref.dv()};
        double[][] got = {ErrorMetrics.toDouble(actual.dq(), dtype), ErrorMetrics.toDouble(actual.dk(), dtype),
                ErrorMetrics.toDouble(actual.dv(), dtype)};
        int[] rowElems = {batch.heads() * batch.headDim(), batch.kvHeads() * batch.headDim(),
                batch.kvHeads() * batch.headDim()};
        double doutRms = norm(doutWide) / Math.sqrt(Math.max(1, doutWide.length));
        double[] batchNorm = new double[3];
        for (int g = 0; g < 3; g++) {
            batchNorm[g] = norm(refs[g]);
        }
        List<GradientErrors> out = new ArrayList<>();
        for (int b = 0; b < batch.numSequences(); b++) {
            int length = batch.seqLength(b);
            if (length == 0) {
                continue;
            }
            double[] e = new double[6];
            for (int g = 0; g < 3; g++) {
                int from = batch.seqStart(b) * rowElems[g];
                int to = from + length * rowElems[g];
                double[] r = Arrays.copyOfRange(refs[g], from, to);
                double[] a = Arrays.copyOfRange(got[g], from, to);
                double floor = Math.max(
                        GRADIENT_NORM_FLOOR * batchNorm[g] * Math.sqrt((double) length / batch.totalTokens()),
                        GRADIENT_ABSOLUTE_FLOOR * doutRms * Math.sqrt(r.length));
                double own = norm(r);
                // maxAbs is +Inf when either side holds a NaN or an infinity, and so is the relative error then.
                e[2 * g + 1] = ErrorMetrics.maxAbs(r, a);
                e[2 * g] = !Double.isFinite(e[2 * g + 1]) ? Double.POSITIVE_INFINITY
                        : own >= floor ? ErrorMetrics.relativeL2(r, a) : diffNorm(r, a) / floor;
            }
            out.add(new GradientErrors(b, e[0], e[1], e[2], e[3], e[4], e[5]));
        }
        return out;
    }

    private static double diffNorm(double[] reference, double[] actual) {
        double s = 0;
        for (int i = 0; i < reference.length; i++) {
            s += (actual[i] - reference[i]) * (actual[i] - reference[i]);
        }
        return Math.sqrt(s);
    }

    private static double norm(double[] x) {
        double s = 0;
        for (double v : x) {
            s += v * v;
        }
        return Math.sqrt(s);
    }

    /** Compares {@code actual} with the oracle on {@code rows} (ascending global tokens), grouped by sequence. */
    public static List<SequenceErrors> compare(PackedBatch batch, MobaParams params, MobaOutput actual, int[] rows) {
        MobaReference.Forward ref = MobaReference.forwardRows(batch, params, rows);
        int h = batch.heads();
        int d = batch.headDim();
        int w = actual.selectionWidth();
        if (ref.selectionWidth() != w) {
            throw new IllegalStateException("selection width " + w + " differs from the oracle's "
                    + ref.selectionWidth());
        }
        List<SequenceErrors> out = new ArrayList<>();
        int i = 0;
        while (i < rows.length) {
            int sequence = batch.sequenceOf(rows[i]);
            int end = i;
            while (end < rows.length && batch.sequenceOf(rows[end]) == sequence) {
                end++;
            }
            out.add(compareSequence(batch.dtype(), sequence, ref, actual, rows, i, end, h, d, w));
            i = end;
        }
        return out;
    }

    private static SequenceErrors compareSequence(DType dtype, int sequence, MobaReference.Forward ref,
                                                  MobaOutput actual, int[] rows, int from, int to, int h, int d,
                                                  int w) {
        int n = (to - from) * h;
        double[] refOut = new double[n * d];
        double[] gotOut = new double[n * d];
        double[] refLse = new double[n];
        double[] gotLse = new double[n];
        int kept = 0;
        int mismatches = 0;
        int nearTies = 0;
        for (int i = from; i < to; i++) {
            int t = rows[i];
            for (int head = 0; head < h; head++) {
                int refRow = i * h + head;
                int gotRow = t * h + head;
                if (!Arrays.equals(ref.selected(), refRow * w, refRow * w + w, actual.selected(), gotRow * w,
                        gotRow * w + w)) {
                    if (ref.selectionMargin()[refRow] < NEAR_TIE) {
                        nearTies++;
                        continue;
                    }
                    mismatches++;
                }
                System.arraycopy(ref.out(), refRow * d, refOut, kept * d, d);
                for (int j = 0; j < d; j++) {
                    gotOut[kept * d + j] = dtype.toFloat(actual.out()[gotRow * d + j]);
                }
                refLse[kept] = ref.lse()[refRow];
                gotLse[kept] = actual.lse()[gotRow];
                kept++;
            }
        }
        double[] ro = Arrays.copyOf(refOut, kept * d);
        double[] go = Arrays.copyOf(gotOut, kept * d);
        double[] rl = Arrays.copyOf(refLse, kept);
        double[] gl = Arrays.copyOf(gotLse, kept);
        return new SequenceErrors(sequence, to - from, kept, ErrorMetrics.relativeL2(ro, go),
                ErrorMetrics.maxAbs(ro, go), ErrorMetrics.relativeL2(rl, gl), ErrorMetrics.maxAbs(rl, gl),
                mismatches, nearTies);
    }
}
