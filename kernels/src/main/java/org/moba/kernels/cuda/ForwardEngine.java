package org.moba.kernels.cuda;

import java.util.Locale;

/**
 * Which tensor-core engine runs the forward attention kernels that have two (kernels/src/main/cuda/ABI.md, "Hopper
 * forward"): dense causal attention, the own chunk when no query selects chunks, and the gathered path (selected
 * chunks, then own chunk + merge) for chunks of {@link MobaKernels#MIN_WIDE_GATHERED_CHUNK} keys or more and of
 * {@link MobaKernels#MAX_RESIDENT_CHUNK} or fewer. The gate, the routing, the union walk over selected chunks and the
 * backward have one engine.
 *
 * <p>Chosen once per device when its kernels load: {@code auto} (the default) takes {@link #WGMMA} on compute
 * capability 9.0 (H100/H200, the fatbin's sm_90a code), {@link #MMA_SYNC} elsewhere. The system property {@value #PROPERTY} (or the environment variable {@value #ENVIRONMENT})
 * overrides it: {@code mma-sync} forces the sm_80 kernels on a Hopper GPU too, so both engines are tested on one
 * card; {@code wgmma} on a device without sm_90a is refused.
 */
public enum ForwardEngine {
    /** {@code moba_attn_fwd_*} / {@code moba_attn_own_combine_*}: mma.sync m16n8k16, 64-row query tiles. */
    MMA_SYNC("mma-sync"),
    /** {@code moba_attn_fwd_h_*} / {@code moba_attn_own_combine_h_*}: warp-specialized wgmma, 128-row query tiles. */
    WGMMA("wgmma");

    public static final String PROPERTY = "moba.cuda.engine";
    public static final String ENVIRONMENT = "MOBA_CUDA_ENGINE";
    /** The only compute capability the fatbin carries wgmma code for (sm_90a). */
    static final int WGMMA_COMPUTE_CAPABILITY = 90;

    private final String label;

    ForwardEngine(String label) {
        this.label = label;
    }

    public String label() {
        return label;
    }

    /** The engine for a device of {@code computeCapability}, honouring {@value #PROPERTY} / {@value #ENVIRONMENT}. */
    static ForwardEngine forDevice(int computeCapability, String deviceDescription) {
        String requested = System.getProperty(PROPERTY);
        String source = "-D" + PROPERTY;
        if (requested == null || requested.isBlank()) {
            requested = System.getenv(ENVIRONMENT);
            source = ENVIRONMENT;
        }
        return choose(requested, source, computeCapability, deviceDescription);
    }

    static ForwardEngine choose(String requested, String source, int computeCapability, String deviceDescription) {
        boolean hopper = computeCapability == WGMMA_COMPUTE_CAPABILITY;
        if (requested == null || requested.isBlank() || requested.trim().equalsIgnoreCase("auto")) {
            return hopper ? WGMMA : MMA_SYNC;
        }
        String value = requested.trim().toLowerCase(Locale.ROOT);
        for (ForwardEngine e : values()) {
            if (e.label.equals(value)) {
                if (e == WGMMA && !hopper) {
                    throw new IllegalStateException(source + "=" + requested + " needs a compute capability 9.0 GPU "
                            + "(sm_90a); " + deviceDescription + " has " + computeCapability / 10 + "."
                            + computeCapability % 10 + ": use auto or mma-sync");
                }
                return e;
            }
        }
        throw new IllegalArgumentException(source + "=" + requested + " is not an engine: use auto, "
                + MMA_SYNC.label + " or " + WGMMA.label);
    }
}
