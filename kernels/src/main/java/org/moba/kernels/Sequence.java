package org.moba.kernels;

/**
 * One variable-length sequence before packing: {@code q [L, H, D]}, {@code k, v [L, Hkv, D]} as raw 16-bit values.
 * The layout (dtype and head counts) is declared by the {@link BatchLayout} it is packed under.
 */
public record Sequence(String id, int length, short[] q, short[] k, short[] v) {
}
