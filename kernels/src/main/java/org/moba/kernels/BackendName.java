package org.moba.kernels;

import java.util.Arrays;
import java.util.Locale;

/**
 * The backends {@link MobaBackends#open} can open, by the names the jobs, the Dataset API and the ML stage accept:
 * {@code auto} (CUDA where a usable device is bound or visible, else the CPU), {@code cpu} and {@code cuda}.
 */
public enum BackendName {
    AUTO, CPU, CUDA;

    /** Every name, as help texts and errors list them. */
    public static final String NAMES = String.join(", ", labels());

    /** The lower-case name users write. */
    public String label() {
        return name().toLowerCase(Locale.ROOT);
    }

    @Override
    public String toString() {
        return label();
    }

    /** The backend called {@code name} (case and surrounding blanks ignored), or an error listing the valid names. */
    public static BackendName of(String name) {
        String wanted = name == null ? "" : name.trim().toLowerCase(Locale.ROOT);
        for (BackendName b : values()) {
            if (b.label().equals(wanted)) {
                return b;
            }
        }
        throw new MobaInputException("unknown backend '" + name + "' (choose one of: " + NAMES + ")");
    }

    /** The labels of every backend, in declaration order. */
    public static String[] labels() {
        return Arrays.stream(values()).map(BackendName::label).toArray(String[]::new);
    }
}
