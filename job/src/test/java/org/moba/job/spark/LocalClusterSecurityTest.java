package org.moba.job.spark;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.stream.Stream;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.io.Text;
import org.apache.hadoop.security.Credentials;
import org.apache.logging.log4j.Level;
import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.core.config.Configurator;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.moba.job.MobaCli;
import org.moba.job.run.ExitCode;
import org.moba.job.run.RunOutput;
import picocli.CommandLine;

/**
 * conf/spark-defaults.conf.template's security settings on a real {@code local-cluster} (a separate executor JVM):
 * with authentication and RPC encryption on, a job runs and no secret lands in its outputs, manifest or the
 * executor's log; an executor holding the wrong secret is refused, and the job fails with its one error line.
 */
@Timeout(240)
class LocalClusterSecurityTest {
    private static final String SECRET = "moba-test-" + UUID.randomUUID();

    private static Map<String, String> secured() {
        Map<String, String> props = new LinkedHashMap<>();
        props.put("spark.master", "local-cluster[1,1,1024]");
        props.put("spark.authenticate", "true");
        props.put("spark.authenticate.secret", SECRET);
        props.put("spark.network.crypto.enabled", "true");
        props.put("spark.executor.memory", "768m");
        props.put("spark.ui.enabled", "false");
        // A failed executor ends the application at once instead of being relaunched ten times.
        props.put("spark.deploy.maxExecutorRetries", "0");
        props.put("spark.executor.extraClassPath", System.getProperty("moba.executor.classpath"));
        return props;
    }

    private record Run(int exit, String err) {
    }

    private static Run gen(Map<String, String> props, Path out) {
        props.forEach(System::setProperty);
        try {
            StringWriter err = new StringWriter();
            CommandLine cli = MobaCli.commandLine();
            cli.setErr(new PrintWriter(err, true));
            // Parquet: its rows go through Spark's (encrypted) data path to the writer.
            int exit = cli.execute("gen", "--out", out.toString(), "--lengths", "4x64", "--heads", "2/2",
                    "--head-dim", "32", "--partitions", "2", "--format", "parquet");
            return new Run(exit, err.toString());
        } finally {
            props.keySet().forEach(System::clearProperty);
        }
    }

    /** The stderr files of the application's executors, under the test Spark home's work folder. */
    private static List<Path> executorLogs(Path out) throws IOException {
        JsonNode manifest = new ObjectMapper().readTree(out.resolve(RunOutput.MANIFEST).toFile());
        Path app = Path.of(System.getenv("SPARK_HOME"), "work", manifest.get("applicationId").asText());
        try (Stream<Path> files = Files.walk(app)) {
            return files.filter(f -> f.getFileName().toString().equals("stderr")).toList();
        }
    }

    private static boolean anyFileContains(List<Path> files, String text) throws IOException {
        for (Path f : files) {
            if (Files.isRegularFile(f) && new String(Files.readAllBytes(f), StandardCharsets.ISO_8859_1)
                    .contains(text)) {
                return true;
            }
        }
        return false;
    }

    @Test
    void aJobRunsWithAuthenticationAndEncryptionAndLeaksNoSecret(@TempDir Path dir) throws IOException {
        Path out = dir.resolve("out");
        Run r = gen(secured(), out);
        assertEquals(0, r.exit(), r.err());
        try (Stream<Path> files = Files.walk(out)) {
            List<Path> all = files.toList();
            assertTrue(all.stream().anyMatch(f -> f.getFileName().toString().endsWith(".parquet")), "data written");
            assertFalse(anyFileContains(all, SECRET), "the secret is in an output or the manifest");
        }
        List<Path> logs = executorLogs(out);
        assertFalse(logs.isEmpty(), "the executor ran in its own JVM");
        assertFalse(anyFileContains(logs, SECRET), "the secret is in the executor's log");
    }

    /**
     * The worker hands its executors the application's secret (environment {@code _SPARK_AUTH_SECRET}), but an
     * executor looks in its Hadoop credentials first: a token file with another secret under Spark's key gives
     * this executor the wrong one.
     */
    @Test
    void anExecutorWithTheWrongSecretIsRefused(@TempDir Path dir) throws IOException {
        Credentials wrong = new Credentials();
        wrong.addSecretKey(new Text("sparkCookie"), "not-the-secret".getBytes(StandardCharsets.UTF_8));
        Path tokens = dir.resolve("wrong.tokens");
        wrong.writeTokenStorageFile(new org.apache.hadoop.fs.Path(tokens.toUri()), new Configuration());
        Map<String, String> props = secured();
        props.put("spark.executorEnv.HADOOP_TOKEN_FILE_LOCATION", tokens.toString());

        Path out = dir.resolve("out");
        // The refused executor makes Spark log a page of expected errors: keep them out of the build's output.
        Level spark = LogManager.getLogger("org.apache.spark").getLevel();
        Configurator.setLevel("org.apache.spark", Level.OFF);
        Run r;
        try {
            r = gen(props, out);
        } finally {
            Configurator.setLevel("org.apache.spark", spark);
        }
        assertEquals(ExitCode.RUNTIME.code(), r.exit(), r.err());
        assertEquals(1, r.err().lines().count(), r.err());
        assertTrue(r.err().startsWith("error: gen crashed, "), r.err());
        List<Path> logs = executorLogs(out);
        assertFalse(logs.isEmpty(), "an executor was started");
        StringBuilder seen = new StringBuilder();
        for (Path log : logs) {
            seen.append(Files.readString(log, StandardCharsets.ISO_8859_1));
        }
        // The executor's connection to the driver fails in the authentication handshake.
        assertTrue(seen.toString().matches("(?s).*(AuthClientBootstrap|SaslClientBootstrap|Authentication failed).*"),
                "the executor failed on authentication:\n" + seen);
        assertFalse(Files.exists(out.resolve("_SUCCESS")), "nothing committed");
    }
}
