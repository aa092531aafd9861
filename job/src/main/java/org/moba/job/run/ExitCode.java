package org.moba.job.run;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The exit status of every job, the same in all four; listed in each job's {@code --help} and in the README, so
 * scripts can tell "the run found problems" from "the run could not be done".
 */
public enum ExitCode {
    OK(0, "success: outputs committed under --out"),
    CHECKS_FAILED(1, "the run completed, outputs committed, and found failures (sweep: a configuration failed the"
            + " oracle)"),
    USAGE(2, "an option or its value is wrong, or --out cannot be used; nothing was computed"),
    BAD_INPUT(3, "the input data cannot be used (missing, unreadable, wrong column types, a bad record with"
            + " --bad-records fail); nothing was committed"),
    RUNTIME(4, "the run crashed (Spark, device, filesystem); nothing was committed; the full trace is in the log"
            + " file"),
    INTERRUPTED(130, "interrupted (Ctrl-C); nothing was committed");

    private final int code;
    private final String meaning;

    ExitCode(int code, String meaning) {
        this.code = code;
        this.meaning = meaning;
    }

    public int code() {
        return code;
    }

    public String meaning() {
        return meaning;
    }

    /** The list picocli prints under "Exit codes:" in every job's help. */
    public static Map<String, String> helpList() {
        Map<String, String> list = new LinkedHashMap<>();
        for (ExitCode c : values()) {
            list.put(Integer.toString(c.code), c.meaning);
        }
        return list;
    }
}
