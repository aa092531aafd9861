package org.moba.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class SequencePackerTest {
    private static final BatchLayout LAYOUT = new BatchLayout(DType.FP16, 4, 2, 32);

    private static List<Sequence> sequences(long seed, int... lengths) {
        SplittableRandom rng = new SplittableRandom(seed);
        List<Sequence> out = new ArrayList<>();
        for (int i = 0; i < lengths.length; i++) {
            out.add(SyntheticSequences.random(rng, LAYOUT, "s" + i, lengths[i]));
        }
        return out;
    }

    @ParameterizedTest(name = "token budget {0}: batches respect the budget, keep order, never split a sequence")
    @ValueSource(ints = {1, 7, 16, 40, 1000})
    void packsUnderBudgetWithoutSplitting(int budget) {
        int[] lengths = {5, 0, 17, 1, 9, 9, 30, 0, 2};
        List<Sequence> input = sequences(budget, lengths);
        List<SequencePacker.Packed> batches = new SequencePacker(LAYOUT, budget).packAll(input);
        List<String> seen = new ArrayList<>();
        for (SequencePacker.Packed p : batches) {
            PackedBatch b = p.batch();
            assertTrue(b.totalTokens() <= budget || b.numSequences() == 1,
                    "batch of " + b.totalTokens() + " tokens over budget " + budget + " with several sequences");
            for (int i = 0; i < b.numSequences(); i++) {
                Sequence s = input.get(seen.size());
                assertEquals(s.id(), p.ids().get(i));
                assertEquals(s.length(), b.seqLength(i));
                int start = b.seqStart(i) * LAYOUT.qElementsPerToken();
                short[] q = java.util.Arrays.copyOfRange(b.q(), start, start + s.q().length);
                assertArrayEquals(s.q(), q, "q of " + s.id());
                int kvStart = b.seqStart(i) * LAYOUT.kvElementsPerToken();
                assertArrayEquals(s.v(), java.util.Arrays.copyOfRange(b.v(), kvStart, kvStart + s.v().length));
                seen.add(p.ids().get(i));
            }
        }
        assertEquals(input.size(), seen.size(), "every sequence packed exactly once");
    }

    @Test
    void unpackReturnsEachSequencesRows() {
        List<Sequence> input = sequences(3, 3, 0, 4);
        SequencePacker packer = new SequencePacker(LAYOUT, 100);
        SequencePacker.Packed packed = packer.packAll(input).get(0);
        int t = packed.batch().totalTokens();
        int w = 2;
        short[] out = new short[t * LAYOUT.qElementsPerToken()];
        float[] lse = new float[t * LAYOUT.heads()];
        int[] sel = new int[t * LAYOUT.heads() * w];
        for (int i = 0; i < out.length; i++) {
            out[i] = (short) i;
        }
        for (int i = 0; i < lse.length; i++) {
            lse[i] = i;
        }
        for (int i = 0; i < sel.length; i++) {
            sel[i] = i;
        }
        List<SequencePacker.SequenceResult> results =
                SequencePacker.unpack(packed, new MobaOutput(out, lse, sel, w, new PhaseTimings()));
        assertEquals(List.of("s0", "s1", "s2"), results.stream().map(SequencePacker.SequenceResult::id).toList());
        SequencePacker.SequenceResult last = results.get(2);
        assertEquals(4, last.length());
        assertEquals((short) (3 * LAYOUT.qElementsPerToken()), last.out()[0]);
        assertEquals(3 * LAYOUT.heads(), last.lse()[0]);
        assertEquals(3 * LAYOUT.heads() * w, last.selected()[0]);
        assertEquals(0, results.get(1).out().length);
    }
}
