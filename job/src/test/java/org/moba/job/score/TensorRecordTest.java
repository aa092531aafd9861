package org.moba.job.score;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.Sequence;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;

/** Records go from their stored bytes straight into a batch: the same batch as decoding, then packing. */
class TensorRecordTest {
    private static final BatchLayout LAYOUT = new BatchLayout(DType.FP16, 4, 2, 32);

    private static TensorRecord record(Sequence s) {
        return TensorRecord.of(s.id(), s.length(), "fp16", LAYOUT.heads(), LAYOUT.kvHeads(), LAYOUT.headDim(),
                TensorRecord.bytes(s.q()), TensorRecord.bytes(s.k()), TensorRecord.bytes(s.v()));
    }

    @Test
    void packGivesTheBatchOfTheDecodedSequences() {
        SyntheticSequences synth = new SyntheticSequences(9, LAYOUT);
        List<Sequence> sequences = new ArrayList<>();
        List<TensorRecord> records = new ArrayList<>();
        for (int length : new int[] {70, 0, 1, 129}) {
            Sequence s = synth.generate(sequences.size(), length);
            sequences.add(s);
            records.add(record(s));
            records.get(records.size() - 1).validate(true);
        }
        SequencePacker.Packed expected = new SequencePacker(LAYOUT, Integer.MAX_VALUE).concat(sequences);
        SequencePacker.Packed packed = TensorRecord.pack(records, LAYOUT);
        PackedBatch a = expected.batch();
        PackedBatch b = packed.batch();
        assertEquals(expected.ids(), packed.ids());
        assertArrayEquals(a.cuSeqlens(), b.cuSeqlens());
        assertEquals(a.maxSeqlen(), b.maxSeqlen());
        assertArrayEquals(a.q(), b.q());
        assertArrayEquals(a.k(), b.k());
        assertArrayEquals(a.v(), b.v());
    }

    @Test
    void validateNamesTheFirstNonFiniteValue() {
        Sequence s = new SyntheticSequences(3, LAYOUT).generate(0, 10);
        short[] v = s.v().clone();
        v[5 * LAYOUT.kvElementsPerToken() + 32 + 7] = (short) 0xFC00; // -Inf at token 5, kv head 1, dim 7
        v[6 * LAYOUT.kvElementsPerToken()] = (short) 0x7E00;
        TensorRecord r = record(new Sequence("x", 10, s.q(), s.k(), v));
        BadRecordException e = assertThrows(BadRecordException.class, () -> r.validate(true));
        assertEquals("v holds -Infinity at token 5, head 1, dim 7", e.reason());
        r.validate(false);
    }
}
