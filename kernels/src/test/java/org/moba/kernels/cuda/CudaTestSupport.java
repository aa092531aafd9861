package org.moba.kernels.cuda;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.function.Consumer;

import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.Sequence;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;

/**
 * What the GPU test classes share: the device under test ({@code -Dmoba.cuda.device=N}, default 0) opened with
 * poisoned outputs, or the reason none is usable, which skips each test that needs it; the run's seed
 * ({@code -Dmoba.test.seed=N} replays a run) and a generator per test derived from it; random packed batches. A test
 * class registers one as a static {@code @RegisterExtension} field, {@code new CudaTestSupport(c -> cuda = c)}: the
 * device is opened before the class's {@code @BeforeAll} methods and closed after its {@code @AfterAll} methods.
 */
final class CudaTestSupport implements BeforeAllCallback, AfterAllCallback {
    static final int ORDINAL = Integer.getInteger("moba.cuda.device", 0);
    static final long SEED = Long.getLong("moba.test.seed", new SplittableRandom().nextLong());

    /** Handed the backend once it is open (the test class keeps it in a static field). */
    private final Consumer<CudaMobaAttention> opened;
    private String reason;
    private CudaMobaAttention cuda;

    CudaTestSupport(Consumer<CudaMobaAttention> opened) {
        this.opened = opened;
    }

    /**
     * Prints the seed for the test class, then opens the device with {@link CudaMobaAttention#poisonOutputs} on (so
     * that unwritten elements show as NaN), or prints why no device is usable.
     */
    @Override
    public void beforeAll(ExtensionContext context) {
        String test = context.getRequiredTestClass().getSimpleName();
        System.out.println(test + " seed " + SEED + " (rerun with -Dmoba.test.seed=" + SEED + ")");
        reason = CudaMobaAttention.unavailableReason(ORDINAL);
        if (reason == null) {
            cuda = CudaMobaAttention.open(ORDINAL);
            cuda.poisonOutputs(true);
            System.out.println("testing on " + cuda.device());
            opened.accept(cuda);
        } else {
            System.out.println("no usable CUDA device: " + reason);
        }
    }

    /** Skips the calling test, with the reason, where no usable device exists. */
    void requireDevice() {
        Assumptions.assumeTrue(reason == null, "no usable CUDA device: " + reason);
    }

    /** A fresh generator per test, derived from the run's seed and the test's label. */
    static SplittableRandom rng(String label) {
        return new SplittableRandom(SEED ^ label.hashCode() * 0x9E3779B97F4A7C15L);
    }

    /** Random i.i.d. sequences of {@code lengths}, packed in order. */
    static PackedBatch randomBatch(SplittableRandom rng, BatchLayout layout, int... lengths) {
        List<Sequence> sequences = new ArrayList<>();
        for (int i = 0; i < lengths.length; i++) {
            sequences.add(SyntheticSequences.random(rng, layout, "s" + i, lengths[i]));
        }
        return new SequencePacker(layout, Integer.MAX_VALUE).concat(sequences).batch();
    }

    /**
     * Sequences of 10, 0 and 63 tokens (bf16, H 4/2, D 64) with a max_seqlen of 300 above every length: chunk 64 and
     * topk 3 give a selection width of 2 although no sequence has a full chunk (NFC = 0).
     */
    static PackedBatch withoutFullChunk(SplittableRandom rng) {
        BatchLayout layout = new BatchLayout(DType.BF16, 4, 2, 64);
        PackedBatch exact = randomBatch(rng, layout, 10, 0, 63);
        return PackedBatch.of(layout, exact.cuSeqlens(), 300, exact.q(), exact.k(), exact.v());
    }

    @Override
    public void afterAll(ExtensionContext context) {
        if (cuda != null) {
            cuda.close();
        }
    }
}
