package org.moba.job;

import org.moba.job.bench.BenchCommand;
import org.moba.job.score.GenCommand;
import org.moba.job.score.ScoreCommand;
import org.moba.job.sweep.SweepCommand;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** The command line users run (through {@code submit.sh}): one subcommand per job. */
@Command(name = "moba", mixinStandardHelpOptions = true, version = "moba-spark 0.1.0",
        description = "MoBA (Mixture of Block Attention) kernels: run, check and benchmark them.",
        subcommands = {BenchCommand.class, SweepCommand.class, ScoreCommand.class, GenCommand.class})
public final class MobaCli implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(System.out);
    }

    public static void main(String[] args) {
        System.exit(new CommandLine(new MobaCli()).execute(args));
    }
}
