package org.moba.job;

import java.util.Locale;
import picocli.CommandLine.Option;

/** The {@code --backend} option every job shares. */
public final class BackendOption {
    /** The backends a job can ask for; picocli lists them and refuses anything else (e.g. "gpu"). */
    public enum Backend {
        AUTO, CPU, CUDA;

        /** The name {@code MobaBackends.open} and the help use. */
        @Override
        public String toString() {
            return name().toLowerCase(Locale.ROOT);
        }
    }

    @Option(names = "--backend", defaultValue = "auto",
            description = "${COMPLETION-CANDIDATES}: auto = cuda where a usable GPU is assigned or visible, else cpu"
                    + " (default: ${DEFAULT-VALUE})")
    Backend backend;

    /** The backend's name, as executors open it. */
    public String name() {
        return backend.toString();
    }

    public Backend backend() {
        return backend;
    }
}
