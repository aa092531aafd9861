package org.moba.job;

/**
 * Help texts of the MoBA parameters that several jobs take, written once (picocli descriptions must be constants).
 * A job that takes a list appends {@link #LIST}.
 */
public final class MobaOptionHelp {
    /** {@code --chunk}. */
    public static final String CHUNK = "keys per MoBA chunk (block) C; queries choose among past full chunks and always"
            + " see their own chunk up to themselves; the CUDA backend takes multiples of 64";
    /** {@code --topk}. */
    public static final String TOPK = "chunks each query attends, its own included: the gate picks topk - 1 past"
            + " chunks per (token, head); 1 = own chunk only";
    /** Appended to the above where the option takes several values, one run per value. */
    public static final String LIST = "; a comma-separated list runs each value";

    private MobaOptionHelp() {
    }
}
