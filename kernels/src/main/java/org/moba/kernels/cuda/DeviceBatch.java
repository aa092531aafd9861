package org.moba.kernels.cuda;

import static org.moba.kernels.cuda.CudaCheck.check;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Supplier;

import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUevent;
import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.PhaseTimings;
import org.moba.kernels.PreparedBatch;
import org.moba.kernels.cuda.DeviceBufferPool.DeviceBuffer;
import org.moba.kernels.cuda.StreamPool.CallStream;

/**
 * A batch resident on the device for one set of parameters: inputs, index arrays, scratch and outputs, with its
 * own stream. {@link CudaMobaAttention#upload} creates it and queues the upload; {@link #run()} runs the kernels
 * (and only the kernels) as often as wanted, which is what benchmarks time; {@link #download()} fetches the
 * result of the latest run. Attention runs on the {@link AttentionPath} chosen at upload; its time (routing, selected
 * chunks and own chunk + merge on GATHERED) is the {@code attention} phase either way. A backward pass can run on
 * the state a run leaves on the device ({@link CudaMobaAttention#prepareBackward}); it shares this batch's stream and
 * is closed with it. Used by one thread at a time; {@link #close()} hands everything back to the pools.
 */
public final class DeviceBatch implements PreparedBatch {
    // Timing events of the call stream, in the order they are recorded.
    private static final int UPLOAD_START = 0;
    private static final int UPLOAD_END = 1;
    private static final int KERNELS_START = 2;
    private static final int MEANS_END = 3;
    private static final int GATE_END = 4;
    private static final int ATTENTION_END = 5;
    private static final int DOWNLOAD_START = 6;
    private static final int DOWNLOAD_END = 7;
    static final int EVENTS = 8;

    /** A selection entry no kernel writes (-1 is padding); see {@link DeviceCall#POISON_16} for the tensors. */
    private static final int POISON_SELECTION = -2;

    /**
     * What a backward pass on this batch reads from the device ({@link DeviceBackward}): its stream and the
     * forward's tensors and index arrays. Valid while the batch is open.
     */
    record Resident(CallStream call, CUdeviceptr q, CUdeviceptr k, CUdeviceptr v, CUdeviceptr out, CUdeviceptr lse,
                    CUdeviceptr sel, CUdeviceptr cuSeqlens, CUdeviceptr chunkBase, CUdeviceptr tiles,
                    CUdeviceptr wideTiles, long indexBytes) {
    }

    private final CudaDevice device;
    private final DeviceBufferPool pool;
    private final StreamPool streams;
    private final MobaKernels kernels;
    private final boolean poison;
    private final PackedBatch batch;
    private final MobaParams params;
    private final BatchPlan plan;
    private final Supplier<String> context;
    private final DeviceCall call;
    private final CUstream stream;
    private final DeviceBuffer q;
    private final DeviceBuffer k;
    private final DeviceBuffer v;
    private final DeviceBuffer cuSeqlens;
    private final DeviceBuffer chunkBase;
    private final DeviceBuffer tiles;
    /** The 128-row tiles of the wgmma engine's kernels (empty on the mma.sync engine). */
    private final DeviceBuffer wideTiles;
    private final DeviceBuffer gateTiles;
    private final DeviceBuffer mu;
    private final DeviceBuffer muPlanes;
    private final DeviceBuffer muUnscale;
    private final DeviceBuffer sel;
    private final DeviceBuffer selScores;
    private final DeviceBuffer out;
    private final DeviceBuffer lse;
    private final AttentionPath.Choice path;
    private final int rowsPerGroup;
    private final DeviceBuffer bucketCount;
    private final DeviceBuffer bucketRow0;
    private final DeviceBuffer bucketGroup0;
    private final DeviceBuffer bucketCursor;
    private final DeviceBuffer routedRows;
    private final DeviceBuffer partialOut;
    private final DeviceBuffer partialLse;
    private final long extraBytes;
    /** Backward passes prepared on this batch's device state ({@link CudaMobaAttention#prepareBackward}). */
    private final List<DeviceBackward> backwards = new ArrayList<>();
    /** The batch whose q, k, v and cu_seqlens this one reads ({@link #sameInputs}), or null: its own. */
    private final DeviceBatch inputs;

    DeviceBatch(CudaDevice device, DeviceBufferPool pool, StreamPool streams, MobaKernels kernels, boolean poison,
                PackedBatch batch, MobaParams params, BatchPlan plan, AttentionPath.Choice path) {
        this(device, pool, streams, kernels, poison, batch, params, plan, path, null);
    }

    private DeviceBatch(CudaDevice device, DeviceBufferPool pool, StreamPool streams, MobaKernels kernels,
                        boolean poison, PackedBatch batch, MobaParams params, BatchPlan plan,
                        AttentionPath.Choice path, DeviceBatch inputs) {
        this.inputs = inputs;
        this.device = device;
        this.pool = pool;
        this.streams = streams;
        this.kernels = kernels;
        this.poison = poison;
        this.batch = batch;
        this.params = params;
        this.plan = plan;
        this.path = path;
        this.rowsPerGroup = kernels.forwardRowsPerGroup(params.chunkSize());
        this.context = () -> device.describe() + ", " + batch + ", " + params;
        this.call = new DeviceCall(device, pool, streams, streams.acquire(), 0, context, kernels, "device batch");
        this.stream = call.stream();
        long tokens = batch.totalTokens();
        long heads = batch.heads();
        int d = batch.headDim();
        try {
            if (inputs == null) {
                q = allocate(2L * batch.qElements(), "q");
                k = allocate(2L * batch.kvElements(), "k");
                v = allocate(2L * batch.kvElements(), "v");
            } else {
                q = inputs.q;
                k = inputs.k;
                v = inputs.v;
            }
            out = allocate(2L * batch.qElements(), "out");
            lse = allocate(4L * tokens * heads, "lse");
            cuSeqlens = inputs == null ? allocate(4L * batch.cuSeqlens().length, "cu_seqlens") : inputs.cuSeqlens;
            chunkBase = allocate(4L * plan.chunkBase.length, "chunk_base");
            tiles = allocate(4L * plan.tiles.length, "tiles");
            wideTiles = allocate(4L * plan.wideTiles.length, "wide tiles");
            gateTiles = allocate(4L * plan.gateTiles.length, "gate tiles");
            long means = plan.runsGate() ? (long) plan.numFullChunks * batch.kvHeads() : 0;
            mu = allocate(4L * means * d, "chunk means");
            muPlanes = allocate(3L * 2L * means * d, "chunk mean planes");
            muUnscale = allocate(4L * means, "chunk mean scales");
            long selected = tokens * heads * plan.selectionWidth;
            sel = allocate(4L * selected, "selection");
            selScores = allocate(MobaKernels.needsSelectionScores(plan.selectionWidth) ? 4L * selected : 0,
                    "selection scores");
            boolean gathered = path.path() == AttentionPath.GATHERED;
            GatheredScratch g = path.scratch();
            bucketCount = allocate(gathered ? g.bucketCountBytes() : 0, "bucket counts");
            bucketRow0 = allocate(gathered ? g.bucketPrefixBytes() : 0, "bucket row offsets");
            bucketGroup0 = allocate(gathered ? g.bucketPrefixBytes() : 0, "bucket group offsets");
            bucketCursor = allocate(gathered ? g.bucketCursorBytes() : 0, "bucket cursors");
            routedRows = allocate(gathered ? g.rowsBytes() : 0, "routed rows");
            partialOut = allocate(gathered ? g.partialOutBytes() : 0, "partial outputs");
            partialLse = allocate(gathered ? g.partialLseBytes() : 0, "partial lse");
            long extra = call.allocatedBytes();
            long inputBytes = inputs == null ? q.capacity() + k.capacity() + v.capacity() : 0;
            extraBytes = extra - inputBytes - out.capacity() - lse.capacity();
            upload();
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    private DeviceBuffer allocate(long bytes, String what) {
        return call.allocate(bytes, what);
    }

    private void upload() {
        if (inputs != null) { // the shared inputs must have landed before this batch's kernels read them
            check(JCudaDriver.cuStreamWaitEvent(stream, inputs.call.event(UPLOAD_END), 0),
                    () -> "cuStreamWaitEvent for " + context.get());
        }
        call.record(UPLOAD_START);
        StagedCopies transfers = call.transfers("the upload of ");
        if (inputs == null) {
            transfers.upload(batch, StagedCopies.Tensor.Q, q.pointer());
            transfers.upload(batch, StagedCopies.Tensor.K, k.pointer());
            transfers.upload(batch, StagedCopies.Tensor.V, v.pointer());
            transfers.upload(batch.cuSeqlens(), cuSeqlens.pointer());
        }
        transfers.upload(plan.chunkBase, chunkBase.pointer());
        transfers.upload(plan.tiles, tiles.pointer());
        transfers.upload(plan.wideTiles, wideTiles.pointer());
        transfers.upload(plan.gateTiles, gateTiles.pointer());
        call.record(UPLOAD_END);
    }

    /**
     * Runs the kernels once and waits for them. Returns their times in ms: {@code chunk_means}, {@code gate_topk},
     * {@code attention} (zero for a phase that does not run). Transfers are not included.
     */
    @Override
    public PhaseTimings run() {
        call.ensureOpen();
        device.makeCurrent();
        enqueueKernels();
        call.awaitKernels(ATTENTION_END, "the kernels of ");
        return kernelTimings(new PhaseTimings());
    }

    /** Fetches the output of the latest run, with the times of the upload, that run and this download. */
    @Override
    public MobaOutput download() {
        call.ensureDownloadable();
        return enqueueDownloadAndWait();
    }

    /** Upload (already queued), kernels and download with a single wait at the end: the forward() path. */
    MobaOutput runAndDownload() {
        device.makeCurrent();
        enqueueKernels();
        return enqueueDownloadAndWait();
    }

    /**
     * A second resident batch for {@code otherParams} on the same batch that reads this one's q, k, v and
     * cu_seqlens instead of uploading them again, on a stream of its own that first waits for this batch's upload
     * (uploading only its own index arrays). Close it before this one.
     */
    DeviceBatch sameInputs(MobaParams otherParams) {
        call.ensureOpen();
        CudaInputRules.check(batch, otherParams);
        device.makeCurrent();
        BatchPlan otherPlan = BatchPlan.of(batch, otherParams, kernels.engine());
        AttentionPath.Choice otherPath = AttentionPath.choose(otherPlan, batch.totalTokens(), batch.heads(),
                batch.headDim(), null, () -> device.freeMemory() + pool.bytesCached(),
                AttentionPath.PairCosts.of(kernels, otherParams.chunkSize()));
        return new DeviceBatch(device, pool, streams, kernels, poison, batch, otherParams, otherPlan, otherPath, this);
    }

    /** Queues the kernels behind the upload without waiting (the caller waits for {@link #kernelsDone()}). */
    void enqueueKernels() {
        if (poison) {
            enqueuePoison();
        }
        call.record(KERNELS_START);
        CUstream s = stream;
        int hkv = batch.kvHeads();
        int c = params.chunkSize();
        if (plan.runsGate() && plan.numFullChunks > 0) {
            kernels.chunkMeans(s, context, k.pointer(), cuSeqlens.pointer(), chunkBase.pointer(),
                    batch.numSequences(), hkv, c, plan.numFullChunks, mu.pointer(), muPlanes.pointer(),
                    muUnscale.pointer());
        }
        call.record(MEANS_END);
        if (plan.runsGate() && plan.numTiles > 0 && plan.numFullChunks == 0) {
            // No sequence has a full chunk, so no query has a candidate: the selection is all padding.
            check(JCudaDriver.cuMemsetD32Async(sel.pointer(), -1, sel.bytes() / 4, stream),
                    () -> "clearing the selection of " + context.get());
        } else if (plan.runsGate() && plan.numTiles > 0) {
            kernels.gateTopk(s, context, q.pointer(), muPlanes.pointer(), muUnscale.pointer(), cuSeqlens.pointer(),
                    chunkBase.pointer(), gateTiles.pointer(), plan.numGateTiles, plan.numScoredGateTiles, sel.pointer(),
                    selScores.pointer(), plan.selectionWidth, batch.heads(), hkv, c, plan.numFullChunks,
                    batch.totalTokens());
        }
        call.record(GATE_END);
        if (plan.numTiles > 0 && path.path() == AttentionPath.GATHERED) {
            enqueueGatheredAttention();
        } else if (plan.numTiles > 0) {
            ForwardEngine engine = kernels.attentionOnWgmma(plan.dense, plan.selectionWidth, c)
                    ? ForwardEngine.WGMMA : ForwardEngine.MMA_SYNC;
            kernels.attention(s, context, q.pointer(), k.pointer(), v.pointer(), out.pointer(), lse.pointer(),
                    cuSeqlens.pointer(), sel.pointer(), plan.selectionWidth, tilesFor(engine),
                    plan.numTilesFor(engine), batch.heads(), hkv, c, plan.scale, plan.dense);
        }
        call.record(ATTENTION_END);
        call.markRan();
    }

    /** ABI.md section 4: routing, the selected chunks per bucket, then the own chunk merged with the partials. */
    private void enqueueGatheredAttention() {
        int heads = batch.heads();
        int hkv = batch.kvHeads();
        int c = params.chunkSize();
        int w = plan.selectionWidth;
        if (plan.numFullChunks > 0) { // else every selection entry is padding: nothing to route
            int entries = Math.toIntExact(path.scratch().entries());
            kernels.route(stream, context, sel.pointer(), cuSeqlens.pointer(), chunkBase.pointer(),
                    batch.numSequences(), heads, w, plan.numFullChunks, entries, c, rowsPerGroup,
                    bucketCount.pointer(), bucketRow0.pointer(), bucketGroup0.pointer(), bucketCursor.pointer(),
                    routedRows.pointer());
            kernels.attentionSelected(stream, context, q.pointer(), k.pointer(), v.pointer(), cuSeqlens.pointer(),
                    chunkBase.pointer(), batch.numSequences(), bucketRow0.pointer(), bucketGroup0.pointer(),
                    routedRows.pointer(), rowsPerGroup, partialOut.pointer(), partialLse.pointer(), heads, hkv, w, c,
                    plan.numFullChunks, entries, plan.scale);
        }
        ForwardEngine engine = kernels.gatheredOnWgmma(c) ? ForwardEngine.WGMMA : ForwardEngine.MMA_SYNC;
        kernels.attentionOwnCombine(stream, context, q.pointer(), k.pointer(), v.pointer(), out.pointer(),
                lse.pointer(), cuSeqlens.pointer(), sel.pointer(), w, tilesFor(engine), plan.numTilesFor(engine), heads,
                hkv, c, plan.scale, partialOut.pointer(), partialLse.pointer());
    }

    private CUdeviceptr tilesFor(ForwardEngine engine) {
        return engine == ForwardEngine.WGMMA ? wideTiles.pointer() : tiles.pointer();
    }

    /** Fills every output and scratch buffer with values no kernel produces, so unwritten elements show. */
    private void enqueuePoison() {
        call.poison(out, DeviceCall.POISON_16, "out");
        call.poison(lse, DeviceCall.POISON_32, "lse");
        call.poison(mu, DeviceCall.POISON_32, "the chunk means");
        call.poison(muPlanes, DeviceCall.POISON_16, "the chunk mean planes");
        call.poison(muUnscale, DeviceCall.POISON_32, "the chunk mean scales");
        call.poison(sel, POISON_SELECTION, "the selection");
        call.poison(selScores, DeviceCall.POISON_32, "the selection scores");
        call.poison(partialOut, DeviceCall.POISON_16, "the partial outputs");
        call.poison(partialLse, DeviceCall.POISON_32, "the partial lse");
    }

    private MobaOutput enqueueDownloadAndWait() {
        short[] outHost = new short[Math.toIntExact(batch.qElements())];
        float[] lseHost = new float[batch.totalTokens() * batch.heads()];
        int[] selHost = new int[Math.toIntExact((long) lseHost.length * plan.selectionWidth)];
        call.downloadAndWait(DOWNLOAD_START, DOWNLOAD_END, copies -> {
            copies.download(out.pointer(), outHost);
            copies.download(lse.pointer(), lseHost);
            copies.download(sel.pointer(), selHost);
        });
        PhaseTimings timings = new PhaseTimings().put("h2d", call.elapsed(UPLOAD_START, UPLOAD_END));
        kernelTimings(timings).put("d2h", call.elapsed(DOWNLOAD_START, DOWNLOAD_END));
        return new MobaOutput(outHost, lseHost, selHost, plan.selectionWidth, timings);
    }

    /** Recorded on this batch's stream after the latest queued kernels: other streams may wait for it. */
    CUevent kernelsDone() {
        return call.event(ATTENTION_END);
    }

    /** Time of this batch's upload, in ms; only once {@link #kernelsDone()} has completed. */
    double uploadMs() {
        return call.elapsed(UPLOAD_START, UPLOAD_END);
    }

    /** Adds the latest kernels' phases to {@code timings}; only once {@link #kernelsDone()} has completed. */
    PhaseTimings kernelTimings(PhaseTimings timings) {
        return timings.put("chunk_means", call.elapsed(KERNELS_START, MEANS_END))
                .put("gate_topk", call.elapsed(MEANS_END, GATE_END))
                .put("attention", call.elapsed(GATE_END, ATTENTION_END));
    }

    /**
     * Device bytes held beyond q, k, v, out and lse: index arrays, chunk means (and planes), the selection and, on
     * the GATHERED path, the routing buckets, routed rows and partial outputs (by allocated capacity).
     */
    public long extraDeviceBytes() {
        return extraBytes;
    }

    /** The attention path this batch runs (chosen when it was uploaded). */
    public AttentionPath attentionPath() {
        return path.path();
    }

    /** Why this batch runs its attention path, with the sizes and budget behind the choice. */
    public String attentionPathReason() {
        return path.reason();
    }

    public PackedBatch batch() {
        return batch;
    }

    CUdeviceptr outPointer() {
        return out.pointer();
    }

    CUdeviceptr lsePointer() {
        return lse.pointer();
    }

    CUdeviceptr selectionPointer() {
        return sel.pointer();
    }

    int selectionWidth() {
        return plan.selectionWidth;
    }

    CUdeviceptr cuSeqlensPointer() {
        return cuSeqlens.pointer();
    }

    public MobaParams params() {
        return params;
    }

    /** The device state a backward pass reads; only for {@link DeviceBackward}. */
    Resident resident() {
        call.ensureOpen();
        long indexBytes = cuSeqlens.capacity() + chunkBase.capacity() + tiles.capacity() + wideTiles.capacity();
        return new Resident(call.callStream(), q.pointer(), k.pointer(), v.pointer(), out.pointer(), lse.pointer(), sel.pointer(),
                cuSeqlens.pointer(), chunkBase.pointer(), tiles.pointer(), wideTiles.pointer(), indexBytes);
    }

    /** Whether the kernels have run at least once, so that out, lse and the selection on the device are valid. */
    boolean hasRun() {
        return call.hasRun();
    }

    /** Whether this batch's buffers come from {@code p} (i.e. it was uploaded by the backend owning {@code p}). */
    boolean allocatedFrom(DeviceBufferPool p) {
        return pool == p;
    }

    BatchPlan plan() {
        return plan;
    }

    CudaDevice cudaDevice() {
        return device;
    }

    /** Registers a backward pass on this batch's device state: {@link #close()} closes it first. */
    void attach(DeviceBackward backward) {
        call.ensureOpen();
        backwards.add(backward);
    }

    void detach(DeviceBackward backward) {
        backwards.remove(backward);
    }

    /** Waits for queued work, then returns buffers, slabs and the stream to their pools. */
    @Override
    public void close() {
        if (call.isClosed()) {
            return;
        }
        for (DeviceBackward b : new ArrayList<>(backwards)) {
            b.close();
        }
        call.close();
    }
}
