package org.moba.job.score;

import java.io.Serializable;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.moba.job.spark.TaskDevice;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DenseComparison;
import org.moba.kernels.MobaAttention;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.PhaseTimings;
import org.moba.kernels.QualityMetrics;
import org.moba.kernels.SequencePacker;

/**
 * The executor side of {@code score}: decodes a partition's records, packs consecutive good ones of the same
 * layout under the token budget, runs MoBA and dense causal attention on each batch, and yields one result row per
 * input record, lazily, batch by batch. Each batch is one {@link org.moba.kernels.MobaAttention#compareWithDense} call:
 * on the GPU, q/k/v cross the link once and only the metric sums (and MoBA's output, when written) come back.
 */
public final class ScoreRunner implements Serializable {
    private static final long serialVersionUID = 1L;

    /** What to do with a record that cannot be scored. */
    public enum BadRecords {
        FAIL, SKIP;

        /** The name the option takes and the help lists. */
        @Override
        public String toString() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    private final MobaParams params;
    private final int tokenBudget;
    private final BadRecords badRecords;
    private final boolean checkFinite;

    private final boolean writeOutputs;

    /** {@code writeOutputs = false} keeps only the metrics: {@code out} and {@code lse} are left null. */
    public ScoreRunner(MobaParams params, int tokenBudget, BadRecords badRecords, boolean checkFinite,
                       boolean writeOutputs) {
        this.writeOutputs = writeOutputs;
        this.params = params;
        this.tokenBudget = tokenBudget;
        this.badRecords = badRecords;
        this.checkFinite = checkFinite;
    }

    Iterator<Row> run(Iterator<TensorRecord> records, MobaAttention backend, TaskDevice device,
                      ScoreTimings timings) {
        return new Iterator<>() {
            private final Deque<Row> ready = new ArrayDeque<>();
            private TensorRecord lookahead;

            @Override
            public boolean hasNext() {
                while (ready.isEmpty() && (lookahead != null || records.hasNext())) {
                    fill();
                }
                return !ready.isEmpty();
            }

            @Override
            public Row next() {
                if (!hasNext()) {
                    throw new NoSuchElementException();
                }
                return ready.poll();
            }

            /** Gathers one batch of good records (rejecting bad ones on the way) and scores it. */
            private void fill() {
                List<TensorRecord> group = new ArrayList<>();
                BatchLayout layout = null;
                long tokens = 0;
                while (lookahead != null || records.hasNext()) {
                    TensorRecord r = lookahead != null ? lookahead : records.next();
                    lookahead = null;
                    long decodeStart = System.nanoTime();
                    try {
                        r.validate(checkFinite);
                        timings.decodeMs.add((System.nanoTime() - decodeStart) / 1e6);
                    } catch (BadRecordException e) {
                        if (badRecords == BadRecords.FAIL) {
                            throw e;
                        }
                        ready.add(rejected(r.id(), e.reason(), backend, device));
                        continue;
                    }
                    BatchLayout l = r.layout();
                    if (!group.isEmpty() && (!l.equals(layout) || tokens + r.length() > tokenBudget)) {
                        lookahead = r;
                        break;
                    }
                    layout = l;
                    group.add(r);
                    tokens += r.length();
                }
                if (!group.isEmpty()) {
                    long packStart = System.nanoTime();
                    SequencePacker.Packed packed = TensorRecord.pack(group, layout);
                    timings.decodeMs.add((System.nanoTime() - packStart) / 1e6);
                    score(packed, layout);
                }
            }

            private void score(SequencePacker.Packed packed, BatchLayout layout) {
                PackedBatch batch = packed.batch();
                DenseComparison c = backend.compareWithDense(batch, params, writeOutputs);
                PhaseTimings t = c.timings();
                timings.copyMs.add(t.get(DenseComparison.H2D) + t.get(DenseComparison.D2H));
                timings.kernelMs.add(t.get(DenseComparison.MOBA) + t.get(DenseComparison.DENSE));
                timings.metricsMs.add(t.get(DenseComparison.METRICS));
                long rowsStart = System.nanoTime();
                int heads = layout.heads();
                int outRow = heads * layout.headDim();
                for (int b = 0; b < batch.numSequences(); b++) {
                    int start = batch.seqStart(b);
                    int length = batch.seqLength(b);
                    QualityMetrics q = c.metrics().get(b);
                    // Straight from the batch's outputs into the row's bytes: no per-sequence arrays in between.
                    ready.add(RowFactory.create(packed.ids().get(b), length, layout.dtype().label(), heads,
                            layout.headDim(),
                            writeOutputs ? TensorRecord.bytes(c.moba().out(), start * outRow, length * outRow) : null,
                            writeOutputs ? TensorRecord.bytes(c.moba().lse(), start * heads, length * heads) : null,
                            q.recall(), q.cosine(), q.relError(), device.host(), device.executorId(),
                            device.gpuAddresses(), backend.device(), device.deviceOrdinal(), device.pciBusId(),
                            null, ScoreSchema.SCORED));
                }
                timings.rowsMs.add((System.nanoTime() - rowsStart) / 1e6);
            }
        };
    }

    private static Row rejected(String id, String reason, MobaAttention backend, TaskDevice device) {
        return RowFactory.create(id, null, null, null, null, null, null, null, null, null, device.host(),
                device.executorId(), device.gpuAddresses(), backend.device(), device.deviceOrdinal(),
                device.pciBusId(), reason, ScoreSchema.REJECTED);
    }


}
