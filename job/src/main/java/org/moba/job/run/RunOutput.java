package org.moba.job.run;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ThreadLocalRandom;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.util.ShutdownHookManager;
import org.apache.spark.SparkContext;
import org.apache.spark.SparkExecutorInfo;
import org.apache.spark.sql.SparkSession;
import org.moba.job.MobaCli;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A job run's outputs as one transaction in {@code --out} (any Hadoop filesystem). Everything the job writes goes to
 * {@code --out/.moba-staging-<run id>/}; {@link #commit} moves it to the top of {@code --out} only after the whole job
 * succeeded, then marks the run manifest {@value #MANIFEST} complete. Until then the top of {@code --out} holds no
 * result files, only the manifest with status {@code running} (or {@code failed}), so a failed or killed run never
 * looks like a completed one.
 *
 * <p>A non-empty {@code --out} is refused unless {@code overwrite}; even then only what an earlier run wrote (the
 * entries its manifest lists, and {@code .moba-*} folders) may be there, and nothing else is touched. The earlier
 * run's entries are moved aside into {@code .moba-superseded-<its run id>/} when this run starts (so they never look
 * like this run's results) and deleted only when this run commits.
 */
public final class RunOutput implements AutoCloseable {
    /** The run manifest: job, arguments, versions, devices, start/end, status, outputs. */
    public static final String MANIFEST = "_moba-run.json";
    static final String STAGING_PREFIX = ".moba-staging-";
    static final String SUPERSEDED_PREFIX = ".moba-superseded-";
    private static final String OWN_PREFIX = ".moba-";
    private static final Logger LOG = LoggerFactory.getLogger(RunOutput.class);
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
    /** The run that failed last on this thread, for {@link #recordFailure}. */
    private static final ThreadLocal<RunOutput> LAST_FAILED = new ThreadLocal<>();
    /** How long a failed run waits for its job's last tasks to end before deleting its staging folder. */
    private static final Duration TASKS_END_WAIT = Duration.ofSeconds(30);

    private final FileSystem fs;
    private final SparkContext spark;
    private final Path out;
    private final Path staging;
    private final Map<String, Object> manifest = new LinkedHashMap<>();
    private final Instant start = Instant.now();
    private final Runnable onShutdown = this::interrupted;
    private Path superseded;
    private boolean committed;
    private boolean closed;

    private RunOutput(FileSystem fs, Path out, String job, List<String> arguments, SparkSession spark) {
        this.fs = fs;
        this.spark = spark.sparkContext();
        this.out = out;
        String runId = DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss'Z'").withZone(ZoneOffset.UTC).format(start)
                + "-" + Integer.toHexString(ThreadLocalRandom.current().nextInt(0x100000, 0xFFFFFF));
        this.staging = new Path(out, STAGING_PREFIX + runId);
        manifest.put("job", job);
        manifest.put("runId", runId);
        manifest.put("status", "running");
        manifest.put("arguments", arguments);
        manifest.put("out", out());
        manifest.put("versions", Map.of("mobaSpark", MobaCli.VERSION, "spark", spark.version(),
                "java", System.getProperty("java.version")));
        // Master and application id only: the Spark configuration can hold secrets and never lands here.
        manifest.put("master", spark.sparkContext().master());
        manifest.put("applicationId", spark.sparkContext().applicationId());
        manifest.put("driverHost", hostName());
        manifest.put("start", start.toString());
    }

    /**
     * Checks that {@code folder} can take this run's outputs and opens its staging folder: creates {@code folder},
     * refuses it when it holds anything (unless {@code overwrite}, and then only an earlier run's own outputs), proves
     * it writable, moves an earlier run aside and writes the manifest with status {@code running}. Runs on the
     * driver before any task, so an unusable {@code --out} costs no compute.
     */
    public static RunOutput open(SparkSession spark, String job, String folder, boolean overwrite,
                                 List<String> arguments) {
        Configuration hadoop = spark.sparkContext().hadoopConfiguration();
        Path out;
        FileSystem fs;
        try {
            Path p = new Path(folder);
            fs = p.getFileSystem(hadoop);
            out = fs.makeQualified(p);
        } catch (IOException | RuntimeException e) { // an unknown or unconfigured filesystem fails unchecked
            throw JobException.usage("--out is not a usable path", "--out", "'" + folder + "' (" + e.getMessage()
                    + ")", "give a local path or a URI of a configured filesystem (hdfs://, s3a://, ...)");
        }
        RunOutput run = new RunOutput(fs, out, job, arguments, spark);
        run.prepare(overwrite);
        // Ctrl-C: say so in the manifest. Before Hadoop closes its filesystems (a lower priority runs later).
        ShutdownHookManager.get().addShutdownHook(run.onShutdown, FileSystem.SHUTDOWN_HOOK_PRIORITY + 40);
        return run;
    }

    private void prepare(boolean overwrite) {
        JsonNode previous;
        try {
            if (fs.exists(out) && !fs.getFileStatus(out).isDirectory()) {
                throw JobException.usage("--out is a file, not a folder", "--out", out.toString(),
                        "give a folder (new or empty)");
            }
            previous = checkContents(overwrite);
            if (!fs.mkdirs(staging)) {
                throw new IOException("mkdirs returned false");
            }
            Path probe = new Path(staging, "_probe");
            try (OutputStream o = fs.create(probe, false)) {
                o.write(1);
            }
            fs.delete(probe, false);
        } catch (IOException e) {
            throw JobException.usage("--out cannot be written", "--out", out + " (" + e + ")",
                    "choose a folder this user can create and write");
        }
        try {
            if (previous != null) {
                moveAside(previous);
            }
            writeManifest();
        } catch (IOException e) {
            throw new JobException(ExitCode.RUNTIME, "--out could not be prepared, --out, " + out + " (" + e
                    + "); check the filesystem", e);
        }
    }

    /**
     * What is in {@code --out} now: nothing (returns null), or with {@code overwrite} an earlier run's outputs (returns
     * its manifest); anything else is refused, naming one foreign entry.
     */
    private JsonNode checkContents(boolean overwrite) throws IOException {
        List<String> entries = list(out);
        if (entries.isEmpty()) {
            return null;
        }
        JsonNode previous = readManifest(new Path(out, MANIFEST));
        if (!overwrite) {
            String what = previous != null ? "--out holds an earlier " + previous.path("job").asText() + " run ("
                    + previous.path("status").asText() + ", " + previous.path("start").asText() + ")"
                    : "--out is not empty";
            throw JobException.usage(what, "--out", out + " (holds " + sample(entries) + ")",
                    "pass --overwrite to replace an earlier run's outputs, or choose a new folder");
        }
        Set<String> own = new HashSet<>();
        own.add(MANIFEST);
        if (previous != null) {
            previous.path("outputs").forEach(n -> own.add(n.asText()));
        }
        List<String> foreign = entries.stream().filter(e -> !own.contains(e) && !e.startsWith(OWN_PREFIX)).toList();
        if (!foreign.isEmpty()) {
            throw JobException.usage("--out holds files no moba run wrote", "--out", out + " (e.g. "
                    + sample(foreign) + ")", "--overwrite only replaces an earlier run's own outputs: choose a new"
                    + " or empty folder");
        }
        return previous == null ? LAST_RESORT_MANIFEST : previous;
    }

    /** Stands for "an earlier run that left no manifest but only .moba-* folders". */
    private static final JsonNode LAST_RESORT_MANIFEST = JSON.createObjectNode().put("runId", "unknown");

    private void moveAside(JsonNode previous) throws IOException {
        superseded = new Path(out, SUPERSEDED_PREFIX + manifest.get("runId"));
        List<String> earlier = list(out);
        fs.mkdirs(superseded);
        for (String e : earlier) {
            if (!e.equals(staging.getName())) {
                rename(new Path(out, e), new Path(superseded, e));
            }
        }
        manifest.put("replaced", previous.path("job").asText("") + " run " + previous.path("runId").asText()
                + " (kept in " + superseded.getName() + " until this run commits)");
        LOG.info("{}: the earlier run's outputs are moved aside to {} until this run commits", out(),
                superseded.getName());
    }

    /** Where the job writes {@code name}: inside the staging folder until {@link #commit}. */
    public String path(String name) {
        return new Path(staging, name).toString();
    }

    /** The staging folder itself, for jobs whose output is the folder (gen's dataset). */
    public String stagingFolder() {
        return staging.toString();
    }

    /** {@code --out}, qualified, credentials masked: where the outputs are after {@link #commit}, for messages. */
    public String out() {
        return RunOptions.maskCredentials(out.toString());
    }

    /** The filesystem of {@code --out}. */
    public FileSystem fileSystem() {
        return fs;
    }

    /**
     * Moves every staged output to the top of {@code --out} (summaries and reports last) and marks the manifest
     * complete with {@code details} (e.g. the devices used) and the exit code; the earlier run's outputs, if any,
     * are deleted only now. Returns {@code exitCode}'s number for the command to return.
     */
    public synchronized int commit(Map<String, ?> details, ExitCode exitCode) throws IOException {
        List<String> staged = new ArrayList<>(list(staging));
        staged.sort(Comparator.comparing((String e) -> e.endsWith(".json") || e.endsWith(".html"))
                .thenComparing(e -> e));
        for (String e : staged) {
            rename(new Path(staging, e), new Path(out, e));
        }
        fs.delete(staging, true);
        manifest.putAll(details);
        manifest.put("outputs", staged);
        finish(exitCode == ExitCode.OK ? "complete" : "complete, with failures", exitCode);
        committed = true;
        if (superseded != null) {
            fs.delete(superseded, true);
        }
        return exitCode.code();
    }

    /**
     * A run that did not commit: its staged files are deleted (they are this run's own, incomplete) and the
     * manifest says {@code failed}; the earlier run's outputs stay in their {@code .moba-superseded-} folder.
     */
    @Override
    public synchronized void close() {
        if (!ShutdownHookManager.get().isShutdownInProgress()) {
            ShutdownHookManager.get().removeShutdownHook(onShutdown);
        }
        if (committed || closed) {
            return;
        }
        closed = true;
        try {
            awaitTasksEnded();
            fs.delete(staging, true);
            finish("failed", null);
        } catch (IOException | RuntimeException e) {
            LOG.warn("{}: could not mark the failed run in {}: {}", out(), MANIFEST, e.toString());
        }
        LAST_FAILED.set(this);
    }

    /**
     * When a job fails, Spark stops its other tasks asynchronously: a task still writing into the staging folder
     * after it is deleted would leave part of it behind. Waits until no executor runs a task, or at most
     * {@link #TASKS_END_WAIT} (then deletes anyway and says so).
     */
    private void awaitTasksEnded() {
        long deadline = System.nanoTime() + TASKS_END_WAIT.toNanos();
        int running;
        while ((running = runningTasks()) > 0 && System.nanoTime() < deadline) {
            try {
                Thread.sleep(50);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
        if (running > 0) {
            LOG.warn("{}: {} task(s) still running {} s after the job failed; deleting the staging folder anyway",
                    out(), running, TASKS_END_WAIT.toSeconds());
        }
    }

    private int runningTasks() {
        if (spark.isStopped()) {
            return 0;
        }
        int running = 0;
        for (SparkExecutorInfo executor : spark.statusTracker().getExecutorInfos()) {
            running += executor.numRunningTasks();
        }
        return running;
    }

    /**
     * The JVM is going down (Ctrl-C, SIGTERM) before this run committed or failed: the manifest says
     * {@code interrupted}. The staging folder stays (tasks may still be writing to it); the next run with
     * {@code --overwrite} removes it.
     */
    private synchronized void interrupted() {
        if (committed || closed) {
            return;
        }
        closed = true;
        try {
            finish("interrupted", ExitCode.INTERRUPTED);
        } catch (IOException | RuntimeException e) {
            LOG.warn("{}: could not mark the interrupted run in {}: {}", out(), MANIFEST, e.toString());
        }
    }

    /** Adds the error line of the run that failed last on this thread to its manifest (the command line's handler). */
    static void recordFailure(String errorLine, ExitCode code) {
        RunOutput run = LAST_FAILED.get();
        LAST_FAILED.remove();
        if (run == null) {
            return;
        }
        run.manifest.put("error", errorLine);
        run.manifest.put("exitCode", code.code());
        try {
            run.writeManifest();
        } catch (IOException | RuntimeException e) {
            LOG.warn("{}: could not record the error in {}: {}", run.out(), MANIFEST, e.toString());
        }
    }

    private void finish(String status, ExitCode code) throws IOException {
        Instant end = Instant.now();
        manifest.put("status", status);
        manifest.put("end", end.toString());
        manifest.put("durationSeconds", Duration.between(start, end).toMillis() / 1e3);
        if (code != null) {
            manifest.put("exitCode", code.code());
        }
        writeManifest();
    }

    private void writeManifest() throws IOException {
        try (OutputStream o = fs.create(new Path(out, MANIFEST), true)) {
            JSON.writeValue(o, manifest);
        }
    }

    private JsonNode readManifest(Path p) throws IOException {
        try (InputStream in = fs.open(p)) {
            return JSON.readTree(in);
        } catch (FileNotFoundException e) {
            return null;
        } catch (IOException e) {
            LOG.warn("{} is not a readable run manifest ({}); treating the folder as foreign",
                    RunOptions.maskCredentials(p.toString()), e.toString());
            return null;
        }
    }

    private void rename(Path from, Path to) throws IOException {
        if (fs.exists(to) || !fs.rename(from, to)) {
            throw new IOException("could not move " + from + " to " + to);
        }
    }

    /** Entry names directly under {@code dir} (Hadoop's checksum files are hidden by the filesystem itself). */
    private List<String> list(Path dir) throws IOException {
        if (!fs.exists(dir)) {
            return List.of();
        }
        List<String> names = new ArrayList<>();
        for (FileStatus s : fs.listStatus(dir)) {
            names.add(s.getPath().getName());
        }
        names.sort(null);
        return names;
    }

    private static String sample(List<String> entries) {
        return "'" + entries.get(0) + "'" + (entries.size() > 1 ? " and " + (entries.size() - 1) + " more" : "");
    }

    private static String hostName() {
        try {
            return InetAddress.getLocalHost().getHostName();
        } catch (IOException e) {
            return "unknown";
        }
    }
}
