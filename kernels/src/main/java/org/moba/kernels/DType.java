package org.moba.kernels;

import java.util.Locale;

/** The 16-bit floating-point element types a batch may hold. Both are stored as raw bits in {@code short}s. */
public enum DType {
    FP16("fp16"),
    BF16("bf16");

    private final String label;

    DType(String label) {
        this.label = label;
    }

    /** The short name used on command lines, in files and in kernel names. */
    public String label() {
        return label;
    }

    public int bytes() {
        return 2;
    }

    public float toFloat(short bits) {
        return this == FP16 ? HalfFloat.fp16ToFloat(bits) : HalfFloat.bf16ToFloat(bits);
    }

    /** Rounds to nearest, ties to even. */
    public short fromFloat(float value) {
        return this == FP16 ? HalfFloat.floatToFp16(value) : HalfFloat.floatToBf16(value);
    }

    public static DType parse(String name) {
        String n = name.trim().toLowerCase(Locale.ROOT);
        switch (n) {
            case "fp16": case "float16": case "f16": case "half": return FP16;
            case "bf16": case "bfloat16": return BF16;
            default: throw new MobaInputException("unsupported dtype '" + name + "' (supported: fp16, bf16)");
        }
    }
}
