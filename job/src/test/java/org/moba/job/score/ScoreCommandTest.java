package org.moba.job.score;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SaveMode;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.moba.job.MobaCli;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.ErrorMetrics;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.Sequence;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;
import org.moba.kernels.reference.MobaReference;

/** {@code score} end to end on Spark {@code local[*]} with the CPU backend: real Parquet and safetensors files. */
@Timeout(300)
class ScoreCommandTest {
    private static final BatchLayout LAYOUT = new BatchLayout(DType.BF16, 4, 2, 32);
    /** The jobs stop their session when they finish, so the test asks for one whenever it needs it. */
    private static SparkSession spark() {
        return SparkSession.builder().master("local[2]").getOrCreate();
    }

    @AfterAll
    static void stopSpark() {
        SparkSession.active().stop();
    }

    private static Row row(Sequence s) {
        return RowFactory.create(s.id(), s.length(), "bf16", LAYOUT.heads(), LAYOUT.kvHeads(), LAYOUT.headDim(),
                TensorRecord.bytes(s.q()), TensorRecord.bytes(s.k()), TensorRecord.bytes(s.v()));
    }

    private static List<Sequence> sequences(int... lengths) {
        SyntheticSequences synth = new SyntheticSequences(5, LAYOUT);
        List<Sequence> out = new ArrayList<>();
        for (int i = 0; i < lengths.length; i++) {
            Sequence s = synth.generate(i, lengths[i]);
            out.add(new Sequence("good-" + i, s.length(), s.q(), s.k(), s.v()));
        }
        return out;
    }

    private static int score(Path input, Path out, String... extra) {
        List<String> args = new ArrayList<>(List.of("score", "--input", input.toString(), "--out", out.toString(),
                "--backend", "cpu", "--chunk", "64", "--topk", "2", "--tokens-per-batch", "500"));
        args.addAll(List.of(extra));
        return MobaCli.commandLine().execute(args.toArray(String[]::new));
    }

    private static Map<String, Row> results(Path out) {
        return spark().read().parquet(out.resolve("score.parquet").toString()).collectAsList().stream()
                .collect(Collectors.toMap(r -> r.getString(r.fieldIndex("id")), r -> r));
    }

    @Test
    void scoresEverySequenceAndMatchesTheOracle(@TempDir Path dir) {
        List<Sequence> seqs = sequences(1, 63, 64, 65, 300, 0, 190);
        spark().createDataFrame(seqs.stream().map(ScoreCommandTest::row).toList(), ScoreSchema.INPUT).repartition(3)
                .write().parquet(dir.resolve("in").toString());
        assertEquals(0, score(dir.resolve("in"), dir.resolve("out")));

        Map<String, Row> rows = results(dir.resolve("out"));
        assertEquals(seqs.size(), rows.size(), "every record exactly once");
        MobaParams params = MobaParams.of(64, 2);
        for (Sequence s : seqs) {
            Row r = rows.get(s.id());
            assertEquals(ScoreSchema.SCORED, r.getString(r.fieldIndex("outcome")));
            PackedBatch alone = new SequencePacker(LAYOUT, 1000).concat(List.of(s)).batch();
            MobaReference.Forward ref = MobaReference.forward(alone, params);
            double[] out = ErrorMetrics.toDouble(TensorRecord.shorts((byte[]) r.get(r.fieldIndex("out"))), DType.BF16);
            assertTrue(ErrorMetrics.relativeL2(ref.out(), out) < 1e-2, s.id() + " out vs oracle");
            List<Double> recall = r.getList(r.fieldIndex("recall"));
            assertEquals(LAYOUT.heads(), recall.size());
            for (double x : recall) {
                assertTrue(x > 0 && x <= 1 + 1e-6, s.id() + " recall " + x);
            }
            if (s.length() <= 64) {
                // One chunk: MoBA is dense attention, so recall is 1 and the outputs agree.
                recall.forEach(x -> assertEquals(1.0, x, 1e-5));
            }
        }
        assertTrue(Files.exists(dir.resolve("out/score-summary.json")));
    }

    static Stream<Arguments> badRecords() {
        Sequence good = sequences(70).get(0);
        byte[] q = TensorRecord.bytes(good.q());
        byte[] k = TensorRecord.bytes(good.k());
        byte[] v = TensorRecord.bytes(good.v());
        byte[] nanK = k.clone();
        nanK[2 * 37] = (byte) 0xC0; // bf16 0x7FC0 = NaN, little-endian at element 37
        nanK[2 * 37 + 1] = (byte) 0x7F;
        return Stream.of(
                Arguments.of("wrong byte length", RowFactory.create("bad", 70, "bf16", 4, 2, 32, q,
                        java.util.Arrays.copyOf(k, k.length - 2), v),
                        "bad record 'bad': k has " + (k.length - 2) + " bytes, expected " + k.length),
                Arguments.of("unsupported dtype", RowFactory.create("bad", 70, "fp8", 4, 2, 32, q, k, v),
                        "bad record 'bad': unsupported dtype 'fp8' (supported: fp16, bf16)"),
                Arguments.of("NaN in k", RowFactory.create("bad", 70, "bf16", 4, 2, 32, q, nanK, v),
                        "bad record 'bad': k holds NaN at token 0, head 1, dim 5"),
                Arguments.of("heads not divisible", RowFactory.create("bad", 70, "bf16", 4, 3, 32, q, k, v),
                        "bad record 'bad': heads (H) = 4 is not divisible by kv_heads (Hkv) = 3"));
    }

    @ParameterizedTest(name = "{0}: skip mode writes it to the rejects, the rest is scored")
    @MethodSource("badRecords")
    void skipModeRejectsWithTheReason(String kind, Row bad, String message, @TempDir Path dir) {
        List<Row> input = new ArrayList<>(sequences(100, 30).stream().map(ScoreCommandTest::row).toList());
        input.add(1, bad);
        spark().createDataFrame(input, ScoreSchema.INPUT).write().parquet(dir.resolve("in").toString());
        assertEquals(0, score(dir.resolve("in"), dir.resolve("out"), "--bad-records", "skip"));
        Map<String, Row> rows = results(dir.resolve("out"));
        assertEquals(3, rows.size());
        Row r = rows.get("bad");
        assertEquals(ScoreSchema.REJECTED, r.getString(r.fieldIndex("outcome")));
        String reason = r.getString(r.fieldIndex("reason"));
        assertTrue(("bad record 'bad': " + reason).startsWith(message), "reason: " + reason);
        assertEquals(ScoreSchema.SCORED, rows.get("good-0").getString(rows.get("good-0").fieldIndex("outcome")));
    }

    @ParameterizedTest(name = "{0}: fail mode stops the job and names the record")
    @MethodSource("badRecords")
    void failModeStopsWithTheRecordAndReason(String kind, Row bad, String message, @TempDir Path dir) {
        spark().createDataFrame(List.of(row(sequences(40).get(0)), bad), ScoreSchema.INPUT).write()
                .parquet(dir.resolve("in").toString());
        PrintStream err = System.err;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        System.setErr(new PrintStream(captured, true));
        int exit;
        try {
            exit = score(dir.resolve("in"), dir.resolve("out"));
        } finally {
            System.setErr(err);
        }
        assertEquals(3, exit, "bad input");
        assertTrue(captured.toString().startsWith("error: " + message), captured.toString());
        assertEquals(1, captured.toString().lines().count(), "one line: " + captured);
    }

    @Test
    void readsSafetensorsFilesAndRejectsABadCuSeqlens(@TempDir Path dir) throws Exception {
        SequencePacker packer = new SequencePacker(LAYOUT, 10_000);
        PackedBatch batch = packer.concat(sequences(50, 0, 130)).batch();
        Files.createDirectories(dir.resolve("in"));
        Files.write(dir.resolve("in/a.safetensors"), Safetensors.write(batch));
        PackedBatch broken = PackedBatch.of(LAYOUT, new int[] {0, 100, 180}, 100, batch.q(), batch.k(), batch.v());
        byte[] bytes = Safetensors.write(broken);
        // Overwrite cu_seqlens[1] (the file's last 12 bytes) with 200 > T = 180: decreasing cu_seqlens.
        java.nio.ByteBuffer.wrap(bytes, bytes.length - 8, 4).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(200);
        Files.write(dir.resolve("in/b.safetensors"), bytes);

        assertEquals(0, score(dir.resolve("in"), dir.resolve("out"), "--format", "safetensors", "--bad-records",
                "skip"));
        Map<String, Row> rows = results(dir.resolve("out"));
        assertEquals(List.of("a#0", "a#1", "a#2", "b"), rows.keySet().stream().sorted().toList());
        assertEquals(ScoreSchema.SCORED, rows.get("a#2").getString(rows.get("a#2").fieldIndex("outcome")));
        assertEquals(130, rows.get("a#2").getInt(rows.get("a#2").fieldIndex("length")));
        Row b = rows.get("b");
        assertEquals("unreadable safetensors file: cu_seqlens decreases at sequence 1: cu_seqlens[1] = 200,"
                + " cu_seqlens[2] = 180", b.getString(b.fieldIndex("reason")));
        byte[] out = (byte[]) rows.get("a#0").get(rows.get("a#0").fieldIndex("out"));
        assertEquals(50 * LAYOUT.qElementsPerToken() * 2, out.length);
        assertArrayEquals(new byte[0], (byte[]) rows.get("a#1").get(rows.get("a#1").fieldIndex("out")));
    }

    /**
     * --outputs files: out and lse of every scored row lie in the safetensors file the row names, at its positions,
     * bit for bit what --outputs rows puts in the row; the files list the batch's ids and no temporary file is left.
     */
    @Test
    void outputsAsFilesHoldTheBitsOfTheRows(@TempDir Path dir) throws Exception {
        List<Sequence> seqs = sequences(1, 63, 300, 0, 190, 129);
        spark().createDataFrame(seqs.stream().map(ScoreCommandTest::row).toList(), ScoreSchema.INPUT).repartition(2)
                .write().parquet(dir.resolve("in").toString());
        assertEquals(0, score(dir.resolve("in"), dir.resolve("rows")));
        assertEquals(0, score(dir.resolve("in"), dir.resolve("files"), "--outputs", "files"));
        Map<String, Row> inRows = results(dir.resolve("rows"));
        Map<String, Row> inFiles = results(dir.resolve("files"));
        assertEquals(inRows.keySet(), inFiles.keySet());
        Path folder = dir.resolve("files").resolve(ScoreCommand.OUTPUTS_FOLDER);
        for (Map.Entry<String, Row> e : inFiles.entrySet()) {
            Row f = e.getValue();
            Row r = inRows.get(e.getKey());
            assertTrue(f.isNullAt(f.fieldIndex("out")) && f.isNullAt(f.fieldIndex("lse")), e.getKey());
            byte[] out = (byte[]) r.get(r.fieldIndex("out"));
            byte[] lse = (byte[]) r.get(r.fieldIndex("lse"));
            List<Long> at = f.getList(f.fieldIndex("output_positions"));
            byte[] file = Files.readAllBytes(folder.resolve(f.getString(f.fieldIndex("output_file"))));
            assertArrayEquals(out, java.util.Arrays.copyOfRange(file, at.get(0).intValue(),
                    at.get(0).intValue() + out.length), e.getKey() + " out");
            assertArrayEquals(lse, java.util.Arrays.copyOfRange(file, at.get(1).intValue(),
                    at.get(1).intValue() + lse.length), e.getKey() + " lse");
            String header = new String(file, 8, (int) java.nio.ByteBuffer.wrap(file, 0, 8)
                    .order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong(), java.nio.charset.StandardCharsets.UTF_8);
            assertTrue(header.contains("\\\"" + e.getKey() + "\\\""), header);
        }
        try (java.util.stream.Stream<Path> files = Files.list(folder)) {
            assertTrue(files.map(p -> p.getFileName().toString()).filter(n -> !n.endsWith(".crc"))
                    .allMatch(n -> n.startsWith("part-") && n.endsWith(".safetensors")));
        }
    }

    @Test
    void finiteCheckCanBeTurnedOff(@TempDir Path dir) {
        Row nan = (Row) badRecords().filter(a -> a.get()[0].equals("NaN in k")).findFirst().orElseThrow().get()[1];
        spark().createDataFrame(List.of(nan), ScoreSchema.INPUT).write().parquet(dir.resolve("in").toString());
        assertEquals(0, score(dir.resolve("in"), dir.resolve("out"), "--no-check-finite"));
        Row r = results(dir.resolve("out")).get("bad");
        assertEquals(ScoreSchema.SCORED, r.getString(r.fieldIndex("outcome")), "NaN accepted when asked to");
    }

    @Test
    void metricsOnlyRunsLeaveOutputsEmpty(@TempDir Path dir) {
        spark().createDataFrame(sequences(90, 200).stream().map(ScoreCommandTest::row).toList(), ScoreSchema.INPUT)
                .write().parquet(dir.resolve("in").toString());
        assertEquals(0, score(dir.resolve("in"), dir.resolve("out"), "--no-write-outputs"));
        for (Row r : results(dir.resolve("out")).values()) {
            assertTrue(r.isNullAt(r.fieldIndex("out")) && r.isNullAt(r.fieldIndex("lse")));
            assertEquals(LAYOUT.heads(), r.getList(r.fieldIndex("recall")).size());
        }
    }

    @Test
    void theLinkSideOfTheBoundSplitsTheLoadedBytesOverTheGpusUsed() {
        assertEquals(400.0, ScoreCommand.hostToDeviceWallMs(10_000_000_000L, 25.0, 1), 1e-9);
        assertEquals(200.0, ScoreCommand.hostToDeviceWallMs(10_000_000_000L, 25.0, 2), 1e-9);
        assertEquals(400.0, ScoreCommand.hostToDeviceWallMs(10_000_000_000L, 25.0, 0), 1e-9, "no GPU counted: one");
        assertNull(ScoreCommand.hostToDeviceWallMs(10_000_000_000L, null, 0), "no link on the CPU");
    }

    /** Both formats gen writes: score tells them apart by the files' names (--format auto). */
    @ParameterizedTest
    @ValueSource(strings = {"safetensors", "parquet"})
    void genThenScoreRoundTrip(String format, @TempDir Path dir) throws Exception {
        assertEquals(0, MobaCli.commandLine().execute("gen", "--out", dir.resolve("in").toString(),
                "--lengths", "uniform:10:20-300", "--heads", "4/2", "--head-dim", "32", "--partitions", "2",
                "--format", format));
        assertEquals(0, score(dir.resolve("in"), dir.resolve("out"), "--measure-bound"));
        assertEquals(10, results(dir.resolve("out")).size());
        com.fasterxml.jackson.databind.JsonNode summary = new com.fasterxml.jackson.databind.ObjectMapper()
                .readTree(dir.resolve("out/score-summary.json").toFile());
        assertEquals(10, summary.get("scored").asInt());
        assertTrue(summary.get("kernelMs").asDouble() > 0 && summary.get("loadOnlyWallMs").asDouble() > 0);
        // The load-only pass loads every record's q, k and v, from rows or straight from the files: their bytes.
        long tensorBytes = results(dir.resolve("out")).values().stream()
                .mapToLong(r -> 2L * r.getInt(r.fieldIndex("length")) * (4 + 2 * 2) * 32).sum();
        assertEquals(tensorBytes, summary.get("loadOnlyBytes").asLong(), summary.toString());
        assertEquals(tensorBytes, summary.get("loadedBytes").asLong(), "score loaded the same bytes");
        // The bound's read side is every visible input file read whole: exactly their bytes.
        Path in = dir.resolve("in");
        long inputBytes;
        try (java.util.stream.Stream<Path> files = Files.walk(in)) {
            inputBytes = files.filter(Files::isRegularFile)
                    .filter(p -> java.util.stream.StreamSupport.stream(in.relativize(p).spliterator(), false)
                            .noneMatch(part -> part.toString().startsWith("_") || part.toString().startsWith(".")))
                    .mapToLong(p -> p.toFile().length()).sum();
        }
        assertTrue(inputBytes > 0);
        assertEquals(inputBytes, summary.get("rawReadBytes").asLong(), summary.toString());
        double rawMs = summary.get("rawReadWallMs").asDouble();
        assertTrue(rawMs > 0, summary.toString());
        // The CPU backend has no host-to-device link: the bound is the raw read alone, and says why.
        assertTrue(summary.get("hostToDeviceGBps").isNull(), summary.toString());
        assertTrue(summary.get("hostToDeviceWallMs").isNull(), summary.toString());
        assertTrue(summary.get("hostToDeviceNote").asText().contains("no host-to-device link"), summary.toString());
        assertEquals(0, summary.get("devicesUsed").asLong());
        assertEquals(rawMs, summary.get("boundWallMs").asDouble(), 1e-9);
        assertTrue(summary.has("copyMsSummedOverTasks") && !summary.has("copyMs"), "copies by their honest name");
        assertEquals(summary.get("boundWallMs").asDouble() / summary.get("scoreWallMs").asDouble(),
                summary.get("fractionOfBound").asDouble(), 1e-12);
        File csv = dir.resolve("out/score-metrics.csv").toFile();
        assertTrue(csv.isDirectory() && csv.list((d, n) -> n.endsWith(".csv")).length == 1);
    }
}
