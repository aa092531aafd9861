package org.moba.job.score;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.HostMemory;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.Sequence;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;

/**
 * Records go from their stored bytes, in the row or in a file, straight into a batch in a direct buffer
 * ({@link BatchLoader}): the same batch as decoding, then packing; a bad record is rejected where it landed.
 */
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
        BatchLoader.Loaded loaded = loader(true).load(records, LAYOUT);
        PackedBatch a = expected.batch();
        PackedBatch b = loaded.batch();
        assertTrue(b.inBuffers() && b.qBytes().isDirect());
        assertEquals(List.of(0, 1, 2, 3), loaded.kept());
        assertArrayEquals(a.cuSeqlens(), b.cuSeqlens());
        assertEquals(a.maxSeqlen(), b.maxSeqlen());
        assertArrayEquals(a.q(), b.q());
        assertArrayEquals(a.k(), b.k());
        assertArrayEquals(a.v(), b.v());
        loaded.release();
    }

    /**
     * Writes {@code sequences} as one safetensors file at {@code path} and returns a record per sequence that points
     * into it ({@code name#b}), as the safetensors reader gives them.
     */
    private static List<TensorRecord> inFile(Path path, BatchLayout layout, List<Sequence> sequences)
            throws java.io.IOException {
        PackedBatch file = new SequencePacker(layout, Integer.MAX_VALUE).concat(sequences).batch();
        Files.write(path, Safetensors.write(file));
        Safetensors.Contents c;
        try (FileRanges in = FileRanges.open(path.toString(), new Configuration())) {
            c = Safetensors.describe(in);
        }
        assertArrayEquals(file.cuSeqlens(), c.cuSeqlens());
        String name = path.getFileName().toString().replace(".safetensors", "");
        List<TensorRecord> records = new ArrayList<>();
        for (int b = 0; b < c.sequences(); b++) {
            long[] at = c.positions(b);
            records.add(TensorRecord.inFile(name + "#" + b, c.length(b), layout.dtype().label(), layout.heads(),
                    layout.kvHeads(), layout.headDim(),
                    new TensorRecord.FileTensors(path.toString(), at[0], at[1], at[2])));
        }
        return records;
    }

    private static BatchLoader loader(boolean checkFinite) {
        return new BatchLoader(new Configuration(), checkFinite, false, HostBuffers.executor(), HostMemory.PAGEABLE);
    }

    /**
     * Records still in a safetensors file load into the same batch as the records in rows; one holding a NaN in the
     * middle of the group is rejected with its place named, and the next record takes its bytes' place.
     */
    @Test
    void recordsInAFileLoadLikeRecordsInRowsAndABadOneIsSkipped(@TempDir Path dir) throws Exception {
        SyntheticSequences synth = new SyntheticSequences(5, LAYOUT);
        List<Sequence> sequences = new ArrayList<>();
        for (int length : new int[] {33, 64, 1, 90}) {
            sequences.add(synth.generate(sequences.size(), length));
        }
        short[] q1 = sequences.get(1).q().clone();
        q1[2 * LAYOUT.qElementsPerToken() + 3 * 32 + 4] = (short) 0x7E00; // NaN at token 2, head 3, dim 4
        sequences.set(1, new Sequence("bad", 64, q1, sequences.get(1).k(), sequences.get(1).v()));
        List<TensorRecord> records = inFile(dir.resolve("f.safetensors"), LAYOUT, sequences);
        BatchLoader.Loaded loaded = loader(true).load(records, LAYOUT);
        assertEquals(List.of(new BatchLoader.Rejected(1, "q holds NaN at token 2, head 3, dim 4")),
                loaded.rejected());
        assertEquals(List.of(0, 2, 3), loaded.kept());
        PackedBatch expected = new SequencePacker(LAYOUT, Integer.MAX_VALUE)
                .concat(List.of(sequences.get(0), sequences.get(2), sequences.get(3))).batch();
        assertArrayEquals(expected.cuSeqlens(), loaded.batch().cuSeqlens());
        assertArrayEquals(expected.q(), loaded.batch().q());
        assertArrayEquals(expected.k(), loaded.batch().k());
        assertArrayEquals(expected.v(), loaded.batch().v());
        assertEquals(2L * expected.totalTokens() * (LAYOUT.qElementsPerToken() + 2 * LAYOUT.kvElementsPerToken()),
                loaded.bytes());
        loaded.release();

        BadRecordException e = assertThrows(BadRecordException.class, () -> new BatchLoader(new Configuration(),
                true, true, HostBuffers.executor(), HostMemory.PAGEABLE).load(records, LAYOUT));
        assertEquals("bad record 'f#1': q holds NaN at token 2, head 3, dim 4", e.getMessage());
    }

    /**
     * Records longer than one load piece ({@link BatchLoader#PIECE_BYTES}) load in parallel pieces: the batch is the
     * packed good records, and a bad one is named by the error a one-record-at-a-time load reports first (q before k,
     * the first token in q), even when a later piece of its q or an earlier token of its k fails too.
     */
    @Test
    void recordsSpanningSeveralPiecesLoadAndTheFirstBadValueIsNamed(@TempDir Path dir) throws Exception {
        BatchLayout layout = new BatchLayout(DType.FP16, 8, 8, 64); // 1 KiB of q, k and v per token
        int tokensPerPiece = BatchLoader.PIECE_BYTES / (2 * layout.qElementsPerToken());
        int length = 2 * tokensPerPiece + 1234; // three pieces per field
        SyntheticSequences synth = new SyntheticSequences(11, layout);
        List<Sequence> sequences = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            sequences.add(synth.generate(i, length - 7 * i));
        }
        Sequence b = sequences.get(1);
        short[] q = b.q().clone();
        short[] k = b.k().clone();
        int perToken = layout.qElementsPerToken();
        q[(tokensPerPiece + 5) * perToken + 2 * 64 + 7] = (short) 0x7C00; // +inf at token tokensPerPiece + 5, head 2
        q[(2 * tokensPerPiece + 9) * perToken] = (short) 0x7E00; // a later NaN in the third piece
        k[3 * perToken] = (short) 0x7E00; // an earlier token, but in k
        sequences.set(1, new Sequence("bad", b.length(), q, k, b.v()));
        String reason = "q holds Infinity at token " + (tokensPerPiece + 5) + ", head 2, dim 7";
        PackedBatch good = new SequencePacker(layout, Integer.MAX_VALUE)
                .concat(List.of(sequences.get(0), sequences.get(2))).batch();

        List<TensorRecord> inRows = new ArrayList<>();
        for (Sequence s : sequences) {
            inRows.add(TensorRecord.of(s.id(), s.length(), "fp16", 8, 8, 64, TensorRecord.bytes(s.q()),
                    TensorRecord.bytes(s.k()), TensorRecord.bytes(s.v())));
        }
        List<TensorRecord> inFile = inFile(dir.resolve("long.safetensors"), layout, sequences);
        for (List<TensorRecord> records : List.of(inRows, inFile)) {
            BatchLoader.Loaded loaded = loader(true).load(records, layout);
            assertEquals(List.of(new BatchLoader.Rejected(1, reason)), loaded.rejected());
            assertEquals(List.of(0, 2), loaded.kept());
            assertArrayEquals(good.cuSeqlens(), loaded.batch().cuSeqlens());
            assertArrayEquals(good.q(), loaded.batch().q());
            assertArrayEquals(good.k(), loaded.batch().k());
            assertArrayEquals(good.v(), loaded.batch().v());
            loaded.release();
        }
    }

    @Test
    void aRecordWhoseQDoesNotFitOneHostBufferIsNamedWithItsSize() {
        BatchLayout wide = new BatchLayout(DType.BF16, 16, 4, 128); // 4 KiB of q per token
        assertEquals(null, BatchLoader.tooLarge(500_000, wide));
        assertEquals("q of 600000 tokens x 16 heads x 128 dims x 2 bytes = 2457600000 bytes exceeds the "
                + HostBuffers.MAX_BYTES + " bytes one host buffer holds", BatchLoader.tooLarge(600_000, wide));
    }

    @Test
    void recordWhoseFileIsShorterThanItsPositionsIsRejectedNamingTheTensor(@TempDir Path dir) throws Exception {
        Path path = dir.resolve("short.bin");
        Files.write(path, new byte[100]);
        TensorRecord r = TensorRecord.inFile("x", 2, "fp16", 4, 2, 32,
                new TensorRecord.FileTensors(path.toString(), 0, 0, 0));
        BatchLoader.Loaded loaded = loader(false).load(List.of(r), LAYOUT);
        assertEquals(null, loaded.batch());
        assertTrue(loaded.rejected().get(0).reason().startsWith("q cannot be read from " + path),
                loaded.rejected().get(0).reason());
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
