package org.moba.spark;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.util.DoubleAccumulator;
import org.apache.spark.util.SerializableConfiguration;
import org.apache.spark.util.TaskCompletionListener;
import org.moba.job.score.BadRecordException;
import org.moba.job.score.BatchLoader;
import org.moba.job.score.HostBuffers;
import org.moba.job.score.OutputFiles;
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
import scala.jdk.javaapi.CollectionConverters;

/**
 * The executor side of {@link MobaDataset#attention} (and so of {@code score}): binds the task to its device (the GPU
 * address Spark assigned it, else a visible GPU, else the CPU; {@link DeviceAssignment}), takes the executor's pooled
 * backend for it ({@link ExecutorBackends}), validates the partition's records, groups consecutive good ones of the
 * same layout under the token budget, loads each group into one batch in a direct host buffer ({@link BatchLoader}:
 * tensors still in files are read straight into place) and runs it through one backend call, yielding one result
 * row per input record, lazily, batch by batch. Loading is pipelined: a loader thread reads batch i+1 while batch i
 * runs on the device and its rows are written. With metrics, a batch is one {@link MobaAttention#compareWithDense}
 * call: on the GPU, q/k/v cross the link once and only the metric sums (and MoBA's output, when kept) come back.
 * <p>Input rows: the nine {@link ScoreSchema#INPUT} columns, then {@link MobaDataset#PROBLEM} (null, or why a reader
 * found the record unreadable), {@link MobaDataset#TENSOR_FILE} and {@link MobaDataset#TENSOR_POSITIONS} (null, or
 * where the record's q, k and v lie in a file), then the columns carried through unchanged. Output rows:
 * {@link ScoreSchema#RESULT}, then {@code selected} when asked for, then the carried columns.
 */
final class MobaPartitions implements MapPartitionsFunction<Row, Row> {
    private static final long serialVersionUID = 1L;
    /** Where the problem and file columns are in an input row: after the tensor columns. */
    static final int INPUT_PROBLEM = ScoreSchema.INPUT.size();
    static final int INPUT_FILE = INPUT_PROBLEM + 1;
    static final int INPUT_POSITIONS = INPUT_PROBLEM + 2;
    /** Where the carried columns start in an input row. */
    static final int INPUT_CARRY = INPUT_PROBLEM + 3;
    /** Batches planned ahead of the one running: one loading while one runs. */
    private static final int LOAD_AHEAD = 2;

    private final MobaOptions options;
    private final MobaTimings timings;
    private final int carried;
    private final SerializableConfiguration hadoop;
    /** False for {@link MobaDataset#loadOnly}: batches are loaded and dropped, and no rows come out. */
    private final boolean computes;

    MobaPartitions(MobaOptions options, MobaTimings timings, int carried, SerializableConfiguration hadoop,
                   boolean computes) {
        this.options = options;
        this.timings = timings;
        this.carried = carried;
        this.hadoop = hadoop;
        this.computes = computes;
    }

    @Override
    public Iterator<Row> call(Iterator<Row> input) {
        long start = System.nanoTime();
        TaskContext task = TaskContext.get();
        String requested = options.backend();
        DeviceAssignment a = DeviceAssignment.forTask(requested, task, DeviceSlots.visibleDevices(requested));
        MobaAttention backend = ExecutorBackends.get(a);
        Rows rows = new Rows(input, backend, TaskDevice.of(task, a, backend), task == null ? -1
                : task.partitionId(), task == null ? "local" : Long.toString(task.taskAttemptId()), start);
        if (task != null) {
            task.addTaskCompletionListener((TaskCompletionListener) t -> rows.close());
        }
        return rows;
    }

    /** A record and the input row it came from (for the carried columns). */
    private record Pending(TensorRecord record, Row source) {
    }

    /** A group of records planned into one batch: rows rejected while planning, and the load of the good ones. */
    private record Planned(List<Row> rejected, List<Pending> group, Future<Timed> load) {
    }

    /** A load and the milliseconds it took on the loader thread. */
    private record Timed(BatchLoader.Loaded loaded, double ms) {
    }

    private final class Rows implements Iterator<Row> {
        private final Iterator<Row> input;
        private final MobaAttention backend;
        private final TaskDevice device;
        private final MobaParams params = options.params();
        private final Deque<Row> ready = new ArrayDeque<>();
        private final Deque<Planned> planned = new ArrayDeque<>();
        private final ExecutorService loaderThread;
        private final BatchLoader loader;
        /** Output files being written ({@link MobaOptions#outputFolder}), oldest first. */
        private final Deque<Future<?>> writes = new ArrayDeque<>();
        private final ExecutorService writerThread;
        private final int partition;
        private final String attempt;
        /** When the task called {@link #call}: the task's wall ends when its rows run out ({@link #close}). */
        private final long startNanos;
        private int batchIndex;
        private Pending lookahead;
        private boolean closed;

        Rows(Iterator<Row> input, MobaAttention backend, TaskDevice device, int partition, String attempt,
             long startNanos) {
            this.startNanos = startNanos;
            this.input = input;
            this.backend = backend;
            this.device = device;
            this.partition = partition;
            this.attempt = attempt;
            this.writerThread = options.outputFolder() == null ? null
                    : daemonThread("moba output writer, partition " + partition);
            this.loader = new BatchLoader(hadoop.value(), options.checkFinite(),
                    options.badRecords() == MobaOptions.BadRecords.FAIL, HostBuffers.executor(),
                    backend.hostMemory());
            this.loaderThread = daemonThread("moba loader, partition " + partition);
        }

        /** One daemon thread running submitted work in order (a task's helper; never holds the JVM open). */
        private static ExecutorService daemonThread(String name) {
            return Executors.newSingleThreadExecutor(r -> {
                Thread t = new Thread(r, name);
                t.setDaemon(true);
                return t;
            });
        }

        @Override
        public boolean hasNext() {
            while (ready.isEmpty() && !closed && (!planned.isEmpty() || lookahead != null || input.hasNext())) {
                step();
            }
            if (ready.isEmpty() && !closed) {
                while (!writes.isEmpty()) {
                    awaitWrite(); // the task succeeds only once every output file it points to is in place
                }
                close();
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

        /** Plans batches up to {@value #LOAD_AHEAD} ahead, then runs the oldest once it is loaded. */
        private void step() {
            while (planned.size() < LOAD_AHEAD && (lookahead != null || input.hasNext())) {
                planned.add(plan());
            }
            Planned p = planned.poll();
            ready.addAll(p.rejected());
            if (p.load() == null) {
                return;
            }
            Timed t = await(p.load(), timings.loadWaitMs, "loading a batch");
            BatchLoader.Loaded loaded = t.loaded();
            timings.loadMs.add(t.ms());
            timings.loadedBytes.add(loaded.bytes());
            if (!computes) {
                loaded.release();
                ready.clear();
                return;
            }
            try {
                for (BatchLoader.Rejected r : loaded.rejected()) {
                    Pending bad = p.group().get(r.index());
                    ready.add(rejectedRow(bad, r.reason()));
                }
                if (loaded.batch() != null) {
                    List<Pending> kept = loaded.kept().stream().map(p.group()::get).toList();
                    run(loaded.batch(), kept);
                }
            } finally {
                loaded.release();
            }
        }

        /**
         * The result of work on a helper thread, the wait added to {@code waitMs}. A failure is rethrown as it is
         * when unchecked (a bad record under --bad-records fail keeps its own message), else wrapped, saying
         * {@code what} failed.
         */
        private <T> T await(Future<T> work, DoubleAccumulator waitMs, String what) {
            long start = System.nanoTime();
            try {
                return work.get();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while " + what, e);
            } catch (ExecutionException e) {
                if (e.getCause() instanceof RuntimeException r) {
                    throw r;
                }
                throw new IllegalStateException(what + " failed: " + e.getCause(), e.getCause());
            } finally {
                waitMs.add((System.nanoTime() - start) / 1e6);
            }
        }

        private void awaitWrite() {
            await(writes.poll(), timings.writeWaitMs, "writing an output file under " + options.outputFolder());
        }

        /**
         * Lays out the batch's output file and queues its write (at most two in flight); returns where its tensors
         * will be.
         */
        private OutputFiles.File writeOutputs(PackedBatch batch, List<Pending> group, MobaOutput moba) {
            String name = String.format("part-%05d-%05d.safetensors", partition, batchIndex++);
            OutputFiles.File file;
            try {
                file = OutputFiles.of(options.outputFolder(), name, batch.layout(), batch.cuSeqlens(),
                        group.stream().map(p -> p.record().id()).toList(), moba.out(), moba.lse());
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
            while (writes.size() >= 2) {
                awaitWrite();
            }
            org.apache.hadoop.conf.Configuration conf = hadoop.value();
            writes.add(writerThread.submit(() -> {
                long start = System.nanoTime();
                file.write(conf, attempt);
                timings.writeMs.add((System.nanoTime() - start) / 1e6);
                return null;
            }));
            return file;
        }

        private Pending read(Row r) {
            String problem = r.isNullAt(INPUT_PROBLEM) ? null : r.getString(INPUT_PROBLEM);
            if (problem != null) {
                return new Pending(TensorRecord.broken(r.getString(0), problem), r);
            }
            if (!r.isNullAt(INPUT_FILE) && r.isNullAt(6)) {
                List<Long> at = r.getList(INPUT_POSITIONS);
                return new Pending(TensorRecord.inFile(r.getString(0), r.getInt(1), r.getString(2), r.getInt(3),
                        r.getInt(4), r.getInt(5), new TensorRecord.FileTensors(r.getString(INPUT_FILE), at.get(0),
                                at.get(1), at.get(2))), r);
            }
            return new Pending(TensorRecord.of(r.getString(0), r.getInt(1), r.getString(2), r.getInt(3), r.getInt(4),
                    r.getInt(5), (byte[]) r.get(6), (byte[]) r.get(7), (byte[]) r.get(8)), r);
        }

        /**
         * Takes the input's next records up to the token budget (one layout), rejecting structurally bad ones on the
         * way, and queues the load of the good ones.
         */
        private Planned plan() {
            long start = System.nanoTime();
            List<Row> rejected = new ArrayList<>();
            List<Pending> group = new ArrayList<>();
            BatchLayout layout = null;
            long tokens = 0;
            while (lookahead != null || input.hasNext()) {
                Pending p = lookahead != null ? lookahead : read(input.next());
                lookahead = null;
                TensorRecord r = p.record();
                try {
                    r.validate(false); // sizes and shapes here; values once loaded, by the loader
                } catch (BadRecordException e) {
                    if (options.badRecords() == MobaOptions.BadRecords.FAIL) {
                        throw e;
                    }
                    rejected.add(rejectedRow(p, e.reason()));
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
            timings.decodeMs.add((System.nanoTime() - start) / 1e6);
            if (group.isEmpty()) {
                return new Planned(rejected, group, null);
            }
            List<TensorRecord> records = group.stream().map(Pending::record).toList();
            BatchLayout batchLayout = layout;
            Future<Timed> load = loaderThread.submit(() -> {
                long t0 = System.nanoTime();
                BatchLoader.Loaded loaded = loader.load(records, batchLayout);
                return new Timed(loaded, (System.nanoTime() - t0) / 1e6);
            });
            return new Planned(rejected, group, load);
        }

        private Row rejectedRow(Pending p, String reason) {
            timings.rejected.add(1);
            return row(p.source(), p.record().id(), null, null, null, null, null, null, null, null, reason,
                    ScoreSchema.REJECTED, null, null);
        }

        /**
         * Stops the loader thread and gives back the buffers of batches loaded but not run (a failed or cancelled
         * task); idempotent, and called when the rows run out or the task completes.
         */
        void close() {
            if (closed) {
                return;
            }
            closed = true;
            timings.taskMs.add((System.nanoTime() - startNanos) / 1e6);
            for (Planned p : planned) {
                // A load not started yet is dropped (it took no buffers); one running or done is waited for, so that
                // its buffers go back to the pool (interrupting it could lose them, and page-locked ones with them).
                if (p.load() != null && !p.load().cancel(false)) {
                    try {
                        p.load().get().loaded().release();
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    } catch (ExecutionException | java.util.concurrent.CancellationException e) {
                        // Its failure is reported by the batch that waited for it, if any.
                    }
                }
            }
            planned.clear();
            loaderThread.shutdownNow();
            loader.close();
            if (writerThread != null) {
                writerThread.shutdown(); // a failed task's queued writes may finish; they only replace same bytes
            }
        }

        private void run(PackedBatch batch, List<Pending> group) {
            BatchLayout layout = batch.layout();
            MobaOutput moba;
            List<QualityMetrics> metrics = null;
            long callStart = System.nanoTime();
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
            timings.callMs.add((System.nanoTime() - callStart) / 1e6);
            timings.batches.add(1);
            timings.sequences.add(batch.numSequences());
            timings.tokens.add(batch.totalTokens());
            long rowsStart = System.nanoTime();
            int heads = layout.heads();
            int outRow = heads * layout.headDim();
            boolean inRows = options.outputs() && options.outputFolder() == null;
            OutputFiles.File file = options.outputs() && options.outputFolder() != null
                    ? writeOutputs(batch, group, moba) : null;
            for (int b = 0; b < batch.numSequences(); b++) {
                int start = batch.seqStart(b);
                int length = batch.seqLength(b);
                QualityMetrics q = metrics == null ? null : metrics.get(b);
                Row r = row(group.get(b).source(), group.get(b).record().id(), length, layout.dtype().label(), heads,
                        layout.headDim(),
                        // Straight from the batch's outputs into the row's bytes: no per-sequence arrays in between.
                        inRows ? TensorRecord.bytes(moba.out(), start * outRow, length * outRow) : null,
                        inRows ? TensorRecord.bytes(moba.lse(), start * heads, length * heads) : null,
                        options.selection() ? selected(moba, start, length, heads) : null,
                        q, null, ScoreSchema.SCORED, file == null ? null : file.name(),
                        file == null ? null : file.layout().positions(layout, start));
                ready.add(r);
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
                        byte[] out, byte[] lse, byte[] selected, QualityMetrics q, String reason, String outcome,
                        String outputFile, long[] outputPositions) {
            Object[] v = new Object[ScoreSchema.RESULT.size() + (options.selection() ? 1 : 0)
                    + (options.outputFolder() != null ? 2 : 0) + carried];
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
            if (options.outputFolder() != null) {
                v[i++] = outputFile;
                v[i++] = outputPositions == null ? null : CollectionConverters.asScala(
                        List.of(outputPositions[0], outputPositions[1])).toSeq();
            }
            for (int c = 0; c < carried; c++) {
                v[i++] = source.get(INPUT_CARRY + c);
            }
            return RowFactory.create(v);
        }
    }
}
