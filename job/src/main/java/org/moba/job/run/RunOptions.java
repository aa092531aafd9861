package org.moba.job.run;

import java.util.List;
import org.apache.spark.sql.SparkSession;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** The options every job shares about its run: replacing an earlier run's outputs, and full traces on errors. */
public final class RunOptions {
    @Spec(Spec.Target.MIXEE)
    CommandSpec command;

    @Option(names = "--overwrite",
            description = "replace the outputs of an earlier run in --out (only what a moba run wrote there: any"
                    + " other file makes the job refuse); without it a non-empty --out is refused")
    boolean overwrite;

    @Option(names = "--verbose", description = "print full stack traces of errors on stderr (they always go to the"
            + " log file, -Dmoba.log, default logs/moba-spark.log)")
    boolean verbose;

    /** Checks {@code --out} and opens this run's staging folder in it (see {@link RunOutput#open}). */
    public RunOutput open(SparkSession spark, String out) {
        return RunOutput.open(spark, command.name(), out, overwrite, arguments());
    }

    /**
     * The job's own arguments as given, for the run manifest. Spark settings (where secrets live) come through Spark,
     * not here; credentials written into a path's URI ({@code s3a://key:secret@bucket/...}) are masked.
     */
    public List<String> arguments() {
        return command.commandLine().getParseResult().originalArgs().stream().map(RunOptions::maskCredentials)
                .toList();
    }

    /** {@code scheme://user:password@host} becomes {@code scheme://***@host}. */
    static String maskCredentials(String text) {
        return text.replaceAll("://[^/@\\s]*:[^/@\\s]*@", "://***@");
    }
}
