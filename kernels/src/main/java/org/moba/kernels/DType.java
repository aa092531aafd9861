package org.moba.kernels;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
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

    /** Exact widening, by table lookup: every 16-bit pattern's float, built once from {@link HalfFloat}. */
    public float toFloat(short bits) {
        return (this == FP16 ? Widening.FP16 : Widening.BF16)[bits & 0xFFFF];
    }

    /** Index of the first NaN or infinity in {@code data} (raw bits of this type), or -1 when all are finite. */
    public int firstNonFinite(short[] data) {
        int exponentMask = exponentMask();
        for (int i = 0; i < data.length; i++) {
            if ((data[i] & exponentMask) == exponentMask) {
                return i;
            }
        }
        return -1;
    }

    /**
     * {@link #firstNonFinite(short[])} on the values' little-endian bytes (two per value, as stored in files), without
     * converting them first: index of the first NaN or infinity, or -1.
     */
    public int firstNonFinite(byte[] littleEndian) {
        return firstNonFinite(ByteBuffer.wrap(littleEndian));
    }

    /**
     * {@link #firstNonFinite(byte[])} on a buffer of little-endian values, from its position to its limit (heap or
     * direct; the buffer's own position and order are left as they are): index of the first NaN or infinity, or -1.
     */
    public int firstNonFinite(ByteBuffer littleEndian) {
        // Four values per 8-byte word: lane x & mask ^ mask is 0 exactly for a non-finite value, and adding mask to a
        // lane sets its top bit exactly when the lane is not 0 (mask + mask < 2^16, so no carry crosses lanes).
        ByteBuffer b = littleEndian.slice().order(ByteOrder.LITTLE_ENDIAN);
        int mask = exponentMask();
        long masks = mask * 0x0001000100010001L;
        long tops = 0x8000800080008000L;
        int words = b.remaining() / 8;
        for (int w = 0; w < words; w++) {
            long lanes = (b.getLong(8 * w) & masks) ^ masks;
            if (((lanes + masks) & tops) != tops) {
                return firstNonFinite(b, 4 * w, mask);
            }
        }
        return firstNonFinite(b, 4 * words, mask);
    }

    private static int firstNonFinite(ByteBuffer littleEndian, int from, int mask) {
        for (int i = from; i < littleEndian.remaining() / 2; i++) {
            if ((littleEndian.getShort(2 * i) & mask) == mask) {
                return i;
            }
        }
        return -1;
    }

    private int exponentMask() {
        return this == FP16 ? 0x7C00 : 0x7F80;
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

    /** The widening tables (256 KiB each), created on first use. */
    private static final class Widening {
        static final float[] FP16 = table(true);
        static final float[] BF16 = table(false);

        private static float[] table(boolean fp16) {
            float[] t = new float[1 << 16];
            for (int i = 0; i < t.length; i++) {
                t[i] = fp16 ? HalfFloat.fp16ToFloat((short) i) : HalfFloat.bf16ToFloat((short) i);
            }
            return t;
        }
    }
}
