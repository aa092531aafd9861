package org.moba.job;

import org.moba.kernels.BackendName;
import picocli.CommandLine.Option;

/** The {@code --backend} option every job shares; picocli lists the {@link BackendName}s and refuses others. */
public final class BackendOption {
    @Option(names = "--backend", defaultValue = "auto",
            description = "${COMPLETION-CANDIDATES}: auto = cuda where a usable GPU is assigned or visible, else cpu"
                    + " (default: ${DEFAULT-VALUE})")
    BackendName backend;

    /** The backend's name, as executors open it. */
    public String name() {
        return backend.label();
    }

    public BackendName backend() {
        return backend;
    }
}
