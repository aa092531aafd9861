package org.moba.spark;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.moba.job.score.ScoreSchema;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.Sequence;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;
import org.moba.kernels.cpu.CpuMobaAttention;

/** {@link MobaDataset} on Spark {@code local[2]} with the CPU backend, against {@code score} and the backend itself. */
@Timeout(300)
class MobaDatasetTest {
    private static final BatchLayout LAYOUT = new BatchLayout(DType.FP16, 4, 2, 32);

    private static SparkSession spark() {
        return SparkSession.builder().master("local[2]").getOrCreate();
    }

    @AfterAll
    static void stopSpark() {
        SparkTestSessions.stopAll();
    }

    static List<Sequence> sequences(int... lengths) {
        SyntheticSequences synth = new SyntheticSequences(9, LAYOUT);
        List<Sequence> out = new ArrayList<>();
        for (int i = 0; i < lengths.length; i++) {
            out.add(synth.generate(i, lengths[i]));
        }
        return out;
    }

    static List<Row> rows(List<Sequence> seqs) {
        return seqs.stream().map(s -> MobaTensors.row(s.id(), LAYOUT, s.q(), s.k(), s.v())).toList();
    }

    private static Map<String, Row> byId(List<Row> rows) {
        return rows.stream().collect(Collectors.toMap(r -> r.getAs("id"), r -> r));
    }

    /**
     * Safetensors files read as reference rows (no tensor bytes in the rows, only where they lie) give the same bits
     * as the same sequences held in rows; a file whose header is broken becomes one bad record.
     */
    @Test
    void safetensorsRowsPointIntoTheFileAndScoreLikeRowsHoldingTheTensors(@TempDir Path dir) throws Exception {
        List<Sequence> seqs = sequences(70, 1, 200, 64);
        java.nio.file.Files.createDirectories(dir.resolve("in"));
        java.nio.file.Files.write(dir.resolve("in/a.safetensors"), org.moba.job.score.Safetensors.write(
                new SequencePacker(LAYOUT, Integer.MAX_VALUE).concat(seqs.subList(0, 2)).batch()));
        java.nio.file.Files.write(dir.resolve("in/b.safetensors"), org.moba.job.score.Safetensors.write(
                new SequencePacker(LAYOUT, Integer.MAX_VALUE).concat(seqs.subList(2, 4)).batch()));
        java.nio.file.Files.write(dir.resolve("in/c.safetensors"), new byte[] {1, 2, 3});
        Dataset<Row> files = MobaTensors.readSafetensors(spark(), dir.resolve("in").toString());
        Map<String, Row> refs = byId(files.collectAsList());
        assertEquals(List.of("a#0", "a#1", "b#0", "b#1", "c"), refs.keySet().stream().sorted().toList());
        Row a1 = refs.get("a#1");
        assertTrue(a1.isNullAt(a1.fieldIndex("q")) && a1.getString(a1.fieldIndex(MobaDataset.TENSOR_FILE))
                .endsWith("a.safetensors"));
        assertEquals("unreadable safetensors file: file has 3 bytes, less than its 8-byte header length",
                refs.get("c").getString(refs.get("c").fieldIndex(MobaDataset.PROBLEM)));

        MobaOptions options = MobaOptions.of(64, 3).withBackend("cpu").withTokensPerBatch(100)
                .withBadRecords(MobaOptions.BadRecords.SKIP);
        Map<String, Row> fromFiles = byId(MobaDataset.attention(files, options).all().collectAsList());
        Map<String, Row> fromRows = byId(MobaDataset.attention(MobaTensors.dataset(spark(), rows(seqs), 2), options)
                .all().collectAsList());
        String[] names = {"a#0", "a#1", "b#0", "b#1"};
        for (int i = 0; i < names.length; i++) {
            Row f = fromFiles.get(names[i]);
            Row r = fromRows.get(seqs.get(i).id());
            assertEquals(ScoreSchema.SCORED, f.getAs("outcome"));
            assertArrayEquals((byte[]) r.getAs("out"), (byte[]) f.getAs("out"), names[i]);
            assertArrayEquals((byte[]) r.getAs("lse"), (byte[]) f.getAs("lse"), names[i]);
        }
        assertEquals(ScoreSchema.REJECTED, fromFiles.get("c").getAs("outcome"));
    }

    /**
     * The API with a different partitioning and batch budget than {@code score} gives the same bits; outputs without
     * metrics are the same bits as with them; the selection is the backend's own for the sequence alone.
     */
    @Test
    void sameBitsAsScoreWhateverTheBatchingAndSelectionOfTheSequenceAlone(@TempDir Path dir) {
        List<Sequence> seqs = sequences(1, 63, 64, 65, 300, 0, 190, 129);
        Dataset<Row> input = MobaTensors.dataset(spark(), rows(seqs), 3);
        MobaOptions options = MobaOptions.of(64, 3).withBackend("cpu").withTokensPerBatch(250);
        List<Row> withMetrics = MobaDataset.attention(input, options.withMetrics(true)).all().collectAsList();
        Map<String, Row> plain = byId(MobaDataset.attention(input.repartition(1), options).all().collectAsList());
        MobaParams params = options.params();
        try (CpuMobaAttention cpu = new CpuMobaAttention(2)) {
            for (Row r : withMetrics) {
                Row p = plain.get((String) r.getAs("id"));
                assertArrayEquals((byte[]) r.getAs("out"), (byte[]) p.getAs("out"), "metrics do not change out");
                assertArrayEquals((byte[]) r.getAs("lse"), (byte[]) p.getAs("lse"));
                assertArrayEquals((byte[]) r.getAs("selected"), (byte[]) p.getAs("selected"));
                assertNull(p.getAs("recall"), "no metrics unless asked for");
                Sequence s = seqs.stream().filter(x -> x.id().equals(r.getAs("id"))).findFirst().orElseThrow();
                SequencePacker.Packed alone = new SequencePacker(LAYOUT, 1000).concat(List.of(s));
                MobaOutput o = cpu.forward(alone.batch(), params);
                SequencePacker.SequenceResult expected = SequencePacker.unpack(alone, o).get(0);
                assertArrayEquals(expected.selected(), MobaTensors.selected(r.getAs("selected")), s.id());
                assertEquals(Math.max(0, Math.min(2, params.chunksOf(s.length()) - 1)), expected.selectionWidth());
            }
        }
        ScoreParity.assertSameAsScore(input, withMetrics, dir, 64, 3, "--tokens-per-batch", "1000");
    }

    @Test
    void rejectsAreASecondDatasetAndOtherColumnsAreCarried() {
        List<Row> in = new ArrayList<>();
        for (Row r : rows(sequences(40, 90))) {
            in.add(RowFactory.create(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7),
                    r.get(8), "label-" + r.get(0)));
        }
        in.add(RowFactory.create("bad", 10, "fp16", 4, 2, 32, new byte[3], new byte[0], new byte[0], "label-bad"));
        StructType schema = ScoreSchema.INPUT.add("label", DataTypes.StringType);
        Dataset<Row> input = spark().createDataFrame(in, schema);
        MobaOptions skip = MobaOptions.of(64, 2).withBackend("cpu").withBadRecords(MobaOptions.BadRecords.SKIP);
        MobaResult result = MobaDataset.attention(input, skip);
        assertEquals("label", result.all().columns()[result.all().columns().length - 1], "carried at the end");
        List<Row> rejected = result.rejected().collectAsList();
        assertEquals(1, rejected.size());
        assertEquals("bad", rejected.get(0).getAs("id"));
        assertEquals("q has 3 bytes, expected 2560 (length 10 x heads 4 x head_dim 32 x 2 bytes)",
                rejected.get(0).getAs("reason"));
        assertEquals("label-bad", rejected.get(0).getAs("label"));
        List<Row> scored = result.scored().collectAsList();
        assertEquals(2, scored.size());
        scored.forEach(r -> assertEquals("label-" + r.getAs("id"), r.getAs("label")));

        Exception e = assertThrows(Exception.class, () -> MobaDataset.attention(input,
                skip.withBadRecords(MobaOptions.BadRecords.FAIL)).all().count());
        assertTrue(messages(e).contains("bad record 'bad': q has 3 bytes"), messages(e));
    }

    @Test
    void columnsAreCheckedOnTheDriverBeforeAnyWork() {
        Dataset<Row> input = MobaTensors.dataset(spark(), rows(sequences(20)), 1);
        MobaOptions o = MobaOptions.of(64, 2);
        IllegalArgumentException missing = assertThrows(IllegalArgumentException.class,
                () -> MobaDataset.attention(input.drop("kv_heads"), o));
        assertTrue(missing.getMessage().startsWith("MoBA input lacks column 'kv_heads' (expected columns: id string,"),
                missing.getMessage());
        IllegalArgumentException type = assertThrows(IllegalArgumentException.class,
                () -> MobaDataset.attention(input.withColumn("length", functions.col("length").cast("long")), o));
        assertTrue(type.getMessage().startsWith("MoBA input column 'length' is bigint, expected int"),
                type.getMessage());
        IllegalArgumentException collision = assertThrows(IllegalArgumentException.class,
                () -> MobaDataset.attention(input.withColumn("recall", functions.lit(1)), o));
        assertTrue(collision.getMessage().startsWith("input column 'recall' would collide"), collision.getMessage());
    }

    static String messages(Throwable e) {
        StringBuilder sb = new StringBuilder();
        for (Throwable t = e; t != null; t = t.getCause()) {
            sb.append(t.getMessage()).append('\n');
        }
        return sb.toString();
    }
}
