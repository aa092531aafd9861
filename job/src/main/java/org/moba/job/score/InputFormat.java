package org.moba.job.score;

import java.util.Locale;

/** The stored forms of q/k/v that gen writes and score reads. */
public enum InputFormat {
    PARQUET, SAFETENSORS;

    /** The name the options take and the help lists. */
    @Override
    public String toString() {
        return name().toLowerCase(Locale.ROOT);
    }
}
