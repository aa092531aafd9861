package org.moba.job;

import org.moba.job.bench.BenchCommand;
import org.moba.job.run.ErrorHandler;
import org.moba.job.run.ExitCode;
import org.moba.job.score.GenCommand;
import org.moba.job.score.ScoreCommand;
import org.moba.job.sweep.SweepCommand;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** The command line users run (through {@code submit.sh}): one subcommand per job. */
@Command(name = "moba", mixinStandardHelpOptions = true, version = "moba-spark " + MobaCli.VERSION,
        description = "MoBA (Mixture of Block Attention) kernels: run, check and benchmark them.",
        subcommands = {BenchCommand.class, SweepCommand.class, ScoreCommand.class, GenCommand.class})
public final class MobaCli implements Runnable {
    /** The project version, recorded in every run manifest. */
    public static final String VERSION = "0.1.0";

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(System.out);
    }

    /**
     * The command line with the project's error handling: one {@code error:} line per failure, the documented exit
     * codes (listed in every job's help), enum option values in any case.
     */
    public static CommandLine commandLine() {
        ErrorHandler errors = new ErrorHandler();
        CommandLine cli = new CommandLine(new MobaCli())
                .setCaseInsensitiveEnumValuesAllowed(true)
                .setExecutionExceptionHandler(errors)
                .setParameterExceptionHandler(errors);
        for (CommandLine job : cli.getSubcommands().values()) {
            job.getCommandSpec().usageMessage().exitCodeListHeading("%nExit codes:%n")
                    .exitCodeList(ExitCode.helpList());
        }
        return cli;
    }

    public static void main(String[] args) {
        System.exit(commandLine().execute(args));
    }
}
