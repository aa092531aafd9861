package org.moba.job.run;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.File;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.moba.job.MobaCli;

/**
 * {@code score} in a child JVM, as a user runs it (conf/log4j2.properties, real stderr), killed or interrupted just
 * after its Parquet table was written and before the summary: {@code --out} must not look like a completed run,
 * neither the new one nor the earlier one it replaces; and a failing run prints one error line, its trace going to
 * the log file only.
 */
@Timeout(300)
class InterruptedRunTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Path REPO = Path.of("..").toAbsolutePath().normalize();
    @TempDir
    static Path dir;
    private static Path input;
    /** A completed score run (chunk 64): each test copies it as the earlier run its rerun replaces. */
    private static Path earlier;

    @BeforeAll
    static void generateInputAndAnEarlierRun() {
        input = dir.resolve("in");
        assertEquals(0, MobaCli.commandLine().execute("gen", "--out", input.toString(), "--lengths",
                "uniform:12:50-400", "--heads", "4/2", "--head-dim", "32", "--partitions", "2"));
        earlier = dir.resolve("earlier");
        assertEquals(0, MobaCli.commandLine().execute("score", "--input", input.toString(), "--out",
                earlier.toString(), "--backend", "cpu", "--chunk", "64", "--topk", "2"));
    }

    @AfterAll
    static void stopSpark() {
        SparkSession.builder().master("local[1]").getOrCreate().stop();
    }

    /** A copy of the earlier run in {@code name}. */
    private static Path completedRun(String name) throws IOException {
        Path out = dir.resolve(name);
        try (Stream<Path> files = Files.walk(earlier)) {
            for (Path f : files.toList()) {
                Files.copy(f, out.resolve(earlier.relativize(f).toString()));
            }
        }
        assertEquals("complete", manifest(out).get("status").asText());
        return out;
    }

    /** The job's command line in a new JVM with the user's logging configuration. */
    private static ProcessBuilder child(Path log, String... args) {
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        // The module flags Spark needs (the Surefire argLine), not the test JVM's heap size.
        ManagementFactory.getRuntimeMXBean().getInputArguments().stream()
                .filter(a -> a.startsWith("--add-") || a.startsWith("-XX:+IgnoreUnrecognized")).forEach(cmd::add);
        cmd.addAll(List.of("-Xmx1g", "-cp", System.getProperty("java.class.path"),
                "-Dlog4j.configurationFile=" + REPO.resolve("conf/log4j2.properties"), "-Dmoba.log=" + log,
                MobaCli.class.getName()));
        cmd.addAll(List.of(args));
        return new ProcessBuilder(cmd).redirectOutput(dir.resolve(log.getFileName() + ".out").toFile())
                .redirectError(dir.resolve(log.getFileName() + ".err").toFile());
    }

    private static String[] rerun(Path out) {
        return new String[] {"score", "--input", input.toString(), "--out", out.toString(), "--backend", "cpu",
            "--chunk", "128", "--topk", "2", "--overwrite"};
    }

    /** Starts the rerun and signals it once its staged score.parquet is complete (before summary and report). */
    private static int interruptAfterTheTable(Path out, Path log, boolean kill) throws Exception {
        Process p = child(log, rerun(out)).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(200);
        while (stagedTable(out).isEmpty()) {
            assertTrue(p.isAlive(), "the run ended before its table was staged: " + Files.readString(
                    dir.resolve(log.getFileName() + ".err")));
            assertTrue(System.nanoTime() < deadline, "no staged table in time");
            Thread.sleep(10);
        }
        if (kill) {
            p.destroyForcibly();
        } else {
            new ProcessBuilder("kill", "-INT", Long.toString(p.pid())).start().waitFor();
        }
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "the child did not stop");
        return p.exitValue();
    }

    private static Optional<Path> stagedTable(Path out) throws IOException {
        try (Stream<Path> s = Files.list(out)) {
            return s.filter(e -> e.getFileName().toString().startsWith(RunOutput.STAGING_PREFIX))
                    .map(e -> e.resolve("score.parquet/_SUCCESS")).filter(Files::exists).findFirst();
        } catch (java.nio.file.NoSuchFileException e) {
            return Optional.empty();
        }
    }

    private static JsonNode manifest(Path out) throws IOException {
        return JSON.readTree(out.resolve(RunOutput.MANIFEST).toFile());
    }

    /** No result file at the top of --out: only the manifest and the job's hidden folders. */
    private static void assertNoResults(Path out) throws IOException {
        try (Stream<Path> s = Files.list(out)) {
            List<String> visible = s.map(e -> e.getFileName().toString())
                    .filter(n -> !n.startsWith(".") && !n.equals(RunOutput.MANIFEST)).toList();
            assertEquals(List.of(), visible, "result files at the top of --out");
        }
    }

    private static void assertEarlierRunKeptAside(Path out) throws IOException {
        try (Stream<Path> s = Files.list(out)) {
            Path aside = s.filter(e -> e.getFileName().toString().startsWith(RunOutput.SUPERSEDED_PREFIX))
                    .findFirst().orElseThrow();
            assertEquals(64, JSON.readTree(aside.resolve("score-summary.json").toFile()).get("chunk").asInt());
        }
    }

    @Test
    void killedAfterTheTableLeavesNothingThatLooksComplete() throws Exception {
        Path out = completedRun("out-killed");
        int exit = interruptAfterTheTable(out, dir.resolve("killed.log"), true);
        assertEquals(137, exit, "SIGKILL");
        assertNoResults(out);
        JsonNode m = manifest(out);
        assertEquals("running", m.get("status").asText(), "a killed run cannot say more than 'running'");
        assertTrue(m.get("arguments").toString().contains("128"), "the manifest is the killed run's: " + m);
        assertEarlierRunKeptAside(out);

        // The next run with --overwrite clears the leftovers and commits.
        assertEquals(0, MobaCli.commandLine().execute(rerun(out)));
        try (Stream<Path> s = Files.list(out)) {
            assertFalse(s.anyMatch(e -> e.getFileName().toString().startsWith(".moba-")), "leftovers removed");
        }
        assertEquals(128, JSON.readTree(out.resolve("score-summary.json").toFile()).get("chunk").asInt());
    }

    @Test
    void ctrlCAfterTheTableMarksTheRunInterrupted() throws Exception {
        Path out = completedRun("out-interrupted");
        int exit = interruptAfterTheTable(out, dir.resolve("interrupted.log"), false);
        assertEquals(ExitCode.INTERRUPTED.code(), exit, "SIGINT");
        assertNoResults(out);
        assertEquals("interrupted", manifest(out).get("status").asText());
        assertEarlierRunKeptAside(out);
    }

    @Test
    void aFailingRunPrintsOneErrorLineAndLogsTheTrace() throws Exception {
        Path bad = dir.resolve("bad");
        Files.createDirectories(bad);
        Files.write(bad.resolve("a.parquet"), new byte[] {1, 2, 3});
        Path log = dir.resolve("failing.log");
        Process p = child(log, "score", "--input", bad.toString(), "--out", dir.resolve("out-failing").toString(),
                "--backend", "cpu").start();
        assertTrue(p.waitFor(120, TimeUnit.SECONDS));
        assertEquals(ExitCode.BAD_INPUT.code(), p.exitValue());
        List<String> err = Files.readAllLines(dir.resolve("failing.log.err")).stream()
                .flatMap(l -> Stream.of(l.split("\r"))).filter(l -> !l.isBlank()).toList();
        List<String> errors = err.stream().filter(l -> l.startsWith("error: ")).toList();
        assertEquals(1, errors.size(), String.join("\n", err));
        assertTrue(errors.get(0).startsWith("error: unreadable Parquet file, file:" + bad.resolve("a.parquet")),
                errors.get(0));
        assertFalse(err.stream().filter(l -> !l.startsWith("error: "))
                        .anyMatch(l -> l.startsWith("\tat ") || l.contains("Exception:")),
                "no stack trace on stderr:\n" + String.join("\n", err));
        String logged = Files.readString(log);
        assertTrue(logged.contains("score failed (exit 3)") && logged.contains("\tat org.moba."), logged);
        assertFalse(new File(dir.toFile(), "out-failing/score.parquet").exists());
    }
}
