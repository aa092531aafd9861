package org.moba.kernels.reference;

import static org.junit.jupiter.api.Assertions.assertAll;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.IntStream;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.ErrorMetrics;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.Sequence;

/**
 * The oracle's forward semantics (docs/semantics.md), checked against brute force, hand arithmetic and its own
 * symmetries.
 */
class MobaReferenceTest {
    /** Two float64 evaluations of the same formula in different summation orders. */
    private static final double FLOAT64_TOLERANCE = 1e-12;

    private static void assertClose(String what, double[] expected, double[] actual) {
        double error = ErrorMetrics.relativeL2(expected, actual);
        assertTrue(error < FLOAT64_TOLERANCE, what + ": relative L2 error " + error);
    }

    /** Every slot written: no NaN left from the poisoning, no unwritten selection entry. */
    private static void assertFullyWritten(MobaReference.Forward f) {
        assertAll(
                () -> assertTrue(Arrays.stream(f.out()).allMatch(Double::isFinite), "out has unwritten/NaN entries"),
                () -> assertTrue(Arrays.stream(f.lse()).allMatch(Double::isFinite), "lse has unwritten/NaN entries"),
                () -> assertTrue(Arrays.stream(f.selectionMargin()).noneMatch(Double::isNaN), "margin unwritten"),
                () -> assertTrue(Arrays.stream(f.selected()).allMatch(c -> c >= -1), "selected unwritten"));
    }

    static Stream<Arguments> oneChunkBatches() {
        return Stream.of(
                Arguments.of("single token", 16, 3, new int[] {1}),
                Arguments.of("C-1, C and zero-length packed", 16, 3, new int[] {15, 0, 16, 7}),
                Arguments.of("odd chunk, many short", 13, 8, new int[] {13, 1, 12, 5, 13}));
    }

    @ParameterizedTest(name = "L <= C: {0} (C={1}, topk={2}) equals dense causal")
    @MethodSource("oneChunkBatches")
    void mobaEqualsDenseCausalWhenEverySequenceFitsOneChunk(String label, int chunk, int topk, int[] lengths) {
        PackedBatch batch = ReferenceFixtures.randomBatch(lengths.length * 31L + chunk, ReferenceFixtures.layout(4, 2),
                lengths);
        MobaParams params = MobaParams.of(chunk, topk);
        MobaReference.Forward moba = assertForwardEquals(batch, params, ReferenceFixtures.causal());
        assertEquals(0, moba.selectionWidth(), "one chunk leaves no candidates");
    }

    static Stream<Arguments> multiChunkBatches() {
        return Stream.of(
                Arguments.of("kC-1, kC, kC+1", 8, new int[] {23, 24, 25}),
                Arguments.of("long among short, zero-length", 16, new int[] {3, 0, 97, 1, 16}),
                Arguments.of("single long", 5, new int[] {61}));
    }

    @ParameterizedTest(name = "topk >= chunks: {0} (C={1}) equals dense causal and selects every past chunk")
    @MethodSource("multiChunkBatches")
    void mobaEqualsDenseCausalWhenTopkCoversEveryChunk(String label, int chunk, int[] lengths) {
        PackedBatch batch = ReferenceFixtures.randomBatch(chunk * 7L + lengths.length, ReferenceFixtures.layout(2, 2),
                lengths);
        int chunks = MobaParams.of(chunk, 1).chunksOf(batch.maxSeqlen());
        MobaParams params = MobaParams.of(chunk, chunks);
        MobaReference.Forward moba = assertForwardEquals(batch, params, ReferenceFixtures.causal());
        int width = moba.selectionWidth();
        assertEquals(chunks - 1, width);
        for (int t = 0; t < batch.totalTokens(); t++) {
            int ownChunk = (t - batch.seqStart(batch.sequenceOf(t))) / chunk;
            for (int h = 0; h < batch.heads(); h++) {
                int[] row = Arrays.copyOfRange(moba.selected(), (t * batch.heads() + h) * width,
                        (t * batch.heads() + h + 1) * width);
                int[] expected = IntStream.range(0, width).map(i -> i < ownChunk ? i : -1).toArray();
                assertArrayEquals(expected, row, "token " + t + " head " + h);
                assertEquals(Double.POSITIVE_INFINITY, moba.selectionMargin()[t * batch.heads() + h]);
            }
        }
    }

    @ParameterizedTest(name = "topk == 1: {0} (C={1}) attends the own chunk's causal prefix only")
    @MethodSource("multiChunkBatches")
    void topkOneAttendsOwnChunkOnly(String label, int chunk, int[] lengths) {
        PackedBatch batch = ReferenceFixtures.randomBatch(chunk * 11L + lengths.length, ReferenceFixtures.layout(4, 1),
                lengths);
        MobaParams params = MobaParams.of(chunk, 1);
        MobaReference.Forward moba = assertForwardEquals(batch, params, ReferenceFixtures.ownChunkOnly(chunk));
        assertEquals(0, moba.selectionWidth());
    }

    @ParameterizedTest(name = "dense causal mode: {0} (tile {1}) equals brute-force causal attention")
    @MethodSource("multiChunkBatches")
    void denseCausalModeEqualsCausalAttention(String label, int chunk, int[] lengths) {
        PackedBatch batch = ReferenceFixtures.randomBatch(chunk * 13L + lengths.length, ReferenceFixtures.layout(2, 1),
                lengths);
        MobaParams params = MobaParams.denseCausal(chunk);
        MobaReference.Forward dense = assertForwardEquals(batch, params, ReferenceFixtures.causal());
        assertEquals(0, dense.selectionWidth());
        assertEquals(0, dense.selected().length);
    }

    /**
     * The oracle's forward of {@code batch}, checked to write every output and to equal brute-force attention over
     * the keys {@code mask} admits.
     */
    private static MobaReference.Forward assertForwardEquals(PackedBatch batch, MobaParams params,
                                                             ReferenceFixtures.KeyMask mask) {
        MobaReference.Forward forward = MobaReference.forward(batch, params);
        ReferenceFixtures.Attention expected = ReferenceFixtures.bruteForce(VarlenDoubles.of(batch),
                params.scale(batch.headDim()), mask);
        assertFullyWritten(forward);
        assertClose("out", expected.out(), forward.out());
        assertClose("lse", expected.lse(), forward.lse());
        return forward;
    }

    static Stream<Arguments> mobaCases() {
        return Stream.of(
                Arguments.of(8, 3, 4, 2, new int[] {70, 0, 9, 33}),
                Arguments.of(4, 2, 2, 2, new int[] {41, 17}),
                Arguments.of(16, 4, 4, 1, new int[] {129, 64, 15}),
                Arguments.of(3, 5, 2, 1, new int[] {50, 1, 2}));
    }

    @ParameterizedTest(name = "C={0}, topk={1}, H={2}, Hkv={3}, lengths {4}: equals the rank definition of the gate")
    @MethodSource("mobaCases")
    void mobaEqualsBruteForceGateAndMaskedAttention(int chunk, int topk, int heads, int kvHeads, int[] lengths) {
        PackedBatch batch = ReferenceFixtures.randomBatch(chunk * 1000L + topk * 10L + heads,
                ReferenceFixtures.layout(heads, kvHeads), lengths);
        MobaParams params = MobaParams.of(chunk, topk);
        MobaReference.Forward moba = MobaReference.forward(batch, params);
        VarlenDoubles x = VarlenDoubles.of(batch);
        ReferenceFixtures.Attention expected = ReferenceFixtures.bruteForce(x, params.scale(batch.headDim()),
                ReferenceFixtures.mobaByRank(x, chunk, topk));
        ReferenceFixtures.Attention dense = ReferenceFixtures.bruteForce(x, params.scale(batch.headDim()),
                ReferenceFixtures.causal());
        assertFullyWritten(moba);
        assertClose("out", expected.out(), moba.out());
        assertClose("lse", expected.lse(), moba.lse());
        assertTrue(ErrorMetrics.relativeL2(dense.out(), moba.out()) > 1e-3,
                "the case must exercise a real selection (differ from dense)");
        for (int row = 0; row < moba.lse().length; row++) {
            // recall exp(lse_moba - lse_dense) is in (0, 1] (docs/semantics.md): MoBA keeps part of the dense softmax
            // mass
            assertTrue(moba.lse()[row] <= dense.lse()[row] + 1e-12, "recall > 1 at row " + row);
        }
    }

    /**
     * C = 2, L = 5, D = 2, H = 1, topk = 2, softmax scale 1. Chunks: {0,1}, {2,3}, {4} (partial).
     * k0 = k1 = (1,0) so mu0 = (1,0); k2 = k3 = (0,1) so mu1 = (0,1); k4 = (1,1).
     * v0 = (2,0), v1 = (0,2), v2 = (1,0), v3 = (0,1), v4 = (0,0).
     */
    @Test
    void handComputedTinyCase() {
        double[] q = {1, 0, /* p1 */ 0, 1, /* p2 */ 1, 0, /* p3 */ 0, 0, /* p4 */ 1, 3};
        double[] k = {1, 0, 1, 0, 0, 1, 0, 1, 1, 1};
        double[] v = {2, 0, 0, 2, 1, 0, 0, 1, 0, 0};
        VarlenDoubles x = new VarlenDoubles(new int[] {0, 5}, 1, 1, 2, q, k, v);
        MobaReference.Forward f = MobaReference.forward(x, MobaParams.of(2, 2).withSoftmaxScale(1f));
        double e = Math.E;
        double[] expectedOut = {
            // p0: keys {0}; out = v0, lse = q0.k0 = 1
            2, 0,
            // p1: keys {0,1}, scores q1.k = 0, 0 -> uniform: (v0 + v1) / 2 = (1,1), lse = log 2
            1, 1,
            // p2: own chunk 1, only candidate chunk 0 is selected (nothing left out): keys {0,1,2},
            //     scores 1, 1, 0 -> (e*v0 + e*v1 + v2) / (2e + 1) = (2e + 1, 2e) / (2e + 1), lse = log(2e + 1)
            1, 2 * e / (2 * e + 1),
            // p3: keys {0,1,2,3}, scores all 0 -> (v0+v1+v2+v3)/4 = (3/4, 3/4), lse = log 4
            0.75, 0.75,
            // p4: own chunk 2, gate: q4.mu0 = 1, q4.mu1 = 3 -> chunk 1 wins; keys {2,3,4}, scores 3, 3, 4
            //     -> (e^3 v2 + e^3 v3 + e^4 v4) / (2e^3 + e^4) = (1,1) / (2 + e), lse = 3 + log(2 + e)
            1 / (2 + e), 1 / (2 + e)};
        double[] expectedLse = {1, Math.log(2), Math.log(2 * e + 1), Math.log(4), 3 + Math.log(2 + e)};
        assertClose("out", expectedOut, f.out());
        assertClose("lse", expectedLse, f.lse());
        // W = min(topk - 1, chunks(5) - 1) = 1
        assertEquals(1, f.selectionWidth());
        assertArrayEquals(new int[] {-1, -1, 0, 0, 1}, f.selected());
        // p4's margin: (weakest selected 3 - strongest unselected 1) / max(3, 1) = 2/3; elsewhere nothing left out
        double inf = Double.POSITIVE_INFINITY;
        assertArrayEquals(new double[] {inf, inf, inf, inf, 2.0 / 3}, f.selectionMargin(), 1e-15);
    }

    @Test
    void exactTiesAmongAllChunksGoToTheLowestIndices() {
        int chunk = 4;
        int topk = 3;
        VarlenDoubles random = ReferenceFixtures.randomDoubles(5, 2, 1, 8, 5 * chunk + 3);
        double[] k = random.k().clone();
        int rowLength = random.kvHeads() * random.headDim();
        for (int pos = chunk; pos < 5 * chunk; pos++) {
            // every full chunk gets chunk 0's keys, so every query sees all candidate scores exactly equal
            System.arraycopy(k, (pos % chunk) * rowLength, k, pos * rowLength, rowLength);
        }
        VarlenDoubles x = random.withTensors(random.q(), k, random.v());
        MobaReference.Forward f = MobaReference.forward(x, MobaParams.of(chunk, topk));
        assertEquals(2, f.selectionWidth());
        for (int t = 0; t < x.totalTokens(); t++) {
            int ownChunk = t / chunk;
            for (int h = 0; h < x.heads(); h++) {
                int row = t * x.heads() + h;
                int[] expected = ownChunk == 0 ? new int[] {-1, -1}
                        : ownChunk == 1 ? new int[] {0, -1} : new int[] {0, 1};
                assertArrayEquals(expected, Arrays.copyOfRange(f.selected(), row * 2, row * 2 + 2), "token " + t);
                assertEquals(ownChunk >= 3 ? 0.0 : Double.POSITIVE_INFINITY, f.selectionMargin()[row],
                        "margin of an exact tie is 0, of a full selection +Inf; token " + t);
            }
        }
    }

    @Test
    void exactTieBetweenTheTwoStrongestChunksGoesToTheLowerIndex() {
        int chunk = 4;
        VarlenDoubles random = ReferenceFixtures.randomDoubles(17, 3, 1, 8, 6 * chunk);
        int d = random.headDim();
        double[] pattern = Arrays.copyOf(random.k(), chunk * d);
        double[] k = random.k().clone();
        for (int pos = 0; pos < 6 * chunk; pos++) {
            // chunks 1, 3 (and 5) hold the pattern, chunks 0, 2 (and 4) its negation: exact score ties +-s
            double sign = (pos / chunk) % 2 == 1 ? 1 : -1;
            for (int i = 0; i < d; i++) {
                k[pos * d + i] = sign * pattern[(pos % chunk) * d + i];
            }
        }
        VarlenDoubles x = random.withTensors(random.q(), k, random.v());
        MobaReference.Forward f = MobaReference.forward(x, MobaParams.of(chunk, 2));
        double[] patternMean = new double[d];
        for (int pos = 0; pos < chunk; pos++) {
            for (int i = 0; i < d; i++) {
                patternMean[i] += pattern[pos * d + i] / chunk;
            }
        }
        int checked = 0;
        for (int t = 4 * chunk; t < 5 * chunk; t++) {
            for (int h = 0; h < x.heads(); h++) {
                double s = 0;
                for (int i = 0; i < d; i++) {
                    s += x.q()[(t * x.heads() + h) * d + i] * patternMean[i];
                }
                // candidates 0..3: the pattern chunks 1 and 3 tie at +s, chunks 0 and 2 tie at -s
                int expected = s > 0 ? 1 : 0;
                assertEquals(expected, f.selected()[t * x.heads() + h], "token " + t + ", head " + h + ", s = " + s);
                checked += s > 0 ? 1 : 0;
            }
        }
        assertTrue(checked > 0 && checked < chunk * x.heads(), "both signs of s must occur; positives: " + checked);
    }

    @Test
    void packingGivesWhatEachSequenceGivesAlone() {
        int chunk = 8;
        BatchLayout layout = ReferenceFixtures.layout(4, 2);
        int[] lengths = {0, 1, chunk - 1, chunk, chunk + 1, 0, 3 * chunk + 5, 2};
        List<Sequence> sequences = ReferenceFixtures.randomSequences(23, layout, lengths);
        MobaParams params = MobaParams.of(chunk, 3);
        PackedBatch packed = ReferenceFixtures.pack(layout, sequences);
        MobaReference.Forward together = MobaReference.forward(packed, params);
        assertFullyWritten(together);
        int heads = layout.heads();
        int d = layout.headDim();
        int width = together.selectionWidth();
        for (int b = 0; b < sequences.size(); b++) {
            PackedBatch single = ReferenceFixtures.pack(layout, List.of(sequences.get(b)));
            MobaReference.Forward alone = MobaReference.forward(single, params);
            int start = packed.seqStart(b);
            int rows = lengths[b] * heads;
            String which = "sequence " + b + " (length " + lengths[b] + ")";
            assertArrayEquals(alone.out(), Arrays.copyOfRange(together.out(), start * heads * d,
                    start * heads * d + rows * d), which + " out");
            assertArrayEquals(alone.lse(), Arrays.copyOfRange(together.lse(), start * heads, start * heads + rows),
                    which + " lse");
            assertArrayEquals(alone.selectionMargin(), Arrays.copyOfRange(together.selectionMargin(), start * heads,
                    start * heads + rows), which + " margin");
            for (int row = 0; row < rows; row++) {
                for (int i = 0; i < width; i++) {
                    int expected = i < alone.selectionWidth() ? alone.selected()[row * alone.selectionWidth() + i] : -1;
                    assertEquals(expected, together.selected()[(start * heads + row) * width + i],
                            which + " selected, row " + row + ", slot " + i);
                }
            }
        }
    }

    @Test
    void forwardRowsEqualsTheSameRowsOfForward() {
        int chunk = 8;
        PackedBatch batch = ReferenceFixtures.randomBatch(29, ReferenceFixtures.layout(4, 2), 45, 0, 17, 64);
        MobaParams params = MobaParams.of(chunk, 3);
        MobaReference.Forward full = MobaReference.forward(batch, params);
        SplittableRandom rng = new SplittableRandom(3);
        int[] tokens = IntStream.concat(IntStream.of(0, 44, 45, 61, 62, batch.totalTokens() - 1, 7, 7),
                IntStream.generate(() -> rng.nextInt(batch.totalTokens())).limit(20)).toArray();
        MobaReference.Forward rows = MobaReference.forwardRows(batch, params, tokens);
        int heads = batch.heads();
        int d = batch.headDim();
        int width = full.selectionWidth();
        assertEquals(width, rows.selectionWidth());
        assertFullyWritten(rows);
        for (int i = 0; i < tokens.length; i++) {
            int t = tokens[i];
            String which = "token " + t;
            assertArrayEquals(Arrays.copyOfRange(full.out(), t * heads * d, (t + 1) * heads * d),
                    Arrays.copyOfRange(rows.out(), i * heads * d, (i + 1) * heads * d), which + " out");
            assertArrayEquals(Arrays.copyOfRange(full.lse(), t * heads, (t + 1) * heads),
                    Arrays.copyOfRange(rows.lse(), i * heads, (i + 1) * heads), which + " lse");
            assertArrayEquals(Arrays.copyOfRange(full.selected(), t * heads * width, (t + 1) * heads * width),
                    Arrays.copyOfRange(rows.selected(), i * heads * width, (i + 1) * heads * width), which + " sel");
            assertArrayEquals(Arrays.copyOfRange(full.selectionMargin(), t * heads, (t + 1) * heads),
                    Arrays.copyOfRange(rows.selectionMargin(), i * heads, (i + 1) * heads), which + " margin");
        }
    }

    @Test
    void selectionWidthFollowsTheDeclaredMaxSeqlen() {
        PackedBatch exact = ReferenceFixtures.randomBatch(37, ReferenceFixtures.layout(2, 1), 20, 9);
        // max_seqlen may be an upper bound (docs/semantics.md); a backend sizes its selection from the declared value
        PackedBatch loose = PackedBatch.of(exact.layout(), exact.cuSeqlens(), 40, exact.q(), exact.k(), exact.v());
        MobaParams params = MobaParams.of(4, 8);
        MobaReference.Forward tight = MobaReference.forward(exact, params);
        MobaReference.Forward wide = MobaReference.forward(loose, params);
        assertEquals(params.selectionWidth(20), tight.selectionWidth());
        assertEquals(params.selectionWidth(40), wide.selectionWidth());
        assertTrue(wide.selectionWidth() > tight.selectionWidth(), "the case must widen the selection");
        for (int row = 0; row < tight.lse().length; row++) {
            for (int i = 0; i < wide.selectionWidth(); i++) {
                int expected = i < tight.selectionWidth() ? tight.selected()[row * tight.selectionWidth() + i] : -1;
                assertEquals(expected, wide.selected()[row * wide.selectionWidth() + i], "row " + row + ", slot " + i);
            }
        }
        assertArrayEquals(tight.out(), wide.out());
    }

    @Test
    void gqaEqualsMhaWithRepeatedKvHeads() {
        int heads = 4;
        int kvHeads = 2;
        int group = heads / kvHeads;
        PackedBatch gqa = ReferenceFixtures.randomBatch(41, ReferenceFixtures.layout(heads, kvHeads), 37, 0, 20);
        int d = gqa.headDim();
        int tokens = gqa.totalTokens();
        short[] k = new short[tokens * heads * d];
        short[] v = new short[tokens * heads * d];
        for (int t = 0; t < tokens; t++) {
            for (int h = 0; h < heads; h++) {
                System.arraycopy(gqa.k(), (t * kvHeads + h / group) * d, k, (t * heads + h) * d, d);
                System.arraycopy(gqa.v(), (t * kvHeads + h / group) * d, v, (t * heads + h) * d, d);
            }
        }
        PackedBatch mha = PackedBatch.of(ReferenceFixtures.layout(heads, heads), gqa.cuSeqlens(), gqa.maxSeqlen(),
                gqa.q(), k, v);
        MobaParams params = MobaParams.of(8, 3);
        MobaReference.Forward fg = MobaReference.forward(gqa, params);
        MobaReference.Forward fm = MobaReference.forward(mha, params);
        assertAll(
                () -> assertArrayEquals(fm.out(), fg.out(), "out"),
                () -> assertArrayEquals(fm.lse(), fg.lse(), "lse"),
                () -> assertArrayEquals(fm.selected(), fg.selected(), "selected"),
                () -> assertArrayEquals(fm.selectionMargin(), fg.selectionMargin(), "margin"));

        double[] dout = ReferenceFixtures.gaussians(new SplittableRandom(43), tokens * heads * d);
        MobaReference.Gradients gg = MobaReference.backward(gqa, params, dout);
        MobaReference.Gradients gm = MobaReference.backward(mha, params, dout);
        double[] dkSummed = new double[tokens * kvHeads * d];
        double[] dvSummed = new double[tokens * kvHeads * d];
        for (int t = 0; t < tokens; t++) {
            for (int h = 0; h < heads; h++) {
                for (int i = 0; i < d; i++) {
                    dkSummed[(t * kvHeads + h / group) * d + i] += gm.dk()[(t * heads + h) * d + i];
                    dvSummed[(t * kvHeads + h / group) * d + i] += gm.dv()[(t * heads + h) * d + i];
                }
            }
        }
        assertClose("dq", gm.dq(), gg.dq());
        assertClose("dk summed over the group", dkSummed, gg.dk());
        assertClose("dv summed over the group", dvSummed, gg.dv());
    }

    @Test
    void badArgumentsAreRejectedWithTheValueNamed() {
        PackedBatch batch = ReferenceFixtures.randomBatch(1, ReferenceFixtures.layout(2, 1), 5, 3);
        MobaParams params = MobaParams.of(4, 2);
        MobaInputException token = assertThrows(MobaInputException.class,
                () -> MobaReference.forwardRows(batch, params, new int[] {2, 8}));
        assertTrue(token.getMessage().contains("tokens[1] = 8"), token.getMessage());
        MobaInputException dout = assertThrows(MobaInputException.class,
                () -> MobaReference.backward(batch, params, new double[7]));
        assertTrue(dout.getMessage().contains("dout has 7 elements"), dout.getMessage());
        MobaInputException shape = assertThrows(MobaInputException.class,
                () -> new VarlenDoubles(new int[] {0, 2}, 2, 1, 4, new double[16], new double[8], new double[7]));
        assertTrue(shape.getMessage().contains("v has 7 elements"), shape.getMessage());
        MobaInputException cu = assertThrows(MobaInputException.class,
                () -> new VarlenDoubles(new int[] {0, 2, 1}, 1, 1, 1, new double[1], new double[1], new double[1]));
        assertTrue(cu.getMessage().contains("sequence 1"), cu.getMessage());
    }
}
