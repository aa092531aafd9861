package org.moba.kernels.cpu;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.Sequence;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;

/**
 * Test inputs of the CPU backend tests ({@link CpuMobaAttentionTest}, {@link CpuBackwardTest}): every run draws new
 * seeds, printed in each case's name, so a failure can be replayed by pinning {@link #RUN_SEED}.
 */
final class CpuCases {
    static final long RUN_SEED = new SplittableRandom().nextLong();
    /** Work units that split chunks at odd offsets (the default units cover whole chunks of the test sizes). */
    static final int SMALL_BLOCK_ROWS = 7;

    private CpuCases() {
    }

    /** One test input: shape, MoBA parameters and how the tensors are drawn. */
    record Case(String what, int chunk, int topk, int headDim, int heads, int kvHeads, DType dtype,
                boolean structured, boolean dense, int[] lengths, long seed, boolean smallBlocks) {

        /** The same case, to be run on work units of {@link #SMALL_BLOCK_ROWS} rows. */
        Case withSmallBlocks() {
            return new Case(what + ", " + SMALL_BLOCK_ROWS + " rows per block", chunk, topk, headDim, heads, kvHeads,
                    dtype, structured, dense, lengths, seed, true);
        }

        BatchLayout layout() {
            return new BatchLayout(dtype, heads, kvHeads, headDim);
        }

        List<Sequence> sequences() {
            SplittableRandom rng = new SplittableRandom(seed);
            SyntheticSequences synthetic = new SyntheticSequences(seed, layout(), chunk);
            List<Sequence> sequences = new ArrayList<>();
            for (int i = 0; i < lengths.length; i++) {
                sequences.add(structured ? synthetic.generate(i, lengths[i])
                        : SyntheticSequences.random(rng, layout(), "seq" + i, lengths[i]));
            }
            return sequences;
        }

        PackedBatch batch() {
            return pack(layout(), sequences());
        }

        /** MoBA with the case's chunk and topk, or dense causal attention for a dense case. */
        MobaParams params() {
            return dense ? denseParams() : MobaParams.of(chunk, topk);
        }

        MobaParams denseParams() {
            return MobaParams.denseCausal(chunk);
        }

        /** dout drawn from the seed: standard normal values rounded to the dtype. */
        short[] dout(PackedBatch batch) {
            return randomBits(new SplittableRandom(seed ^ 0x5DEECE66DL), batch.q().length, dtype);
        }

        @Override
        public String toString() {
            return what + ": C=" + chunk + " topk=" + (dense ? "dense" : topk) + " D=" + headDim + " H/Hkv=" + heads
                    + "/" + kvHeads + " " + dtype.label() + " " + (structured ? "structured" : "iid") + " lengths="
                    + Arrays.toString(lengths) + " seed=" + seed;
        }
    }

    static PackedBatch pack(BatchLayout layout, List<Sequence> sequences) {
        return new SequencePacker(layout, Integer.MAX_VALUE).concat(sequences).batch();
    }

    private static short[] randomBits(SplittableRandom rng, int count, DType dtype) {
        short[] bits = new short[count];
        for (int i = 0; i < count; i++) {
            double g = Math.sqrt(-2 * Math.log(1 - rng.nextDouble())) * Math.cos(2 * Math.PI * rng.nextDouble());
            bits[i] = dtype.fromFloat((float) g);
        }
        return bits;
    }

    static Case mk(String what, int chunk, int topk, int headDim, int heads, int kvHeads, DType dtype,
                   boolean structured, int... lengths) {
        return mkCase(what, chunk, topk, headDim, heads, kvHeads, dtype, structured, false, lengths);
    }

    static Case mkDense(String what, int chunk, int headDim, int heads, int kvHeads, DType dtype,
                        boolean structured, int... lengths) {
        return mkCase(what, chunk, 1, headDim, heads, kvHeads, dtype, structured, true, lengths);
    }

    private static Case mkCase(String what, int chunk, int topk, int headDim, int heads, int kvHeads, DType dtype,
                               boolean structured, boolean dense, int[] lengths) {
        long seed = RUN_SEED ^ (what.hashCode() * 0x9E3779B97F4A7C15L);
        return new Case(what, chunk, topk, headDim, heads, kvHeads, dtype, structured, dense, lengths, seed, false);
    }

    /**
     * Every length kind (1, C-1, C, C+1, 3C+5, packed, empty), D 32/64/128, H/Hkv 4/4 and 8/2, C 16/64/128, topk
     * 1/2/3/8, both dtypes. Three cases hold one long sequence of the given length (the forward test affords longer
     * ones than the backward test, whose float64 oracle costs more): among empty and short ones (C 64), among short
     * ones (C 128), and cut into many chunks (C 16, topk 8).
     */
    static Stream<Case> lengthKinds(int longWithEmpty, int longAmongShort, int longManyChunks) {
        DType bf = DType.BF16;
        DType fp = DType.FP16;
        return Stream.of(
                mk("length 1", 16, 3, 32, 4, 4, bf, false, 1),
                mk("length C-1", 16, 2, 64, 8, 2, fp, true, 15),
                mk("length C, topk 1", 16, 1, 128, 4, 4, bf, true, 16),
                mk("length C+1", 16, 8, 32, 8, 2, fp, false, 17),
                mk("length 3C+5", 16, 2, 64, 4, 4, bf, false, 53),
                mk("length 3C+5, GQA, C 64", 64, 3, 128, 8, 2, bf, true, 197),
                mk("C-1, C, C+1 packed", 64, 2, 32, 4, 4, fp, true, 63, 64, 65),
                mk("short and long with empty", 64, 3, 64, 8, 2, bf, true, 0, 1, longWithEmpty, 0, 65, 129),
                mk("length 3C+5, topk 8, C 128", 128, 8, 128, 4, 4, fp, false, 389),
                mk("long among short, C 128", 128, 3, 64, 8, 2, fp, true, 5, longAmongShort, 0, 127, 257),
                mk("many chunks, topk 8", 16, 8, 32, 8, 2, bf, true, longManyChunks, 3, 0),
                mk("topk 1, two chunks", 64, 1, 64, 8, 2, fp, false, 129));
    }
}
