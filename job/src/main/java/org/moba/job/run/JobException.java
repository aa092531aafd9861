package org.moba.job.run;

/**
 * A failure the job can explain in one line: {@code <what>, <where>, <value>; <what to do>}, with the exit code it
 * ends the run with. Thrown on the driver (preflight, input checks, result checks); the command line prints the
 * message as {@code error: ...} and exits with {@link #exitCode()}.
 */
public class JobException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final ExitCode exitCode;

    public JobException(ExitCode exitCode, String what, String where, String value, String toDo) {
        this(exitCode, what + ", " + where + ", " + value + "; " + toDo, (Throwable) null);
    }

    public JobException(ExitCode exitCode, String line, Throwable cause) {
        super(line, cause);
        this.exitCode = exitCode;
    }

    public static JobException usage(String what, String where, String value, String toDo) {
        return new JobException(ExitCode.USAGE, what, where, value, toDo);
    }

    public static JobException badInput(String what, String where, String value, String toDo) {
        return new JobException(ExitCode.BAD_INPUT, what, where, value, toDo);
    }

    public ExitCode exitCode() {
        return exitCode;
    }
}
