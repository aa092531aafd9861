package org.moba.kernels.cuda;

import static org.moba.kernels.cuda.CudaCheck.check;

import java.util.function.Supplier;

import jcuda.driver.CUevent;
import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

import org.moba.kernels.DenseComparison;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.PhaseTimings;
import org.moba.kernels.QualityMetrics;
import org.moba.kernels.cuda.DeviceBufferPool.DeviceBuffer;
import org.moba.kernels.cuda.StreamPool.CallStream;

/**
 * {@link CudaMobaAttention#compareWithDense} on the device. The batch is uploaded once: MoBA runs on the upload's
 * stream, dense causal attention on a second stream over the same q, k and v ({@link DeviceBatch#sameInputs}), and
 * once both are done a third stream runs {@code moba_score} (ABI.md, "Score metrics") and copies back only the
 * {@code [B, H, 5]} sums and, when asked, MoBA's {@code out}, {@code lse} and selection. The host finishes the
 * metrics with {@link QualityMetrics#fromSums}, the same code the host path uses.
 */
final class CudaDenseComparison {
    // Timing events of the metrics stream.
    private static final int METRICS_START = 0;
    private static final int METRICS_END = 1;
    private static final int DOWNLOAD_END = 2;

    private CudaDenseComparison() {
    }

    /** Runs MoBA (already uploaded as {@code moba}), dense attention and the metrics; {@code moba} stays open. */
    static DenseComparison run(CudaDevice device, DeviceBufferPool pool, StreamPool streams, MobaKernels kernels,
                               DeviceBatch moba, boolean keepOutputs) {
        PackedBatch batch = moba.batch();
        Supplier<String> context = () -> device.describe() + ", " + batch + ", " + moba.params()
                + " against dense attention";
        int sequences = batch.numSequences();
        int heads = batch.heads();
        try (DeviceBatch dense = moba.sameInputs(DenseComparison.denseParams(moba.params()))) {
            moba.enqueueKernels();
            dense.enqueueKernels();
            CallStream call = streams.acquire();
            CUstream stream = call.stream();
            CUevent[] events = call.events();
            DeviceBuffer sums = null;
            StagedCopies copies = null;
            boolean done = false;
            try {
                sums = pool.acquire(8L * sequences * heads * QualityMetrics.SUMS, () -> "the metric sums of "
                        + context.get());
                check(JCudaDriver.cuStreamWaitEvent(stream, moba.kernelsDone(), 0),
                        () -> "cuStreamWaitEvent for " + context.get());
                check(JCudaDriver.cuStreamWaitEvent(stream, dense.kernelsDone(), 0),
                        () -> "cuStreamWaitEvent for " + context.get());
                record(events[METRICS_START], stream, context);
                kernels.scoreSums(stream, context, moba.outPointer(), moba.lsePointer(), dense.outPointer(),
                        dense.lsePointer(), moba.cuSeqlensPointer(), sequences, heads, sums.pointer());
                record(events[METRICS_END], stream, context);
                copies = new StagedCopies(pool, stream, () -> "the download of " + context.get());
                double[] hostSums = new double[sequences * heads * QualityMetrics.SUMS];
                copies.download(sums.pointer(), hostSums);
                short[] out = null;
                float[] lse = null;
                int[] sel = null;
                if (keepOutputs) {
                    out = new short[Math.toIntExact(batch.qElements())];
                    lse = new float[batch.totalTokens() * heads];
                    sel = new int[Math.toIntExact((long) lse.length * moba.selectionWidth())];
                    copies.download(moba.outPointer(), out);
                    copies.download(moba.lsePointer(), lse);
                    copies.download(moba.selectionPointer(), sel);
                }
                record(events[DOWNLOAD_END], stream, context);
                copies.finish();
                check(JCudaDriver.cuEventSynchronize(events[DOWNLOAD_END]),
                        () -> "the metrics of " + context.get() + " (kernels: " + kernels + ")");
                done = true;

                double mobaUploadMs = moba.uploadMs();
                PhaseTimings mobaPhases = moba.kernelTimings(new PhaseTimings());
                double metricsMs = elapsed(events, METRICS_START, METRICS_END, context);
                double d2hMs = elapsed(events, METRICS_END, DOWNLOAD_END, context);
                PhaseTimings timings = new PhaseTimings()
                        .put(DenseComparison.H2D, mobaUploadMs + dense.uploadMs())
                        .put(DenseComparison.MOBA, mobaPhases.total())
                        .put(DenseComparison.DENSE, dense.kernelTimings(new PhaseTimings()).total())
                        .put(DenseComparison.METRICS, metricsMs)
                        .put(DenseComparison.D2H, d2hMs);
                MobaOutput kept = null;
                if (keepOutputs) {
                    PhaseTimings forward = new PhaseTimings().put("h2d", mobaUploadMs);
                    mobaPhases.asMap().forEach(forward::put);
                    kept = new MobaOutput(out, lse, sel, moba.selectionWidth(), forward.put("d2h", d2hMs));
                }
                return new DenseComparison(kept, QualityMetrics.fromSums(batch, hostSums), timings);
            } finally {
                // Nothing queued on the metrics stream may still read the outputs or write the sums once they are
                // handed back (the passes' own streams are waited for when they close).
                // On failure the exception in flight says what went wrong; the stream is only drained.
                if (!done) {
                    JCudaDriver.cuStreamSynchronize(stream);
                }
                if (copies != null) {
                    copies.close();
                }
                if (sums != null) {
                    pool.release(sums);
                }
                streams.release(call);
            }
        }
    }

    private static void record(CUevent event, CUstream stream, Supplier<String> context) {
        check(JCudaDriver.cuEventRecord(event, stream), () -> "cuEventRecord for " + context.get());
    }

    private static double elapsed(CUevent[] events, int from, int to, Supplier<String> context) {
        float[] ms = new float[1];
        check(JCudaDriver.cuEventElapsedTime(ms, events[from], events[to]),
                () -> "cuEventElapsedTime for " + context.get());
        return ms[0];
    }
}
