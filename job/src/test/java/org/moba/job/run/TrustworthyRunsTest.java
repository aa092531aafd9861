package org.moba.job.run;

import static org.apache.spark.sql.functions.array;
import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.lit;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerTaskEnd;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.moba.job.MobaCli;
import org.moba.job.MobaOptionHelp;
import picocli.CommandLine;

/**
 * The issue-16 cases on Spark {@code local[2]}, each asserting the exit code, the one {@code error:} line and what
 * {@code --out} holds afterwards: outputs are committed as one step, a non-empty {@code --out} is refused, a failed
 * rerun hides the earlier run, nothing of the user's is deleted, options and inputs are checked before compute.
 */
@Timeout(300)
class TrustworthyRunsTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    /** gen's dataset (16 sequences, 2 files), shared by the score cases. */
    private static Path input;
    @TempDir
    static Path shared;

    /** What one command line run did. */
    record Run(int exit, String err) {
        /** The stderr lines (the progress bar aside, which is not a log line). */
        List<String> lines() {
            return err.lines().filter(l -> !l.isBlank()).toList();
        }
    }

    private static Run run(String... args) {
        StringWriter err = new StringWriter();
        CommandLine cli = MobaCli.commandLine();
        cli.setErr(new PrintWriter(err, true));
        int exit = cli.execute(args);
        return new Run(exit, err.toString());
    }

    private static Run score(Path in, Path out, String... extra) {
        List<String> args = new ArrayList<>(List.of("score", "--input", in.toString(), "--out", out.toString(),
                "--backend", "cpu", "--topk", "2"));
        args.addAll(List.of(extra));
        if (!args.contains("--chunk")) {
            args.addAll(List.of("--chunk", "64"));
        }
        return run(args.toArray(String[]::new));
    }

    /** Exactly one stderr line, the error, starting with {@code prefix}. */
    private static void assertOneErrorLine(Run r, String prefix) {
        assertEquals(1, r.lines().size(), "one line on stderr, got: " + r.err());
        assertTrue(r.lines().get(0).startsWith("error: " + prefix), r.err());
    }

    private static SparkSession spark() {
        return SparkSession.builder().master("local[2]").getOrCreate();
    }

    @BeforeAll
    static void generateInput() {
        input = shared.resolve("in");
        // Parquet: the tests below rewrite its columns and files.
        assertEquals(0, run("gen", "--out", input.toString(), "--lengths", "uniform:16:20-300", "--heads", "4/2",
                "--head-dim", "32", "--partitions", "2", "--format", "parquet").exit());
    }

    @AfterAll
    static void stopSpark() {
        spark().stop();
    }

    private static List<String> entries(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).filter(n -> !n.endsWith(".crc")).sorted().toList();
        }
    }

    private static JsonNode manifest(Path out) throws IOException {
        return JSON.readTree(out.resolve(RunOutput.MANIFEST).toFile());
    }

    @Test
    void genRefusesAFolderHoldingUserFilesEvenWithOverwrite(@TempDir Path dir) throws IOException {
        Path out = dir.resolve("data");
        Files.createDirectories(out);
        Files.writeString(out.resolve("notes.txt"), "mine");

        Run plain = run("gen", "--out", out.toString(), "--lengths", "2x50", "--heads", "2/2", "--head-dim", "32");
        assertEquals(ExitCode.USAGE.code(), plain.exit(), plain.err());
        assertOneErrorLine(plain, "--out is not empty, --out, ");
        assertTrue(plain.err().contains("'notes.txt'") && plain.err().contains("pass --overwrite"), plain.err());

        Run overwrite = run("gen", "--out", out.toString(), "--lengths", "2x50", "--heads", "2/2", "--head-dim",
                "32", "--overwrite");
        assertEquals(ExitCode.USAGE.code(), overwrite.exit(), overwrite.err());
        assertOneErrorLine(overwrite, "--out holds files no moba run wrote");
        assertEquals(List.of("notes.txt"), entries(out), "nothing added, nothing deleted");
        assertEquals("mine", Files.readString(out.resolve("notes.txt")));
    }

    @Test
    void aFailedRerunHidesTheEarlierRunAndASuccessfulOneReplacesIt(@TempDir Path dir) throws IOException {
        Path out = dir.resolve("out");
        assertEquals(0, score(input, out).exit());
        JsonNode first = manifest(out);
        assertEquals("complete", first.get("status").asText());
        assertEquals("score", first.get("job").asText());
        assertTrue(first.get("arguments").toString().contains("--chunk"), first.toString());
        assertTrue(first.get("versions").has("spark") && first.has("start") && first.has("end"), first.toString());
        List<String> outputs = new ArrayList<>();
        first.get("outputs").forEach(n -> outputs.add(n.asText()));
        assertEquals(List.of("score-heads.csv", "score-metrics.csv", "score.parquet", "score-report.html",
                "score-summary.json"), outputs);
        assertEquals(Stream.concat(outputs.stream(), Stream.of(RunOutput.MANIFEST)).sorted().toList(),
                entries(out), "the committed run, and nothing else");

        Run again = score(input, out);
        assertEquals(ExitCode.USAGE.code(), again.exit(), again.err());
        assertOneErrorLine(again, "--out holds an earlier score run (complete, ");

        // A rerun that fails (a bad record with --bad-records fail): the earlier run no longer looks current.
        Path bad = dir.resolve("bad");
        spark().read().parquet(input.toString()).withColumn("length", lit(1_000_000)).limit(3).write()
                .parquet(bad.toString());
        Run failed = score(bad, out, "--overwrite", "--chunk", "128");
        assertEquals(ExitCode.BAD_INPUT.code(), failed.exit(), failed.err());
        assertOneErrorLine(failed, "bad record 'seq-");
        assertTrue(failed.err().contains("rerun with --bad-records skip"), failed.err());
        List<String> after = entries(out);
        assertEquals(2, after.size(), "the manifest and the earlier run, moved aside: " + after);
        assertTrue(after.get(0).startsWith(RunOutput.SUPERSEDED_PREFIX), after.toString());
        assertEquals(RunOutput.MANIFEST, after.get(1));
        assertTrue(Files.exists(out.resolve(after.get(0)).resolve("score-summary.json")), "kept, not deleted");
        JsonNode failure = manifest(out);
        assertEquals("failed", failure.get("status").asText());
        assertEquals(ExitCode.BAD_INPUT.code(), failure.get("exitCode").asInt());
        assertTrue(failure.get("error").asText().startsWith("bad record 'seq-"), failure.toString());
        assertTrue(failure.get("arguments").toString().contains("128"), "the failed run's own arguments");

        Run replaced = score(input, out, "--overwrite", "--chunk", "128");
        assertEquals(0, replaced.exit(), replaced.err());
        assertEquals(Stream.concat(outputs.stream(), Stream.of(RunOutput.MANIFEST)).sorted().toList(),
                entries(out), "the new run only: the earlier one and the staging folders are gone");
        assertEquals(128, JSON.readTree(out.resolve("score-summary.json").toFile()).get("chunk").asInt());
        assertEquals("complete", manifest(out).get("status").asText());
    }

    @Test
    void anUnwritableOutFailsBeforeAnyTask(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("a-file");
        Files.writeString(file, "x");
        AtomicInteger tasks = new AtomicInteger();
        spark().sparkContext().addSparkListener(new SparkListener() {
            @Override
            public void onTaskEnd(SparkListenerTaskEnd taskEnd) {
                tasks.incrementAndGet();
            }
        });
        Run r = score(input, file.resolve("out"));
        assertEquals(ExitCode.USAGE.code(), r.exit(), r.err());
        assertOneErrorLine(r, "--out cannot be written, --out, ");
        assertTrue(r.err().contains("choose a folder this user can create and write"), r.err());
        assertEquals(0, tasks.get(), "no task ran");
    }

    @Test
    void optionValuesAreCheckedWithTheChoicesListed() {
        Run backend = run("score", "--input", "x", "--backend", "gpu");
        assertEquals(ExitCode.USAGE.code(), backend.exit(), backend.err());
        assertOneErrorLine(backend, "Invalid value for option '--backend'");
        assertTrue(backend.err().contains("auto, cpu, cuda") && backend.err().contains("'gpu'"), backend.err());

        Run mode = run("score", "--input", "x", "--bad-records", "ignore");
        assertEquals(ExitCode.USAGE.code(), mode.exit(), mode.err());
        assertTrue(mode.err().contains("fail, skip") && mode.err().contains("'ignore'"), mode.err());
        assertEquals(0, run("score", "--help").exit());

        Run chunk = run("score", "--input", "x", "--backend", "cuda", "--chunk", "100");
        assertEquals(ExitCode.USAGE.code(), chunk.exit(), chunk.err());
        assertOneErrorLine(chunk, "the CUDA backend cannot run this: chunk_size = 100");
        assertTrue(chunk.err().contains("multiple of 64"), chunk.err());

        Run heads = run("bench", "--backend", "cuda", "--head-dim", "32", "--out", "never-written");
        assertEquals(ExitCode.USAGE.code(), heads.exit(), heads.err());
        assertTrue(heads.err().contains("head_dim (D) = 32"), heads.err());

        Run repeats = run("bench", "--repeats", "0");
        assertEquals(ExitCode.USAGE.code(), repeats.exit(), repeats.err());
        assertOneErrorLine(repeats, "--repeats must be at least 1, --repeats, 0; ");

        Run mix = run("sweep", "--mixes", "uniform:3");
        assertEquals(ExitCode.USAGE.code(), mix.exit(), mix.err());
        assertOneErrorLine(mix, "length mix 'uniform:3'");
    }

    @Test
    void aGpuSizedBenchOnTheCpuIsRefusedWithAnEstimate(@TempDir Path dir) {
        Path out = dir.resolve("out");
        Run r = run("bench", "--backend", "cpu", "--spec", "../conf/bench-flashmoba.json", "--out", out.toString());
        assertEquals(ExitCode.USAGE.code(), r.exit(), r.err());
        assertOneErrorLine(r, "this grid is GPU-sized and no GPU will run it, --backend cpu --spec ");
        assertTrue(r.err().matches("(?s).*about \\d+ min on the CPU backend here \\([0-9.]+ GFLOP/s measured\\);"
                + " pass --allow-slow.*"), r.err());
        assertFalse(Files.exists(out), "--out untouched");
    }

    @Test
    void credentialsInAPathAreMaskedInTheManifestAndTheErrorLine(@TempDir Path dir) throws IOException {
        Path out = dir.resolve("out");
        // No s3a filesystem on this class path: the input cannot be listed, after the run has started.
        Run r = run("score", "--input", "s3a://AKIAKEY:the-secret@bucket/in", "--out", out.toString(), "--backend",
                "cpu");
        assertEquals(ExitCode.BAD_INPUT.code(), r.exit(), r.err());
        assertOneErrorLine(r, "input cannot be listed, --input, s3a://***@bucket/in");
        assertFalse(r.err().contains("the-secret"), r.err());
        String manifest = Files.readString(out.resolve(RunOutput.MANIFEST));
        assertTrue(manifest.contains("s3a://***@bucket/in") && !manifest.contains("the-secret"), manifest);
    }

    @Test
    void everyJobListsTheExitCodesInItsHelp() {
        for (String job : List.of("bench", "sweep", "score", "gen")) {
            String help = MobaCli.commandLine().getSubcommands().get(job).getUsageMessage();
            assertTrue(help.contains("Exit codes:"), job);
            for (ExitCode c : ExitCode.values()) {
                assertTrue(help.matches("(?s).*\n  " + c.code() + " +" + java.util.regex.Pattern.quote(
                        c.meaning().substring(0, 20)) + ".*"), job + ": " + c + "\n" + help);
            }
        }
    }

    @Test
    void everyJobWithMobaParametersExplainsChunkAndTopk() {
        for (String job : List.of("bench", "sweep", "score")) {
            String help = MobaCli.commandLine().getSubcommands().get(job).getUsageMessage().replaceAll("\\s+", " ");
            assertTrue(help.contains("keys per MoBA chunk") && help.contains("multiples of 64"), job + ":\n" + help);
            assertTrue(help.contains("chunks each query attends, its own included"), job + ":\n" + help);
        }
    }

    @Test
    void aSweepThatCrashesExitsWithTheRuntimeCodeNotTheFailureCode(@TempDir Path dir) {
        org.junit.jupiter.api.Assumptions.assumeTrue(org.moba.kernels.cuda.CudaDriver.deviceCount() == 0,
                "a CUDA device is visible: cuda would run");
        Run r = run("sweep", "--backend", "cuda", "--mixes", "single:2", "--dtype", "bf16", "--heads", "2/2",
                "--topk", "2", "--out", dir.resolve("out").toString());
        assertEquals(ExitCode.RUNTIME.code(), r.exit(), r.err());
        assertOneErrorLine(r, "sweep crashed, ");
        assertTrue(r.err().contains("the full trace is in"), r.err());
    }

    @Test
    void wrongColumnTypesAreNamedOrCastWhereLossless(@TempDir Path dir) throws IOException {
        Path longs = dir.resolve("longs");
        spark().read().parquet(input.toString()).withColumn("length", col("length").cast("long"))
                .withColumn("heads", col("heads").cast("long")).write().parquet(longs.toString());
        Run cast = score(longs, dir.resolve("out-longs"));
        assertEquals(0, cast.exit(), cast.err());
        assertEquals(16, JSON.readTree(dir.resolve("out-longs/score-summary.json").toFile()).get("scored").asInt());

        Path floats = dir.resolve("floats");
        spark().read().parquet(input.toString()).withColumn("q", array(lit(1.0f), lit(2.0f))).write()
                .parquet(floats.toString());
        Path out = dir.resolve("out-floats");
        Run refused = score(floats, out);
        assertEquals(ExitCode.BAD_INPUT.code(), refused.exit(), refused.err());
        assertOneErrorLine(refused, "column 'q' has the wrong type, --input, " + floats
                + " (expected binary, found array<float>); store q as binary");
        assertEquals(List.of(RunOutput.MANIFEST), entries(out), "no score.parquet, no staging folder");
        assertEquals("failed", manifest(out).get("status").asText());
    }

    @Test
    void anEmptyInputFolderIsNamedAndAZeroRowInputGivesAnEmptyValidResult(@TempDir Path dir) throws IOException {
        Files.createDirectories(dir.resolve("empty"));
        Run empty = score(dir.resolve("empty"), dir.resolve("out-empty"));
        assertEquals(ExitCode.BAD_INPUT.code(), empty.exit(), empty.err());
        assertOneErrorLine(empty, "no input files, --input, " + dir.resolve("empty"));

        Path zero = dir.resolve("zero");
        spark().read().parquet(input.toString()).limit(0).write().parquet(zero.toString());
        Path out = dir.resolve("out-zero");
        Run r = score(zero, out);
        assertEquals(0, r.exit(), r.err());
        assertEquals(0, spark().read().parquet(out.resolve("score.parquet").toString()).count());
        JsonNode summary = JSON.readTree(out.resolve("score-summary.json").toFile());
        assertEquals(0, summary.get("records").asInt());
        assertEquals("complete", manifest(out).get("status").asText());
    }

    @Test
    void anUnreadableFileGoesToTheRejectsWithSkipAndStopsTheJobWithFail(@TempDir Path dir) throws IOException {
        Path in = dir.resolve("in");
        spark().read().parquet(input.toString()).repartition(2).write().parquet(in.toString());
        Path broken;
        try (Stream<Path> s = Files.list(in)) {
            broken = s.filter(p -> p.getFileName().toString().endsWith(".parquet")).sorted().findFirst()
                    .orElseThrow();
        }
        long readable = 16 - spark().read().parquet(broken.toString()).count();
        byte[] bytes = Files.readAllBytes(broken);
        Files.write(broken, java.util.Arrays.copyOf(bytes, bytes.length / 2));
        Files.deleteIfExists(broken.resolveSibling("." + broken.getFileName() + ".crc"));

        Run fail = score(in, dir.resolve("out-fail"));
        assertEquals(ExitCode.BAD_INPUT.code(), fail.exit(), fail.err());
        assertOneErrorLine(fail, "unreadable Parquet file, file:" + broken);

        Path out = dir.resolve("out-skip");
        Run skip = score(in, out, "--bad-records", "skip");
        assertEquals(0, skip.exit(), skip.err());
        Map<String, Row> rows = spark().read().parquet(out.resolve("score.parquet").toString()).collectAsList()
                .stream().collect(Collectors.toMap(r -> r.getString(r.fieldIndex("id")), r -> r));
        assertEquals(readable + 1, rows.size(), "every readable record once, plus the file");
        Row file = rows.get("file:" + broken);
        assertEquals("rejected", file.getString(file.fieldIndex("outcome")));
        assertTrue(file.getString(file.fieldIndex("reason")).startsWith("unreadable Parquet file: "),
                file.toString());
        assertFalse(rows.values().stream().anyMatch(r -> !r.getString(r.fieldIndex("id")).startsWith("file:")
                && !r.getString(r.fieldIndex("outcome")).equals("scored")), "the readable records are scored");
    }
}
