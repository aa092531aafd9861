package org.moba.kernels.reference;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.TreeSet;
import java.util.stream.IntStream;
import org.moba.kernels.DType;
import org.moba.kernels.ErrorMetrics;
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
