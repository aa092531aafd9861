package org.moba.spark;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.moba.job.score.BadRecordException;
import org.moba.job.score.ScoreSchema;
import org.moba.job.score.TensorRecord;
import org.moba.job.spark.DeviceAssignment;
import org.moba.job.spark.DeviceSlots;
import org.moba.job.spark.ExecutorBackends;
import org.moba.job.spark.TaskDevice;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DenseComparison;
import org.moba.kernels.MobaAttention;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.PhaseTimings;
import org.moba.kernels.QualityMetrics;
import org.moba.kernels.SequencePacker;

/**
 * The executor side of {@link MobaDataset#attention} (and so of {@code score}): binds the task to its device (the GPU
 * address Spark assigned it, else a visible GPU, else the CPU; {@link DeviceAssignment}), takes the executor's pooled
 * backend for it ({@link ExecutorBackends}), validates the partition's records, packs consecutive good ones of the
 * same layout under the token budget, runs each batch through one backend call and yields one result row per input
 * record, lazily, batch by batch. With metrics, a batch is one {@link MobaAttention#compareWithDense} call: on the
 * GPU, q/k/v cross the link once and only the metric sums (and MoBA's output, when kept) come back.
 * <p>Input rows: the nine {@link ScoreSchema#INPUT} columns, then {@link MobaDataset#PROBLEM} (null, or why a reader
 * found the record unreadable), then the columns carried through unchanged. Output rows: {@link ScoreSchema#RESULT},
 * then {@code selected} when asked for, then the carried columns.
 */
final class MobaPartitions implements MapPartitionsFunction<Row, Row> {
    private static final long serialVersionUID = 1L;
    /** Where the carried columns start in an input row: after the tensor columns and the problem column. */
    static final int INPUT_CARRY = ScoreSchema.INPUT.size() + 1;

    private final MobaOptions options;
    private final MobaTimings timings;
    private final int carried;

    MobaPartitions(MobaOptions options, MobaTimings timings, int carried) {
        this.options = options;
        this.timings = timings;
        this.carried = carried;
    }

    @Override
    public Iterator<Row> call(Iterator<Row> input) {
        TaskContext task = TaskContext.get();
        String requested = options.backend();
        DeviceAssignment a = DeviceAssignment.forTask(requested, task, DeviceSlots.visibleDevices(requested));
        MobaAttention backend = ExecutorBackends.get(a);
        return new Rows(input, backend, TaskDevice.of(task, a, backend));
    }

    /** A record and the input row it came from (for the carried columns). */
    private record Pending(TensorRecord record, Row source) {
    }

    private final class Rows implements Iterator<Row> {
        private final Iterator<Row> input;
        private final MobaAttention backend;
        private final TaskDevice device;
        private final MobaParams params = options.params();
        private final Deque<Row> ready = new ArrayDeque<>();
        private Pending lookahead;

        Rows(Iterator<Row> input, MobaAttention backend, TaskDevice device) {
            this.input = input;
            this.backend = backend;
            this.device = device;
        }

        @Override
        public boolean hasNext() {
            while (ready.isEmpty() && (lookahead != null || input.hasNext())) {
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

        private Pending read(Row r) {
            String problem = r.isNullAt(INPUT_CARRY - 1) ? null : r.getString(INPUT_CARRY - 1);
            if (problem != null) {
                return new Pending(TensorRecord.broken(r.getString(0), problem), r);
            }
            return new Pending(TensorRecord.of(r.getString(0), r.getInt(1), r.getString(2), r.getInt(3), r.getInt(4),
                    r.getInt(5), (byte[]) r.get(6), (byte[]) r.get(7), (byte[]) r.get(8)), r);
        }

        /** Gathers one batch of good records (rejecting bad ones on the way) and runs it. */
        private void fill() {
            List<Pending> group = new ArrayList<>();
            BatchLayout layout = null;
            long tokens = 0;
            while (lookahead != null || input.hasNext()) {
                Pending p = lookahead != null ? lookahead : read(input.next());
                lookahead = null;
                TensorRecord r = p.record();
                long decodeStart = System.nanoTime();
                try {
                    r.validate(options.checkFinite());
                    timings.decodeMs.add((System.nanoTime() - decodeStart) / 1e6);
                } catch (BadRecordException e) {
                    if (options.badRecords() == MobaOptions.BadRecords.FAIL) {
                        throw e;
                    }
                    timings.rejected.add(1);
                    ready.add(row(p.source(), r.id(), null, null, null, null, null, null, null, null, e.reason(),
                            ScoreSchema.REJECTED));
                    continue;
                }
                BatchLayout l = r.layout();
                if (!group.isEmpty() && (!l.equals(layout) || tokens + r.length() > options.tokensPerBatch())) {
                    lookahead = p;
                    break;
                }
                layout = l;
                group.add(p);
                tokens += r.length();
            }
            if (!group.isEmpty()) {
                long packStart = System.nanoTime();
                SequencePacker.Packed packed = TensorRecord.pack(group.stream().map(Pending::record).toList(), layout);
                timings.decodeMs.add((System.nanoTime() - packStart) / 1e6);
                run(packed, layout, group);
            }
        }

        private void run(SequencePacker.Packed packed, BatchLayout layout, List<Pending> group) {
            PackedBatch batch = packed.batch();
            MobaOutput moba;
            List<QualityMetrics> metrics = null;
            if (options.metrics()) {
                DenseComparison c = backend.compareWithDense(batch, params, options.outputs() || options.selection());
                PhaseTimings t = c.timings();
                timings.copyMs.add(t.get(DenseComparison.H2D) + t.get(DenseComparison.D2H));
                timings.kernelMs.add(t.get(DenseComparison.MOBA) + t.get(DenseComparison.DENSE));
                timings.metricsMs.add(t.get(DenseComparison.METRICS));
                moba = c.moba();
                metrics = c.metrics();
            } else {
                moba = backend.forward(batch, params);
                PhaseTimings t = moba.timings();
                double copy = t.get(DenseComparison.H2D) + t.get(DenseComparison.D2H);
                timings.copyMs.add(copy);
                timings.kernelMs.add(t.total() - copy);
            }
            timings.batches.add(1);
            timings.sequences.add(batch.numSequences());
            timings.tokens.add(batch.totalTokens());
            long rowsStart = System.nanoTime();
            int heads = layout.heads();
            int outRow = heads * layout.headDim();
            for (int b = 0; b < batch.numSequences(); b++) {
                int start = batch.seqStart(b);
                int length = batch.seqLength(b);
                QualityMetrics q = metrics == null ? null : metrics.get(b);
                // Straight from the batch's outputs into the row's bytes: no per-sequence arrays in between.
                ready.add(row(group.get(b).source(), packed.ids().get(b), length, layout.dtype().label(), heads,
                        layout.headDim(),
                        options.outputs() ? TensorRecord.bytes(moba.out(), start * outRow, length * outRow) : null,
                        options.outputs() ? TensorRecord.bytes(moba.lse(), start * heads, length * heads) : null,
                        options.selection() ? selected(moba, start, length, heads) : null,
                        q, null, ScoreSchema.SCORED));
            }
            timings.rowsMs.add((System.nanoTime() - rowsStart) / 1e6);
        }

        /**
         * One sequence's selected chunks as little-endian int32 {@code [L, H, w]}, with {@code w} the sequence's own
         * width ({@link MobaParams#selectionWidth} of its length): the batch's width depends on the longest sequence
         * packed with it, and only -1 padding lies beyond a sequence's own width, so trimming it makes the column
         * independent of how records were batched.
         */
        private byte[] selected(MobaOutput moba, int start, int length, int heads) {
            int batchWidth = moba.selectionWidth();
            int width = params.selectionWidth(length);
            ByteBuffer b = ByteBuffer.allocate(4 * length * heads * width).order(ByteOrder.LITTLE_ENDIAN);
            for (int th = start * heads; th < (start + length) * heads; th++) {
                for (int j = 0; j < width; j++) {
                    b.putInt(moba.selected()[th * batchWidth + j]);
                }
            }
            return b.array();
        }

        /** A result row: the {@link ScoreSchema#RESULT} columns, {@code selected} if asked for, the carried ones. */
        private Row row(Row source, String id, Integer length, String dtype, Integer heads, Integer headDim,
                        byte[] out, byte[] lse, byte[] selected, QualityMetrics q, String reason, String outcome) {
            Object[] v = new Object[ScoreSchema.RESULT.size() + (options.selection() ? 1 : 0) + carried];
            int i = 0;
            v[i++] = id;
            v[i++] = length;
            v[i++] = dtype;
            v[i++] = heads;
            v[i++] = headDim;
            v[i++] = out;
            v[i++] = lse;
            v[i++] = q == null ? null : q.recall();
            v[i++] = q == null ? null : q.cosine();
            v[i++] = q == null ? null : q.relError();
            v[i++] = device.host();
            v[i++] = device.executorId();
            v[i++] = device.gpuAddresses();
            v[i++] = backend.device();
            v[i++] = device.deviceOrdinal();
            v[i++] = device.pciBusId();
            v[i++] = reason;
            v[i++] = outcome;
            if (options.selection()) {
                v[i++] = selected;
            }
            for (int c = 0; c < carried; c++) {
                v[i++] = source.get(INPUT_CARRY + c);
            }
            return RowFactory.create(v);
        }
    }
}
