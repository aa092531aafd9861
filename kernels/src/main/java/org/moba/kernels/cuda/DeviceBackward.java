package org.moba.kernels.cuda;

import java.util.List;
import java.util.function.Supplier;

import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUstream;

import org.moba.kernels.MobaGradients;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.PhaseTimings;
import org.moba.kernels.cuda.DeviceBufferPool.DeviceBuffer;
import org.moba.kernels.cuda.StreamPool.CallStream;

/**
 * One MoBA backward pass on the device (ABI.md "# Backward"): {@code dout}, {@code delta}, the routing scratch,
 * {@code partial_dq} and the gradients, over the forward's q, k, v, out, lse and selection. Two kinds:
 * <ul>
 *   <li><b>standalone</b> ({@link CudaMobaAttention#uploadBackward}): uploads the batch, the forward's arrays and
 *       {@code dout} on a stream of its own ({@link CudaMobaAttention#backward} runs it once and downloads);</li>
 *   <li><b>resident</b> ({@link CudaMobaAttention#prepareBackward}): reads the tensors a {@link DeviceBatch}'s forward
 *       left on the device and runs on that batch's stream, uploading only {@code dout}; what a benchmark of
 *       forward + backward times. The forward batch must have run before {@link #run()} and closes this with
 *       itself.</li>
 * </ul>
 * {@link #run()} runs the kernels (and only the kernels) as often as wanted; phases {@code delta}, {@code route}
 * (zeroing, counting, totals, scan, place, fill), {@code dq_selected}, {@code fused}, {@code dq}, {@code dkdv}, where
 * {@code fused} (the sm_90a kernel, {@link MobaBackwardKernels#usesFused}) replaces {@code dq_selected} and
 * {@code dkdv}, which then report 0; {@link #download()}
 * fetches the latest run's gradients with {@code h2d} and {@code d2h} added. Every launch is deterministic: the
 * gradients are bit-identical run to run. Used by one thread at a time; {@link #close()} hands everything back.
 */
public final class DeviceBackward implements AutoCloseable {
    // Timing events, after the forward's in the call stream's event array, in the order they are recorded.
    private static final int UPLOAD_START = 0;
    private static final int UPLOAD_END = 1;
    private static final int KERNELS_START = 2;
    private static final int DELTA_END = 3;
    private static final int ROUTE_END = 4;
    /** After dq_selected, or after the fused kernel when it runs instead. */
    private static final int DQ_SELECTED_END = 5;
    private static final int DQ_END = 6;
    private static final int DKDV_END = 7;
    private static final int DOWNLOAD_START = 8;
    private static final int DOWNLOAD_END = 9;
    static final int EVENTS = 10;
    private static final int EVENT_BASE = DeviceBatch.EVENTS;
    private static final CUdeviceptr NULL = new CUdeviceptr();

    private final CudaDevice device;
    private final DeviceBatch forward;
    private final MobaBackwardKernels kernels;
    private final boolean poison;
    private final PackedBatch batch;
    private final MobaParams params;
    private final BatchPlan plan;
    private final BackwardScratch scratch;
    private final int rowsPerGroup;
    private final Supplier<String> context;
    /** Stream, events (from {@link #EVENT_BASE}) and buffers; the stream is the forward batch's when resident. */
    private final DeviceCall call;
    private final CUstream stream;
    private CUdeviceptr q;
    private CUdeviceptr k;
    private CUdeviceptr v;
    private CUdeviceptr out;
    private CUdeviceptr lse;
    private CUdeviceptr sel;
    private CUdeviceptr cuSeqlens;
    private CUdeviceptr chunkBase;
    private CUdeviceptr tiles;
    /** The plan's 128-row tiles: the fused kernel's key blocks. */
    private CUdeviceptr wideTiles;
    /** Whether the fused kernel runs instead of dq_selected and dkdv. */
    private final boolean fused;
    private DeviceBuffer dout;
    private DeviceBuffer delta;
    private DeviceBuffer groupCount;
    private DeviceBuffer bucketCount;
    private DeviceBuffer bucketRow0;
    private DeviceBuffer bucketGroup0;
    private DeviceBuffer bucketCursor;
    private DeviceBuffer rows;
    private DeviceBuffer partialDq;
    private DeviceBuffer dq;
    private DeviceBuffer dk;
    private DeviceBuffer dv;
    private long extraBytes;

    private DeviceBackward(CudaDevice device, DeviceBufferPool pool, StreamPool streams, CallStream callStream,
                           DeviceBatch forward, MobaBackwardKernels kernels, boolean poison, PackedBatch batch,
                           MobaParams params, BatchPlan plan, BackwardScratch scratch) {
        this.device = device;
        this.forward = forward;
        this.kernels = kernels;
        this.poison = poison;
        this.batch = batch;
        this.params = params;
        this.plan = plan;
        this.scratch = scratch;
        this.rowsPerGroup = MobaKernels.rowsPerGroup(params.chunkSize());
        this.fused = kernels.usesFused(plan.dense, params.chunkSize());
        if ((fused || kernels.wideDq()) && plan.numWideTiles == 0 && plan.numTiles > 0) {
            throw new IllegalStateException("the wgmma backward needs the plan's 128-row tiles: build the plan for "
                    + "the wgmma engine");
        }
        this.context = () -> device.describe() + ", backward of " + batch + ", " + params;
        this.call = new DeviceCall(device, pool, streams, callStream, EVENT_BASE, context, kernels,
                "device backward");
        this.stream = callStream.stream();
    }

    /**
     * Standalone: allocates everything and queues the upload of the batch, the forward's out, lse and (when routed)
     * selection, and {@code dout} on a stream of its own. Inputs must have been validated
     * ({@link CudaInputRules#checkBackward}).
     */
    static DeviceBackward upload(CudaDevice device, DeviceBufferPool pool, StreamPool streams,
                                 MobaBackwardKernels kernels, boolean poison, PackedBatch batch, MobaParams params,
                                 BatchPlan plan, BackwardScratch scratch, MobaOutput forwardOutput, short[] dout) {
        DeviceBackward b = new DeviceBackward(device, pool, streams, streams.acquire(), null, kernels, poison, batch,
                params, plan, scratch);
        try {
            b.allocateScratchAndOutputs(b.allocateInputs());
            b.uploadAll(forwardOutput, dout);
        } catch (RuntimeException e) {
            b.close();
            throw e;
        }
        return b;
    }

    /**
     * Resident: on {@code forward}'s device tensors and stream; allocates the scratch and outputs and queues the
     * upload of {@code dout} (validated by the caller).
     */
    static DeviceBackward onDevice(DeviceBatch forward, DeviceBufferPool pool, MobaBackwardKernels kernels,
                                   boolean poison, BackwardScratch scratch, short[] dout) {
        DeviceBatch.Resident r = forward.resident();
        DeviceBackward b = new DeviceBackward(forward.cudaDevice(), pool, null, r.call(), forward, kernels, poison,
                forward.batch(), forward.params(), forward.plan(), scratch);
        try {
            b.q = r.q();
            b.k = r.k();
            b.v = r.v();
            b.out = r.out();
            b.lse = r.lse();
            b.sel = r.sel();
            b.cuSeqlens = r.cuSeqlens();
            b.chunkBase = r.chunkBase();
            b.tiles = r.tiles();
            b.wideTiles = r.wideTiles();
            b.allocateScratchAndOutputs(r.indexBytes());
            b.call.record(UPLOAD_START);
            b.call.transfers("the upload of dout for ").upload(dout, b.dout.pointer());
            b.call.record(UPLOAD_END);
            forward.attach(b);
        } catch (RuntimeException e) {
            b.close();
            throw e;
        }
        return b;
    }

    private DeviceBuffer allocate(long bytes, String what) {
        return call.allocate(bytes, what);
    }

    /** Returns the bytes of the index arrays (cu_seqlens, chunk_base, tiles) by capacity. */
    private long allocateInputs() {
        q = allocate(2L * batch.qElements(), "q").pointer();
        k = allocate(2L * batch.kvElements(), "k").pointer();
        v = allocate(2L * batch.kvElements(), "v").pointer();
        out = allocate(2L * batch.qElements(), "out").pointer();
        lse = allocate(4L * batch.totalTokens() * batch.heads(), "lse").pointer();
        sel = allocate(scratch.routed() ? 4L * scratch.entries() : 0, "selection").pointer();
        DeviceBuffer cu = allocate(4L * batch.cuSeqlens().length, "cu_seqlens");
        DeviceBuffer base = allocate(4L * plan.chunkBase.length, "chunk_base");
        DeviceBuffer tileList = allocate(4L * plan.tiles.length, "tiles");
        DeviceBuffer wideTileList = allocate(4L * plan.wideTiles.length, "wide tiles");
        cuSeqlens = cu.pointer();
        chunkBase = base.pointer();
        tiles = tileList.pointer();
        wideTiles = wideTileList.pointer();
        return cu.capacity() + base.capacity() + tileList.capacity() + wideTileList.capacity();
    }

    /**
     * {@code dout}, the scratch and the gradients. The extra bytes are the scratch's plus {@code indexBytes} (the
     * index arrays: this call's own, or for a resident backward the forward's), by allocated capacity.
     */
    private void allocateScratchAndOutputs(long indexBytes) {
        dout = allocate(2L * batch.qElements(), "dout");
        delta = allocate(scratch.deltaBytes(), "delta");
        groupCount = allocate(scratch.groupCountBytes(), "group counts");
        bucketCount = allocate(scratch.bucketCountBytes(), "bucket counts");
        bucketRow0 = allocate(scratch.bucketPrefixBytes(), "bucket row offsets");
        bucketGroup0 = allocate(scratch.bucketPrefixBytes(), "bucket group offsets");
        bucketCursor = allocate(scratch.bucketCountBytes(), "bucket cursors");
        rows = allocate(scratch.rowsBytes(), "routed rows");
        partialDq = allocate(scratch.partialDqBytes(), "partial dq");
        dq = allocate(2L * batch.qElements(), "dq");
        dk = allocate(2L * batch.kvElements(), "dk");
        dv = allocate(2L * batch.kvElements(), "dv");
        long scratchBytes = 0;
        for (DeviceBuffer b : List.of(delta, groupCount, bucketCount, bucketRow0, bucketGroup0, bucketCursor, rows,
                partialDq)) {
            scratchBytes += b.capacity();
        }
        extraBytes = scratchBytes + indexBytes;
    }

    private void uploadAll(MobaOutput forwardOutput, short[] doutHost) {
        call.record(UPLOAD_START);
        StagedCopies transfers = call.transfers("the upload of ");
        transfers.upload(batch, StagedCopies.Tensor.Q, q);
        transfers.upload(batch, StagedCopies.Tensor.K, k);
        transfers.upload(batch, StagedCopies.Tensor.V, v);
        transfers.upload(forwardOutput.out(), out);
        transfers.upload(forwardOutput.lse(), lse);
        if (scratch.routed()) {
            transfers.upload(forwardOutput.selected(), sel);
        }
        transfers.upload(doutHost, dout.pointer());
        transfers.upload(batch.cuSeqlens(), cuSeqlens);
        transfers.upload(plan.chunkBase, chunkBase);
        transfers.upload(plan.tiles, tiles);
        transfers.upload(plan.wideTiles, wideTiles);
        call.record(UPLOAD_END);
    }

    /**
     * Runs the backward kernels once and waits for them. Returns their times in ms: {@code delta}, {@code route},
     * {@code dq_selected}, {@code fused}, {@code dq}, {@code dkdv} (zero for a phase that does not run). Transfers not
     * included.
     */
    public PhaseTimings run() {
        call.ensureOpen();
        device.makeCurrent();
        enqueueKernels();
        call.awaitKernels(DKDV_END, "the backward kernels of ");
        return kernelTimings(new PhaseTimings());
    }

    /** Fetches the gradients of the latest run, with the times of the upload, that run and this download. */
    public MobaGradients download() {
        call.ensureDownloadable();
        return enqueueDownloadAndWait();
    }

    /** Upload (already queued), kernels and download with a single wait at the end: the backward() path. */
    MobaGradients runAndDownload() {
        call.ensureOpen();
        device.makeCurrent();
        enqueueKernels();
        return enqueueDownloadAndWait();
    }

    private void enqueueKernels() {
        if (forward != null && !forward.hasRun()) {
            throw new IllegalStateException("backward run() before the forward of " + forward.batch() + ", "
                    + forward.params() + " ran: run the forward DeviceBatch first");
        }
        if (poison) {
            enqueuePoison();
        }
        call.record(KERNELS_START);
        int heads = batch.heads();
        int hkv = batch.kvHeads();
        int c = params.chunkSize();
        int nfc = plan.numFullChunks;
        boolean routed = scratch.routed();
        int width = routed ? plan.selectionWidth : 0;
        boolean work = plan.numTiles > 0;
        if (work) {
            kernels.delta(stream, context, out, dout.pointer(), delta.pointer(),
                    Math.multiplyExact(batch.totalTokens(), heads));
        }
        call.record(DELTA_END);
        if (routed) {
            kernels.route(stream, context, sel, cuSeqlens, chunkBase, batch.numSequences(), heads, width, nfc,
                    batch.totalTokens(), scratch, rowsPerGroup, groupCount.pointer(), bucketCount.pointer(),
                    bucketRow0.pointer(), bucketGroup0.pointer(), bucketCursor.pointer(), rows.pointer());
        }
        call.record(ROUTE_END);
        if (fused && work) {  // dk, dv and the partials, which dq adds
            kernels.fused(stream, context, q, k, v, dout.pointer(), lse, delta.pointer(), dk.pointer(), dv.pointer(),
                    routed ? partialDq.pointer() : NULL, cuSeqlens, chunkBase, wideTiles, plan.numWideTiles,
                    routed ? bucketRow0.pointer() : NULL, routed ? rows.pointer() : NULL, heads, hkv, width, c, nfc,
                    plan.scale, plan.dense);
        } else if (routed) {
            kernels.dqSelected(stream, context, q, k, v, dout.pointer(), lse, delta.pointer(), cuSeqlens, chunkBase,
                    batch.numSequences(), bucketRow0.pointer(), bucketGroup0.pointer(), rows.pointer(), rowsPerGroup,
                    partialDq.pointer(), heads, hkv, width, c, nfc, Math.toIntExact(scratch.entries()), plan.scale);
        }
        call.record(DQ_SELECTED_END);
        if (work) {
            kernels.dq(stream, context, q, k, v, dout.pointer(), lse, delta.pointer(), dq.pointer(), cuSeqlens,
                    routed ? sel : NULL, width, kernels.wideDq() ? wideTiles : tiles,
                    kernels.wideDq() ? plan.numWideTiles : plan.numTiles, heads, hkv, c, plan.scale, plan.dense,
                    routed ? partialDq.pointer() : NULL);
        }
        call.record(DQ_END);
        if (work && !fused) {
            kernels.dkdv(stream, context, q, k, v, dout.pointer(), lse, delta.pointer(), dk.pointer(), dv.pointer(),
                    cuSeqlens, chunkBase, tiles, plan.numTiles, routed ? bucketRow0.pointer() : NULL,
                    routed ? rows.pointer() : NULL, heads, hkv, width, c, nfc, plan.scale, plan.dense);
        }
        call.record(DKDV_END);
        call.markRan();
    }

    /** Fills the gradients, delta and partial dq with NaN, so that unwritten elements show. */
    private void enqueuePoison() {
        call.poison(dq, DeviceCall.POISON_16, "dq");
        call.poison(dk, DeviceCall.POISON_16, "dk");
        call.poison(dv, DeviceCall.POISON_16, "dv");
        call.poison(partialDq, DeviceCall.POISON_16, "the partial dq");
        call.poison(delta, DeviceCall.POISON_32, "delta");
    }

    private MobaGradients enqueueDownloadAndWait() {
        short[] dqHost = new short[Math.toIntExact(batch.qElements())];
        short[] dkHost = new short[Math.toIntExact(batch.kvElements())];
        short[] dvHost = new short[Math.toIntExact(batch.kvElements())];
        call.downloadAndWait(DOWNLOAD_START, DOWNLOAD_END, copies -> {
            copies.download(dq.pointer(), dqHost);
            copies.download(dk.pointer(), dkHost);
            copies.download(dv.pointer(), dvHost);
        });
        PhaseTimings timings = new PhaseTimings().put("h2d", call.elapsed(UPLOAD_START, UPLOAD_END));
        kernelTimings(timings).put("d2h", call.elapsed(DOWNLOAD_START, DOWNLOAD_END));
        return new MobaGradients(dqHost, dkHost, dvHost, timings);
    }

    private PhaseTimings kernelTimings(PhaseTimings timings) {
        double selectedOrFused = call.elapsed(ROUTE_END, DQ_SELECTED_END);
        return timings.put("delta", call.elapsed(KERNELS_START, DELTA_END))
                .put("route", call.elapsed(DELTA_END, ROUTE_END))
                .put("dq_selected", fused ? 0 : selectedOrFused)
                .put("fused", fused ? selectedOrFused : 0)
                .put("dq", call.elapsed(DQ_SELECTED_END, DQ_END))
                .put("dkdv", call.elapsed(DQ_END, DKDV_END));
    }

    /**
     * Device bytes of this backward beyond its inputs (q, k, v, out, lse, selection, dout) and outputs (dq, dk, dv),
     * by allocated capacity: delta, the routing buffers, partial dq and the index arrays (cu_seqlens, chunk_base,
     * tiles; a resident backward shares the forward's, counted here too), i.e. what a standalone call allocates.
     */
    public long extraDeviceBytes() {
        return extraBytes;
    }

    /** The scratch this backward uses, with its sizes, for logs. */
    public String scratchDescription() {
        return scratch.toString();
    }

    public PackedBatch batch() {
        return batch;
    }

    public MobaParams params() {
        return params;
    }

    /** Waits for queued work, then returns buffers and slabs (and, standalone, the stream) to their pools. */
    @Override
    public void close() {
        if (call.isClosed()) {
            return;
        }
        if (forward != null) {
            forward.detach(this);
        }
        call.close();
    }
}
