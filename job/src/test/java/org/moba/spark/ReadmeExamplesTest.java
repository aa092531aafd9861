package org.moba.spark;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.moba.job.spark.FakeGpuDiscovery;
import org.moba.job.spark.SparkSessions;
import scala.Option;
import scala.tools.nsc.Settings;
import scala.tools.nsc.interpreter.IMain;
import scala.tools.nsc.interpreter.Results;
import scala.tools.nsc.interpreter.shell.ReplReporterImpl;

/**
 * The README's examples run as printed: the Java block is {@link JavaExample}'s code (checked line by line), the
 * Scala block is compiled and run by the Scala 2.13 interpreter with {@code spark} bound, as {@code spark-shell}
 * would; both give {@code score}'s bits on the same records, on {@code local[*]} and on a {@code local-cluster}
 * whose tasks are assigned fake GPUs.
 */
@Timeout(300)
class ReadmeExamplesTest {
    private static final Path README = Path.of(System.getProperty("user.dir")).resolve("../README.md");
    /** The example's MobaOptions.of(128, 3), as score options. */
    private static final int CHUNK = 128;
    private static final int TOPK = 3;

    @AfterEach
    void stopSpark() {
        MobaDatasetTest.stopSpark();
    }

    /** The code block after the README line {@code <!-- example: NAME -->}. */
    static String readmeBlock(String name) throws IOException {
        String text = Files.readString(README);
        int marker = text.indexOf("<!-- example: " + name + " -->");
        assertTrue(marker >= 0, "README lacks the " + name + " example marker");
        int start = text.indexOf('\n', text.indexOf("```", marker)) + 1;
        return text.substring(start, text.indexOf("```", start));
    }

    private static List<String> normalized(String code) {
        return code.lines().map(String::strip).filter(l -> !l.isEmpty()).toList();
    }

    @Test
    void javaBlockIsTheTestedExample() throws IOException {
        String source = Files.readString(Path.of(System.getProperty("user.dir"))
                .resolve("src/test/java/org/moba/spark/JavaExample.java"));
        String between = source.substring(source.indexOf("// README-BEGIN") + "// README-BEGIN".length(),
                source.indexOf("// README-END"));
        assertEquals(normalized(between), normalized(readmeBlock("java")),
                "README's Java example and JavaExample.java differ: change both");
    }

    @Test
    void javaExampleGivesScoresBits(@TempDir Path dir) {
        SparkSession spark = SparkSession.builder().master("local[2]").getOrCreate();
        JavaExample.Run run = JavaExample.run(spark);
        ScoreParity.assertSameAsScore(run.input(), run.scored().collectAsList(), dir, CHUNK, TOPK);
    }

    /**
     * Two executors with two fake GPUs each: every task binds to the address Spark assigned it; both examples (the
     * same records: both draw from java.util.Random seeded 7 in the same order) give score's bits.
     */
    @Test
    void javaAndScalaExamplesOnLocalClusterWithFakeGpus(@TempDir Path dir) throws IOException {
        SparkSession spark = SparkSession.builder().master("local-cluster[2,2,1024]")
                .config("spark.worker.resource.gpu.amount", "2")
                .config("spark.resources.discoveryPlugin", FakeGpuDiscovery.class.getName())
                .config("spark.executor.resource.gpu.amount", "2")
                .config(SparkSessions.TASK_GPU_AMOUNT, "1")
                .config("spark.executor.cores", "2")
                .config("spark.executor.memory", "768m")
                .config("spark.ui.enabled", "false")
                .config("spark.executor.extraClassPath", System.getProperty("moba.executor.classpath"))
                .getOrCreate();
        JavaExample.Run run = JavaExample.run(spark);
        List<Row> rows = run.scored().collectAsList();
        for (Row r : rows) {
            assertNotEquals("driver", r.getAs("executor_id"), "ran on an executor");
            String gpu = r.getAs("gpu_addresses");
            assertNotNull(gpu, "Spark assigned the task a GPU");
            assertEquals(Integer.parseInt(gpu), (int) r.getAs("device_ordinal"), "bound to Spark's address");
        }
        List<Row> scala = runScalaExample(spark).scored().collectAsList();
        Map<String, Row> score = ScoreParity.assertSameAsScore(run.input(), rows, dir.resolve("java"), CHUNK, TOPK);
        assertEquals(score.size(), scala.size());
        for (Row r : scala) {
            assertNotEquals("driver", r.getAs("executor_id"), "ran on an executor");
            Row s = score.get((String) r.getAs("id"));
            assertArrayEquals((byte[]) s.getAs("out"), (byte[]) r.getAs("out"), "Scala example's out");
            assertEquals(s.getList(s.fieldIndex("recall")), r.getList(r.fieldIndex("recall")));
        }
    }

    @Test
    void scalaExampleGivesScoresBits(@TempDir Path dir) throws IOException {
        JavaExample.Run run = runScalaExample(SparkSession.builder().master("local[2]").getOrCreate());
        List<Row> rows = run.scored().collectAsList();
        assertEquals(6, rows.size());
        assertTrue(Arrays.asList(run.scored().columns()).contains("selected"));
        ScoreParity.assertSameAsScore(run.input(), rows, dir, CHUNK, TOPK);
    }

    /**
     * The README's Scala block through the Scala 2.13 interpreter with {@code spark} bound, as in
     * {@code spark-shell} (class-based wrappers, like it); its {@code input} and {@code scored}.
     */
    @SuppressWarnings("unchecked")
    private static JavaExample.Run runScalaExample(SparkSession spark) throws IOException {
        Settings settings = new Settings();
        // Under Surefire the JVM's class path is a manifest-only jar: give the compiler the real one.
        String classpath = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
        settings.processArgumentString("-Yrepl-class-based");
        settings.classpath().value_$eq(classpath);
        StringWriter transcript = new StringWriter();
        IMain repl = new IMain(settings, Option.apply(ReadmeExamplesTest.class.getClassLoader()), settings,
                new ReplReporterImpl(settings, new PrintWriter(transcript, true)));
        try {
            repl.directBind("spark", SparkSession.class.getName(), spark);
            Results.Result result = repl.interpret(readmeBlock("scala"));
            assertEquals(Results.Success$.MODULE$, result, "the README's Scala example failed:\n" + transcript);
            return new JavaExample.Run((Dataset<Row>) repl.valueOfTerm("input").get(),
                    (Dataset<Row>) repl.valueOfTerm("scored").get());
        } finally {
            repl.close();
        }
    }
}
