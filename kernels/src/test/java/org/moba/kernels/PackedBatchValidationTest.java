package org.moba.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.function.Supplier;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/** Every validation rule of the batch model, each with its exact message. */
class PackedBatchValidationTest {
    private static final int H = 4;
    private static final int HKV = 2;
    private static final int D = 32;

    private static short[] q(int tokens) {
        return filled(tokens * H * D);
    }

    private static short[] kv(int tokens) {
        return filled(tokens * HKV * D);
    }

    private static short[] filled(int n) {
        short[] a = new short[n];
        for (int i = 0; i < n; i++) {
            a[i] = DType.BF16.fromFloat((float) Math.sin(i + 1));
        }
        return a;
    }

    private static PackedBatch batch(int[] cu, int maxSeqlen) {
        int t = cu[cu.length - 1];
        return PackedBatch.of(DType.BF16, H, HKV, D, cu, maxSeqlen, q(t), kv(t), kv(t));
    }

    static Stream<Arguments> invalidBatches() {
        return Stream.of(
                Arguments.of("cu_seqlens not starting at 0", (Supplier<?>) () -> batch(new int[] {1, 3}, 8),
                        "cu_seqlens[0] must be 0, got 1"),
                Arguments.of("cu_seqlens decreasing", (Supplier<?>) () -> batch(new int[] {0, 5, 3, 7}, 8),
                        "cu_seqlens decreases at sequence 1: cu_seqlens[1] = 5, cu_seqlens[2] = 3"),
                Arguments.of("cu_seqlens not ending at T", (Supplier<?>) () -> PackedBatch.of(DType.BF16, H, HKV, D,
                                new int[] {0, 3, 5}, 8, q(6), kv(6), kv(6)),
                        "q has 768 elements, expected T*H*D = 5*4*32 = 640"),
                Arguments.of("k size mismatch", (Supplier<?>) () -> PackedBatch.of(DType.BF16, H, HKV, D,
                                new int[] {0, 5}, 8, q(5), kv(4), kv(5)),
                        "k has 256 elements, expected T*Hkv*D = 5*2*32 = 320"),
                Arguments.of("v size mismatch", (Supplier<?>) () -> PackedBatch.of(DType.BF16, H, HKV, D,
                                new int[] {0, 5}, 8, q(5), kv(5), kv(6)),
                        "v has 384 elements, expected T*Hkv*D = 5*2*32 = 320"),
                Arguments.of("H not divisible by Hkv", (Supplier<?>) () -> PackedBatch.of(DType.BF16, 6, 4, D,
                                new int[] {0, 1}, 1, filled(6 * D), filled(4 * D), filled(4 * D)),
                        "heads (H) = 6 is not divisible by kv_heads (Hkv) = 4"),
                Arguments.of("unsupported head dim", (Supplier<?>) () -> PackedBatch.of(DType.BF16, H, HKV, 48,
                                new int[] {0, 1}, 1, filled(H * 48), filled(HKV * 48), filled(HKV * 48)),
                        "unsupported head_dim (D) = 48 (supported: [32, 64, 96, 128, 256])"),
                Arguments.of("max_seqlen below a sequence", (Supplier<?>) () -> batch(new int[] {0, 2, 9, 10}, 6),
                        "sequence 1 has length 7, more than max_seqlen = 6"),
                Arguments.of("zero kv heads", (Supplier<?>) () -> PackedBatch.of(DType.BF16, H, 0, D,
                                new int[] {0}, 0, new short[0], new short[0], new short[0]),
                        "kv_heads (Hkv) must be > 0, got 0"),
                Arguments.of("empty cu_seqlens", (Supplier<?>) () -> PackedBatch.of(DType.BF16, H, HKV, D,
                                new int[] {}, 0, new short[0], new short[0], new short[0]),
                        "cu_seqlens must have at least one entry (B+1 >= 1)"),
                Arguments.of("missing dtype", (Supplier<?>) () -> PackedBatch.of(null, H, HKV, D, new int[] {0}, 0,
                                new short[0], new short[0], new short[0]),
                        "dtype is missing"),
                Arguments.of("unsupported dtype name", (Supplier<?>) () -> DType.parse("fp8"),
                        "unsupported dtype 'fp8' (supported: fp16, bf16)"),
                Arguments.of("chunk size zero", (Supplier<?>) () -> MobaParams.of(0, 3),
                        "chunk_size must be > 0, got 0"),
                Arguments.of("negative chunk size", (Supplier<?>) () -> MobaParams.of(-64, 3),
                        "chunk_size must be > 0, got -64"),
                Arguments.of("topk zero", (Supplier<?>) () -> MobaParams.of(64, 0), "topk must be >= 1, got 0"),
                Arguments.of("negative softmax scale", (Supplier<?>) () -> MobaParams.of(64, 2).withSoftmaxScale(-1f),
                        "softmax_scale must be finite and > 0, got -1.0"));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("invalidBatches")
    void rejectsWithMessage(String what, Supplier<?> build, String message) {
        MobaInputException e = assertThrows(MobaInputException.class, build::get);
        assertEquals(message, e.getMessage());
    }

    static Stream<Arguments> nonFiniteValues() {
        return Stream.of(
                Arguments.of(DType.FP16, "q", Float.NaN), Arguments.of(DType.FP16, "k", Float.POSITIVE_INFINITY),
                Arguments.of(DType.BF16, "v", Float.NEGATIVE_INFINITY), Arguments.of(DType.BF16, "q", Float.NaN));
    }

    @ParameterizedTest(name = "{0}: {2} in {1} is reported with sequence, token, head and dim")
    @MethodSource("nonFiniteValues")
    void checkFiniteNamesTheElement(DType dt, String field, float bad) {
        int[] cu = {0, 3, 7};
        short[] q = filled(7 * H * D);
        short[] k = filled(7 * HKV * D);
        short[] v = filled(7 * HKV * D);
        int heads = field.equals("q") ? H : HKV;
        // sequence 1, local token 2 (global 5), head 1, dim 7
        int index = (5 * heads + 1) * D + 7;
        short[] target = field.equals("q") ? q : field.equals("k") ? k : v;
        target[index] = dt.fromFloat(bad);
        PackedBatch b = PackedBatch.of(dt, H, HKV, D, cu, 4, q, k, v);
        MobaInputException e = assertThrows(MobaInputException.class, b::checkFinite);
        assertEquals("sequence 1: " + field + " holds " + bad + " at token 2, head 1, dim 7", e.getMessage());
    }

    @Test
    void acceptsZeroLengthSequencesAndAnUpperBoundOnMaxSeqlen() {
        PackedBatch b = batch(new int[] {0, 0, 3, 3, 8}, 100);
        assertEquals(4, b.numSequences());
        assertEquals(8, b.totalTokens());
        assertEquals(0, b.seqLength(0));
        assertEquals(5, b.seqLength(3));
        assertEquals(1, b.sequenceOf(0));
        assertEquals(3, b.sequenceOf(3));
        b.checkFinite();
    }

    @Test
    void packerNamesTheBadSequence() {
        SequencePacker packer = new SequencePacker(new BatchLayout(DType.FP16, H, HKV, D), 100);
        Sequence bad = new Sequence("doc-17", 3, filled(3 * H * D), filled(2 * HKV * D), filled(3 * HKV * D));
        MobaInputException e = assertThrows(MobaInputException.class,
                () -> packer.packAll(java.util.List.of(bad)));
        assertEquals("sequence 'doc-17': k has 128 elements, expected 192 for length 3", e.getMessage());
    }
}
