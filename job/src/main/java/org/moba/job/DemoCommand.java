package org.moba.job;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.ErrorMetrics;
import org.moba.kernels.MobaAttention;
import org.moba.kernels.MobaBackends;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.Sequence;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;
import org.moba.kernels.reference.MobaReference;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * A self-contained MoBA run without Spark: synthetic sequences are packed, run on the chosen backend, timed
 * against the same backend's dense causal attention, and checked against the float64 oracle on sampled rows.
 */
@Command(name = "demo", mixinStandardHelpOptions = true,
        description = "Run MoBA on synthetic sequences on one machine and check it against the float64 oracle.")
final class DemoCommand implements Callable<Integer> {
    @Option(names = "--backend", defaultValue = "auto", description = "cpu, cuda or auto (default: ${DEFAULT-VALUE})")
    String backend;

    @Option(names = "--device", defaultValue = "0", description = "CUDA device ordinal (default: ${DEFAULT-VALUE})")
    int device;

    @Option(names = "--sequences", defaultValue = "6", description = "number of sequences (default: ${DEFAULT-VALUE})")
    int sequences;

    @Option(names = "--min-len", defaultValue = "200", description = "shortest sequence (default: ${DEFAULT-VALUE})")
    int minLength;

    @Option(names = "--max-len", defaultValue = "3000", description = "longest sequence (default: ${DEFAULT-VALUE})")
    int maxLength;

    @Option(names = "--heads", defaultValue = "8", description = "query heads H (default: ${DEFAULT-VALUE})")
    int heads;

    @Option(names = "--kv-heads", defaultValue = "2", description = "key/value heads Hkv (default: ${DEFAULT-VALUE})")
    int kvHeads;

    @Option(names = "--head-dim", defaultValue = "64", description = "head dimension D (default: ${DEFAULT-VALUE})")
    int headDim;

    @Option(names = "--chunk", defaultValue = "128", description = "chunk size C (default: ${DEFAULT-VALUE})")
    int chunk;

    @Option(names = "--topk", defaultValue = "3", description = "chunks per query, own included (default: ${DEFAULT-VALUE})")
    int topk;

    @Option(names = "--dtype", defaultValue = "bf16", description = "fp16 or bf16 (default: ${DEFAULT-VALUE})")
    String dtype;

    @Option(names = "--seed", defaultValue = "1", description = "seed of the synthetic inputs (default: ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--oracle-rows", defaultValue = "256",
            description = "query rows checked against the float64 oracle (default: ${DEFAULT-VALUE})")
    int oracleRows;

    @Override
    public Integer call() {
        BatchLayout layout = new BatchLayout(DType.parse(dtype), heads, kvHeads, headDim);
        MobaParams params = MobaParams.of(chunk, topk);
        SyntheticSequences synth = new SyntheticSequences(seed, layout);
        SplittableRandom lengths = new SplittableRandom(seed);
        List<Sequence> input = new ArrayList<>();
        for (int i = 0; i < sequences; i++) {
            input.add(synth.generate(i, minLength + lengths.nextInt(Math.max(1, maxLength - minLength + 1))));
        }
        PackedBatch batch = new SequencePacker(layout, Integer.MAX_VALUE).concat(input).batch();
        System.out.println("input:   " + batch + ", " + params);
        try (MobaAttention attention = MobaBackends.open(backend, device, Runtime.getRuntime().availableProcessors())) {
            System.out.println("backend: " + attention.name() + " on " + attention.device());
            attention.forward(batch, params); // warm-up
            MobaOutput moba = attention.forward(batch, params);
            MobaOutput dense = attention.forward(batch, MobaParams.denseCausal(chunk));

            int[] rows = sampleRows(batch.totalTokens(), oracleRows, seed);
            MobaReference.Forward ref = MobaReference.forwardRows(batch, params, rows);
            double outErr = ErrorMetrics.relativeL2(ref.out(), rowsOf(ErrorMetrics.toDouble(moba.out(), layout.dtype()),
                    rows, heads * headDim));
            double lseErr = ErrorMetrics.relativeL2(ref.lse(), rowsOf(ErrorMetrics.toDouble(moba.lse()), rows, heads));

            double recall = 0;
            for (int i = 0; i < moba.lse().length; i++) {
                recall += Math.exp(moba.lse()[i] - dense.lse()[i]);
            }
            recall /= Math.max(1, moba.lse().length);
            System.out.printf("%-28s %s%n", "MoBA forward", moba.timings());
            System.out.printf("%-28s %s%n", "dense causal forward", dense.timings());
            System.out.printf("%-28s %.2fx%n", "speedup over dense", dense.timings().total() / moba.timings().total());
            System.out.printf("%-28s %.4f%n", "mean recall vs dense", recall);
            System.out.printf("%-28s out %.3e, lse %.3e (%d rows)%n", "rel. L2 error vs oracle", outErr, lseErr,
                    rows.length);
            return 0;
        }
    }

    private static int[] sampleRows(int tokens, int count, long seed) {
        int n = Math.min(tokens, count);
        SplittableRandom rng = new SplittableRandom(seed ^ 0x5DEECE66DL);
        return rng.ints(0, tokens).distinct().limit(n).sorted().toArray();
    }

    private static double[] rowsOf(double[] all, int[] rows, int rowWidth) {
        double[] out = new double[rows.length * rowWidth];
        for (int i = 0; i < rows.length; i++) {
            System.arraycopy(all, rows[i] * rowWidth, out, i * rowWidth, rowWidth);
        }
        return out;
    }
}
