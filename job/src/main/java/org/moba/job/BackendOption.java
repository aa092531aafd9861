package org.moba.job;

import picocli.CommandLine.Option;

/** The {@code --backend} option every job shares. */
public final class BackendOption {
    @Option(names = "--backend", defaultValue = "auto",
            description = "cpu, cuda, or auto = cuda where a usable GPU is assigned or visible, else cpu"
                    + " (default: ${DEFAULT-VALUE})")
    String name;

    public String name() {
        return name;
    }
}
