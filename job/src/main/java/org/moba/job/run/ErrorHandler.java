package org.moba.job.run;

import java.io.PrintWriter;
import org.apache.hadoop.util.ShutdownHookManager;
import org.moba.kernels.MobaInputException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import picocli.CommandLine;
import picocli.CommandLine.IExecutionExceptionHandler;
import picocli.CommandLine.IParameterExceptionHandler;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.ParseResult;

/**
 * Turns every failure of a job into one line on stderr, {@code error: <what>, <where>, <value>; <what to do>}, and
 * its {@link ExitCode}. The full trace goes to the log file (logger {@value #TRACE_LOGGER}, which
 * {@code conf/log4j2.properties} sends to the file only), and to stderr as well with {@code --verbose}.
 */
public final class ErrorHandler implements IExecutionExceptionHandler, IParameterExceptionHandler {
    /** The logger that carries full traces; kept off the console by the logging configuration. */
    public static final String TRACE_LOGGER = "org.moba.job.trace";
    private static final Logger TRACE = LoggerFactory.getLogger(TRACE_LOGGER);

    /** An option error: picocli's message names the option and the value (and for enums, the choices). */
    @Override
    public int handleParseException(ParameterException e, String[] args) {
        CommandLine cmd = e.getCommandLine();
        String message = e.getMessage().replaceAll("\\s+", " ").trim();
        cmd.getErr().println("error: " + message + "; see './submit.sh " + jobName(cmd) + " --help'");
        cmd.getErr().flush();
        return ExitCode.USAGE.code();
    }

    @Override
    public int handleExecutionException(Exception e, CommandLine cmd, ParseResult parseResult) {
        Failure classified = classify(e, jobName(cmd));
        Failure f = new Failure(classified.code(), RunOptions.maskCredentials(classified.line()));
        PrintWriter err = cmd.getErr();
        err.println("error: " + f.line());
        TRACE.error("{} failed (exit {}): {}", jobName(cmd), f.code().code(), f.line(), e);
        if (verbose(cmd)) {
            e.printStackTrace(err);
        }
        err.flush();
        RunOutput.recordFailure(f.line(), f.code());
        return f.code().code();
    }

    /** One line and an exit code for a failure. */
    public record Failure(ExitCode code, String line) {
    }

    /**
     * The first {@link JobException} in the cause chain speaks for itself; a {@link MobaInputException} thrown on the
     * driver is an option value the kernels refuse (a shape, a length mix); anything else is a crash, named by its
     * innermost cause.
     */
    static Failure classify(Throwable e, String job) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof JobException j) {
                return new Failure(j.exitCode(), j.getMessage());
            }
        }
        if (e instanceof MobaInputException) {
            return new Failure(ExitCode.USAGE, firstLine(e.getMessage()) + "; see './submit.sh " + job
                    + " --help'");
        }
        if (e instanceof InterruptedException || ShutdownHookManager.get().isShutdownInProgress()) {
            // Ctrl-C stops Spark from its shutdown hook, so the job sees Spark failing: say what really happened.
            return new Failure(ExitCode.INTERRUPTED, job + " interrupted, the JVM is shutting down (Ctrl-C or a"
                    + " signal), before committing; --out holds no results of this run");
        }
        Throwable root = e;
        while (root.getCause() != null && root.getCause() != root) {
            root = root.getCause();
        }
        String log = System.getProperty("moba.log");
        return new Failure(ExitCode.RUNTIME, job + " crashed, " + root.getClass().getSimpleName() + ", "
                + firstLine(root.getMessage()) + "; nothing was committed; the full trace is in "
                + (log != null ? log : "the log") + " (or rerun with --verbose)");
    }

    private static String firstLine(String message) {
        if (message == null) {
            return "(no message)";
        }
        int nl = message.indexOf('\n');
        return (nl < 0 ? message : message.substring(0, nl)).trim();
    }

    private static boolean verbose(CommandLine cmd) {
        ParseResult r = cmd.getParseResult();
        return r != null && r.hasMatchedOption("--verbose");
    }

    private static String jobName(CommandLine cmd) {
        return cmd.getCommandSpec().name();
    }
}
