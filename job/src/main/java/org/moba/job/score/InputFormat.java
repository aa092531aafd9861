package org.moba.job.score;

import java.util.List;
import java.util.Locale;

/** The stored forms of q/k/v that gen writes and score reads ({@code auto}: told apart by the files' names). */
public enum InputFormat {
    AUTO, PARQUET, SAFETENSORS;

    /**
     * This format, or for {@code AUTO} the one the files' names show: safetensors when every file ends in
     * {@code .safetensors}, Parquet when none does.
     *
     * @throws IllegalArgumentException for {@code AUTO} over a mix of both
     */
    public InputFormat of(List<String> files) {
        if (this != AUTO) {
            return this;
        }
        long safetensors = files.stream().filter(f -> f.endsWith(".safetensors")).count();
        if (safetensors == files.size()) {
            return SAFETENSORS;
        }
        if (safetensors == 0) {
            return PARQUET;
        }
        throw new IllegalArgumentException(safetensors + " of the " + files.size() + " input files end in"
                + " .safetensors and the others do not (e.g. "
                + files.stream().filter(f -> !f.endsWith(".safetensors")).findFirst().orElseThrow() + ")");
    }

    /** The name the options take and the help lists. */
    @Override
    public String toString() {
        return name().toLowerCase(Locale.ROOT);
    }
}
