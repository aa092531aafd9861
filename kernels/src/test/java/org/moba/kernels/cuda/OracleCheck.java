package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.Arrays;
import java.util.SplittableRandom;
import java.util.TreeSet;
import java.util.stream.IntStream;

import org.moba.kernels.DType;
import org.moba.kernels.ErrorMetrics;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.reference.MobaReference;
import org.moba.kernels.reference.OracleComparison;

/**
 * Compares a backend's forward output with the float64 oracle: relative L2 of out and lse, and the selection,
 * which may differ only on near-ties (the oracle's gate runs in float64, the kernel's in fp32). Rows whose
 * selection legitimately differs are left out of the out/lse errors, and counted.
 */
final class OracleCheck {
    static final double LSE_TOLERANCE = OracleComparison.LSE_TOLERANCE;
    static final double NEAR_TIE = OracleComparison.NEAR_TIE;
    /** Batches with more tokens are checked on sampled rows only (the oracle is slow), plus structurally. */
    static final int FULL_ORACLE_MAX_TOKENS = 8192;
    static final int SAMPLED_ROWS = 1536;

    /** What one comparison found. */
    record Result(double outError, double lseError, int rowsCompared, int nearTies) {
        @Override
        public String toString() {
            return String.format("out rel L2 %.3e, lse rel L2 %.3e, %d (token, head) rows, %d near-ties",
                    outError, lseError, rowsCompared, nearTies);
        }
    }

    private OracleCheck() {
    }

    static double outTolerance(DType dtype) {
        return OracleComparison.outTolerance(dtype);
    }

    /** Asserts tolerances and returns the measurements; {@code label} and the seed go into every message. */
    static Result assertMatchesOracle(PackedBatch batch, MobaParams params, MobaOutput actual, String label,
                                      SplittableRandom rng) {
        assertWellFormed(batch, params, actual, label);
        int[] tokens = rowsToCheck(batch, params, rng);
        MobaReference.Forward ref = MobaReference.forwardRows(batch, params, tokens);
        assertEquals(ref.selectionWidth(), actual.selectionWidth(), label + ": selection width");
        int h = batch.heads();
        int d = batch.headDim();
        int w = actual.selectionWidth();
        double[] gpuOut = ErrorMetrics.toDouble(actual.out(), batch.dtype());
        double[] refOutKept = new double[tokens.length * h * d];
        double[] gpuOutKept = new double[refOutKept.length];
        double[] refLseKept = new double[tokens.length * h];
        double[] gpuLseKept = new double[refLseKept.length];
        int kept = 0;
        int nearTies = 0;
        for (int i = 0; i < tokens.length; i++) {
            int t = tokens[i];
            for (int head = 0; head < h; head++) {
                int row = i * h + head;
                int[] want = Arrays.copyOfRange(ref.selected(), row * w, row * w + w);
                int[] got = Arrays.copyOfRange(actual.selected(), (t * h + head) * w, (t * h + head) * w + w);
                if (!Arrays.equals(want, got)) {
                    if (ref.selectionMargin()[row] < NEAR_TIE) {
                        nearTies++;
                        continue;
                    }
                    fail(label + ": token " + t + " (sequence " + batch.sequenceOf(t) + ", position "
                            + (t - batch.seqStart(batch.sequenceOf(t))) + "), head " + head + " selected "
                            + Arrays.toString(got) + ", oracle " + Arrays.toString(want) + " (gate margin "
                            + ref.selectionMargin()[row] + ")");
                }
                System.arraycopy(ref.out(), row * d, refOutKept, kept * d, d);
                System.arraycopy(gpuOut, (t * h + head) * d, gpuOutKept, kept * d, d);
                refLseKept[kept] = ref.lse()[row];
                gpuLseKept[kept] = actual.lse()[t * h + head];
                kept++;
            }
        }
        double outError = ErrorMetrics.relativeL2(Arrays.copyOf(refOutKept, kept * d),
                Arrays.copyOf(gpuOutKept, kept * d));
        double lseError = ErrorMetrics.relativeL2(Arrays.copyOf(refLseKept, kept), Arrays.copyOf(gpuLseKept, kept));
        Result result = new Result(outError, lseError, kept, nearTies);
        System.out.println(label + ": " + result + "; " + actual.timings());
        double outTolerance = outTolerance(batch.dtype());
        assertTrue(outError < outTolerance, label + ": out error " + outError + " >= " + outTolerance);
        assertTrue(lseError < LSE_TOLERANCE, label + ": lse error " + lseError + " >= " + LSE_TOLERANCE);
        return result;
    }

    /** Every token of small batches; for large ones each sequence's chunk edges, ends and random rows. */
    static int[] rowsToCheck(PackedBatch batch, MobaParams params, SplittableRandom rng) {
        int total = batch.totalTokens();
        return OracleComparison.sampleRows(batch, params, total <= FULL_ORACLE_MAX_TOKENS ? total : SAMPLED_ROWS, rng);
    }

    /**
     * Checks every row, not just the sampled ones: out and lse finite (outputs were poisoned with NaN), and each
     * selection lists exactly min(topk - 1, own chunk) distinct earlier chunks in ascending order, then -1s.
     */
    static void assertWellFormed(PackedBatch batch, MobaParams params, MobaOutput actual, String label) {
        int h = batch.heads();
        int d = batch.headDim();
        int w = actual.selectionWidth();
        assertEquals((long) batch.totalTokens() * h * d, actual.out().length, label + ": out length");
        assertEquals((long) batch.totalTokens() * h, actual.lse().length, label + ": lse length");
        assertEquals((long) batch.totalTokens() * h * w, actual.selected().length, label + ": selection length");
        DType dtype = batch.dtype();
        for (int i = 0; i < actual.out().length; i++) {
            if (!Float.isFinite(dtype.toFloat(actual.out()[i]))) {
                fail(label + ": out not finite at token " + i / (h * d) + ", head " + i / d % h + ", dim " + i % d
                        + " (unwritten or overflowed)");
            }
        }
        for (int i = 0; i < actual.lse().length; i++) {
            if (!Float.isFinite(actual.lse()[i])) {
                fail(label + ": lse not finite at token " + i / h + ", head " + i % h);
            }
        }
        for (int t = 0; t < batch.totalTokens(); t++) {
            int own = (t - batch.seqStart(batch.sequenceOf(t))) / params.chunkSize();
            int expectedCount = params.denseCausal() ? 0 : Math.min(params.topk() - 1, own);
            for (int head = 0; head < h; head++) {
                int base = (t * h + head) * w;
                int previous = -1;
                for (int j = 0; j < w; j++) {
                    int chunk = actual.selected()[base + j];
                    boolean ok = j < expectedCount ? chunk > previous && chunk < own : chunk == -1;
                    if (!ok) {
                        fail(label + ": token " + t + ", head " + head + ": malformed selection "
                                + Arrays.toString(Arrays.copyOfRange(actual.selected(), base, base + w))
                                + " for own chunk " + own + " (expected " + expectedCount
                                + " ascending earlier chunks, then -1; -2 means never written)");
                    }
                    previous = chunk;
                }
            }
        }
    }
}
