package org.moba.spark;

import java.io.Serializable;
import java.util.Locale;
import org.moba.kernels.BackendName;
import org.moba.kernels.MobaParams;

/**
 * How {@link MobaDataset#attention} runs: the MoBA parameters, the backend, the token budget of one packed batch,
 * what to do with bad records and which result columns to fill. Immutable; every {@code with...} returns a copy.
 * The defaults are the {@code score} command's, except that {@code score} also asks for the quality metrics.
 *
 * @param chunk          MoBA chunk size (keys per chunk)
 * @param topk           chunks each query attends: its own plus the {@code topk - 1} the gate picks
 * @param backend        {@code auto} (CUDA where Spark assigned the task a GPU or one is visible, else CPU),
 *                       {@code cuda} or {@code cpu}
 * @param tokensPerBatch token budget of one packed batch; a running task holds about 40 bytes x H x D per token
 * @param badRecords     {@link BadRecords#FAIL} stops the job at the first bad record (naming it);
 *                       {@link BadRecords#SKIP} gives it a result row with {@code outcome = rejected} and the reason
 * @param checkFinite    whether a NaN or infinity in q, k or v makes a record bad
 * @param outputs        whether to fill {@code out} (MoBA's output) and {@code lse}; false leaves them null
 * @param selection      whether to add the {@code selected} column (the chunks the gate picked)
 * @param metrics        whether to also run dense causal attention and fill {@code recall}, {@code cosine} and
 *                       {@code rel_error} per query head (about twice the work); false leaves them null
 * @param outputFolder   null: {@code out} and {@code lse} go into the result rows; else a folder (any Hadoop
 *                       filesystem) where each batch's {@code out} and {@code lse} are written as one safetensors file
 *                       by the task that ran it, and the rows say where ({@code output_file},
 *                       {@code output_positions}; see {@link MobaDataset}): far cheaper than megabytes per row
 */
public record MobaOptions(int chunk, int topk, String backend, int tokensPerBatch, BadRecords badRecords,
                          boolean checkFinite, boolean outputs, boolean selection, boolean metrics,
                          String outputFolder)
        implements Serializable {

    /** What to do with a record that cannot be scored. */
    public enum BadRecords { FAIL, SKIP;

        /** The name options take and help lists: {@code fail}, {@code skip}. */
        @Override
        public String toString() {
            return name().toLowerCase(Locale.ROOT);
        }

        /** {@code fail} or {@code skip}, in any case. */
        public static BadRecords parse(String name) {
            try {
                return valueOf(name.trim().toUpperCase(Locale.ROOT));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("bad-records mode must be fail or skip, got '" + name + "'", e);
            }
        }
    }

    public MobaOptions {
        MobaParams.of(chunk, topk); // the kernels' own checks and messages for chunk and topk
        if (tokensPerBatch <= 0) {
            throw new IllegalArgumentException("tokensPerBatch must be > 0, got " + tokensPerBatch);
        }
        backend = BackendName.of(backend).label();
    }

    /** Backend {@code auto}, 16,384 tokens per batch, bad records fail the job, finite check on, {@code out},
     *  {@code lse} and {@code selected} filled, no quality metrics. */
    public static MobaOptions of(int chunk, int topk) {
        return new MobaOptions(chunk, topk, "auto", 16_384, BadRecords.FAIL, true, true, true, false, null);
    }

    public MobaParams params() {
        return MobaParams.of(chunk, topk);
    }

    public MobaOptions withBackend(String name) {
        return new MobaOptions(chunk, topk, name, tokensPerBatch, badRecords, checkFinite, outputs, selection,
                metrics, outputFolder);
    }

    public MobaOptions withTokensPerBatch(int tokens) {
        return new MobaOptions(chunk, topk, backend, tokens, badRecords, checkFinite, outputs, selection, metrics,
                outputFolder);
    }

    public MobaOptions withBadRecords(BadRecords mode) {
        return new MobaOptions(chunk, topk, backend, tokensPerBatch, mode, checkFinite, outputs, selection, metrics,
                outputFolder);
    }

    public MobaOptions withCheckFinite(boolean check) {
        return new MobaOptions(chunk, topk, backend, tokensPerBatch, badRecords, check, outputs, selection, metrics,
                outputFolder);
    }

    public MobaOptions withOutputs(boolean fill) {
        return new MobaOptions(chunk, topk, backend, tokensPerBatch, badRecords, checkFinite, fill, selection,
                metrics, outputFolder);
    }

    public MobaOptions withSelection(boolean fill) {
        return new MobaOptions(chunk, topk, backend, tokensPerBatch, badRecords, checkFinite, outputs, fill, metrics,
                outputFolder);
    }

    /** Outputs as files under {@code folder} instead of in the rows (null: in the rows); see {@code outputFolder}. */
    public MobaOptions withOutputFolder(String folder) {
        return new MobaOptions(chunk, topk, backend, tokensPerBatch, badRecords, checkFinite, outputs, selection,
                metrics,
                folder);
    }

    public MobaOptions withMetrics(boolean fill) {
        return new MobaOptions(chunk, topk, backend, tokensPerBatch, badRecords, checkFinite, outputs, selection,
                fill, outputFolder);
    }
}
