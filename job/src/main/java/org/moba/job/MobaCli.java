package org.moba.job;

import java.util.Arrays;
import java.util.stream.Collectors;
import org.moba.kernels.BackendName;
import org.moba.job.bench.BenchCommand;
import org.moba.job.run.ErrorHandler;
import org.moba.job.run.ExitCode;
import org.moba.job.score.GenCommand;
import org.moba.job.score.InputFormat;
import org.moba.job.score.ScoreCommand;
import org.moba.job.sweep.SweepCommand;
import org.moba.spark.MobaOptions;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

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
     * codes (listed in every job's help), choice options in any case.
     */
    public static CommandLine commandLine() {
        ErrorHandler errors = new ErrorHandler();
        CommandLine cli = new CommandLine(new MobaCli())
                .registerConverter(BackendName.class, choice(BackendName.class))
                .registerConverter(InputFormat.class, choice(InputFormat.class))
                .registerConverter(MobaOptions.BadRecords.class, choice(MobaOptions.BadRecords.class))
                .setExecutionExceptionHandler(errors)
                .setParameterExceptionHandler(errors);
        for (CommandLine job : cli.getSubcommands().values()) {
            job.getCommandSpec().usageMessage().exitCodeListHeading("%nExit codes:%n")
                    .exitCodeList(ExitCode.helpList());
        }
        return cli;
    }

    /**
     * An enum option read by its lower-case name in any case, refused with the choices as the help lists them
     * (picocli's own enum message lists the upper-case constant names).
     */
    static <E extends Enum<E>> ITypeConverter<E> choice(Class<E> type) {
        return value -> Arrays.stream(type.getEnumConstants()).filter(e -> e.toString().equalsIgnoreCase(value))
                .findFirst().orElseThrow(() -> new TypeConversionException("expected one of " + Arrays.stream(
                        type.getEnumConstants()).map(Object::toString).collect(Collectors.joining(", "))
                        + " but was '" + value + "'"));
    }

    public static void main(String[] args) {
        System.exit(commandLine().execute(args));
    }
}
