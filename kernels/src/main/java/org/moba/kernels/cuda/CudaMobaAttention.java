package org.moba.kernels.cuda;

import java.nio.ByteBuffer;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.moba.kernels.DType;
import org.moba.kernels.DenseComparison;
import org.moba.kernels.HostMemory;
import org.moba.kernels.MobaAttention;
import org.moba.kernels.MobaGradients;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaParams;
import org.moba.kernels.MobaTraining;
import org.moba.kernels.PackedBatch;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * MoBA forward on one NVIDIA GPU through the hand-written kernels of {@code moba.fatbin}.
 *
 * <p>A call validates the batch, builds the index arrays on the host ({@link BatchPlan}), then on a stream of its
 * own: uploads through pinned slabs, runs chunk means, gate + top-k (when some query selects chunks) and attention,
 * downloads, and waits once. Attention takes one of two {@link AttentionPath}s, chosen per call by
 * {@link AttentionPath#choose}: MoBA with a selection runs GATHERED where its estimated cost is lower and its scratch
 * fits a quarter of the available device memory, everything else runs UNION. Device buffers, pinned slabs and
 * streams are pooled, so a steady stream of similar
 * batches allocates nothing. Thread-safe: several threads may call {@link #forward} at once; {@link #close()} only
 * after they are done.
 *
 * <p>Backward ({@link #backward}, ABI.md "# Backward"): validates {@code dout} and the forward's arrays
 * ({@link CudaInputRules#checkBackward}), uploads q, k, v, out, lse, the selection (when routed) and {@code dout}, then on its own
 * stream runs delta, the deterministic routing (MoBA with a selection), the selected chunks' dq partials, dq and
 * dk/dv, and downloads; dense and own-chunk-only calls skip the routing. Deterministic: bit-identical gradients run to
 * run and whatever else shares the batch. Benchmarks that keep the forward's device state use
 * {@link #prepareBackward} on an uploaded {@link DeviceBatch}.
 */
public final class CudaMobaAttention implements MobaTraining {
    private static final Logger LOG = LoggerFactory.getLogger(CudaMobaAttention.class);

    private final CudaDevice device;
    private final DeviceBufferPool pool;
    private final StreamPool streams;
    private final Map<String, MobaKernels> kernels = new ConcurrentHashMap<>();
    private final Map<String, MobaBackwardKernels> backwardKernels = new ConcurrentHashMap<>();
    private final AtomicLong peakExtraBytes = new AtomicLong();
    private final AtomicLong peakExtraBackwardBytes = new AtomicLong();
    private final AtomicBoolean loggedFallback = new AtomicBoolean();
    /** Locks buffers as this device's context, process-wide ({@link PinnedHostRanges#PROCESS}). */
    private final HostMemory hostMemory = new HostMemory() {
        @Override
        public boolean pin(ByteBuffer buffer) {
            return !closed && PinnedHostRanges.PROCESS.pin(buffer, device);
        }

        @Override
        public void unpin(ByteBuffer buffer) {
            PinnedHostRanges.PROCESS.unpin(buffer);
        }

        @Override
        public long pinnedBytes() {
            return PinnedHostRanges.PROCESS.lockedBytes();
        }
    };
    private volatile boolean poisonOutputs;
    private volatile AttentionPath forcedPath;
    private volatile boolean closed;

    private CudaMobaAttention(CudaDevice device) {
        this.device = device;
        this.pool = new DeviceBufferPool(device);
        this.streams = new StreamPool(device, DeviceBatch.EVENTS + DeviceBackward.EVENTS);
    }

    /**
     * The backend on GPU {@code ordinal}.
     *
     * @throws IllegalStateException with {@link #unavailableReason} when that GPU cannot be used
     */
    public static CudaMobaAttention open(int ordinal) {
        CudaDevice device = CudaDevice.open(ordinal);
        try {
            device.makeCurrent();
            device.kernels(); // a missing or unloadable fatbin fails here, not in the first batch
            return new CudaMobaAttention(device);
        } catch (RuntimeException e) {
            device.close();
            throw e;
        }
    }

    /** Null when GPU {@code ordinal} is usable (driver present, device exists, sm_80 or newer), else why not. */
    public static String unavailableReason(int ordinal) {
        return CudaDevice.unavailableReason(ordinal);
    }

    @Override
    public String name() {
        return "cuda";
    }

    @Override
    public String device() {
        return device.describe();
    }

    public CudaDevice cudaDevice() {
        return device;
    }

    @Override
    public MobaOutput forward(PackedBatch batch, MobaParams params) {
        try (DeviceBatch resident = upload(batch, params)) {
            return resident.runAndDownload();
        }
    }

    /**
     * Uploads q, k and v once, runs MoBA and dense causal attention on them on two streams and the metrics on the
     * device ({@link CudaDenseComparison}); copies back only the metric sums and, when {@code keepOutputs}, MoBA's
     * output.
     */
    @Override
    public DenseComparison compareWithDense(PackedBatch batch, MobaParams params, boolean keepOutputs) {
        try (DeviceBatch moba = upload(batch, params)) {
            return CudaDenseComparison.run(device, pool, streams, kernelsFor(batch.dtype(), batch.headDim()), moba,
                    keepOutputs);
        }
    }

    /**
     * Page-locks direct host buffers with {@code cuMemHostRegister} (portable: every device of the process copies
     * straight from them), up to a cap ({@link PinnedHostRanges}); a batch whose tensors lie in locked buffers is
     * uploaded without staging through the pinned slabs. Locks end when the last backend on this device closes.
     */
    @Override
    public HostMemory hostMemory() {
        return hostMemory;
    }

    /** One 256 MiB copy from pinned host memory, timed on the device, median of five ({@link HostToDeviceRate}). */
    @Override
    public double measureHostToDeviceGBps() {
        ensureOpen();
        return HostToDeviceRate.measure(device, pool, streams);
    }

    /**
     * Validates the batch and queues its upload for {@code params}; the returned batch runs the kernels without
     * further transfers (for benchmarks and callers that keep data on the device). Close it when done. A batch in
     * direct buffers ({@link PackedBatch#ofBuffers}) may be read by the device until the returned batch has run or
     * is closed: keep its buffers unchanged until then.
     */
    public DeviceBatch upload(PackedBatch batch, MobaParams params) {
        return upload(batch, params, forcedPath);
    }

    /** The batch uploaded once ({@link #upload}): each {@link DeviceBatch#run()} runs only the kernels. */
    @Override
    public DeviceBatch prepare(PackedBatch batch, MobaParams params) {
        return upload(batch, params);
    }

    /**
     * Test hook: {@link #upload(PackedBatch, MobaParams)} with MoBA calls that have a selection forced onto
     * {@code forced} (null: chosen by the memory budget). Dense and W == 0 calls run UNION regardless.
     */
    DeviceBatch upload(PackedBatch batch, MobaParams params, AttentionPath forced) {
        ensureOpen();
        CudaInputRules.check(batch, params);
        device.makeCurrent();
        MobaKernels forwardKernels = kernelsFor(batch.dtype(), batch.headDim());
        BatchPlan plan = BatchPlan.of(batch, params, forwardKernels.engine());
        AttentionPath.Choice path = choosePath(batch, params, plan, forced,
                AttentionPath.PairCosts.of(forwardKernels, params.chunkSize()));
        DeviceBatch resident = new DeviceBatch(device, pool, streams, forwardKernels, poisonOutputs, batch, params,
                plan, path);
        peakExtraBytes.accumulateAndGet(resident.extraDeviceBytes(), Math::max);
        return resident;
    }

    /**
     * Backward pass (docs/semantics.md "Backward", ABI.md "# Backward"): dq, dk, dv of {@code sum(out * dout)} with
     * the forward's selection held fixed, in the batch's dtype, with the phases {@code h2d}, {@code delta},
     * {@code route}, {@code dq_selected}, {@code fused}, {@code dq}, {@code dkdv}, {@code d2h} (CUDA events, ms; a
     * phase that does not run reports 0).
     *
     * @throws MobaInputException        when {@code dout} or the forward's arrays do not fit the batch, or the batch
     *                                   the kernels (see {@link CudaInputRules})
     * @throws CudaOutOfMemoryException  when the device cannot hold the call: split the batch and retry
     */
    @Override
    public MobaGradients backward(PackedBatch batch, MobaParams params, MobaOutput forward, short[] dout) {
        try (DeviceBackward call = uploadBackward(batch, params, forward, dout)) {
            return call.runAndDownload();
        }
    }

    /**
     * Validates and queues the upload of a standalone backward (the batch, the forward's out, lse and selection, and
     * {@code dout}); the returned object runs its kernels without further transfers. Close it when done.
     */
    public DeviceBackward uploadBackward(PackedBatch batch, MobaParams params, MobaOutput forward, short[] dout) {
        ensureOpen();
        CudaInputRules.checkBackward(batch, params, forward, dout);
        device.makeCurrent();
        BatchPlan plan = BatchPlan.of(batch, params, forwardEngine());
        BackwardScratch scratch = BackwardScratch.of(plan, batch.totalTokens(), batch.heads(), batch.headDim());
        DeviceBackward b = DeviceBackward.upload(device, pool, streams,
                backwardKernelsFor(batch.dtype(), batch.headDim()), poisonOutputs, batch, params, plan, scratch,
                forward, dout);
        peakExtraBackwardBytes.accumulateAndGet(b.extraDeviceBytes(), Math::max);
        return b;
    }

    /**
     * A backward on the device state of {@code forward} (an uploaded batch of this backend): it reads the q, k, v,
     * out, lse and selection the forward's latest {@link DeviceBatch#run()} left on the device, runs on that batch's
     * stream and uploads only {@code dout}, so forward + backward can be timed without transfers. Run the forward
     * before {@link DeviceBackward#run()}; closing {@code forward} closes the backward too.
     */
    public DeviceBackward prepareBackward(DeviceBatch forward, short[] dout) {
        ensureOpen();
        if (forward == null) {
            throw new MobaInputException("forward is missing");
        }
        if (!forward.allocatedFrom(pool)) {
            throw new IllegalArgumentException("the forward batch was uploaded by another backend than "
                    + device.describe());
        }
        PackedBatch batch = forward.batch();
        if (dout == null || dout.length != batch.qElements()) {
            throw new MobaInputException("dout " + (dout == null ? "is missing" : "has " + dout.length + " elements")
                    + ", expected T*H*D = " + batch.qElements());
        }
        device.makeCurrent();
        BackwardScratch scratch = BackwardScratch.of(forward.plan(), batch.totalTokens(), batch.heads(),
                batch.headDim());
        DeviceBackward b = DeviceBackward.onDevice(forward, pool, backwardKernelsFor(batch.dtype(), batch.headDim()),
                poisonOutputs, scratch, dout);
        peakExtraBackwardBytes.accumulateAndGet(b.extraDeviceBytes(), Math::max);
        return b;
    }

    private void ensureOpen() {
        if (closed) {
            throw new IllegalStateException("CudaMobaAttention on " + device.describe() + " is closed");
        }
    }

    private MobaBackwardKernels backwardKernelsFor(DType dtype, int headDim) {
        return backwardKernels.computeIfAbsent(dtype.label() + "_d" + headDim,
                key -> new MobaBackwardKernels(device.kernels(), dtype, headDim));
    }

    private AttentionPath.Choice choosePath(PackedBatch batch, MobaParams params, BatchPlan plan,
                                            AttentionPath forced, AttentionPath.PairCosts costs) {
        // Cached pool buffers are free for this call too: they are trimmed before an allocation fails.
        AttentionPath.Choice choice = AttentionPath.choose(plan, batch.totalTokens(), batch.heads(),
                batch.headDim(), forced, () -> device.freeMemory() + pool.bytesCached(), costs);
        if (choice.fellBack()) {
            if (loggedFallback.compareAndSet(false, true)) {
                LOG.info("MoBA attention on {} runs the UNION path instead of GATHERED for {} with {}: {} "
                        + "(logged once; later fallbacks at DEBUG)", device.describe(), batch, params,
                        choice.reason());
            } else {
                LOG.debug("MoBA attention on {} runs UNION for {} with {}: {}", device.describe(), batch, params,
                        choice.reason());
            }
        }
        return choice;
    }

    /** The engine of the forward attention kernels on this device ({@link ForwardEngine#forDevice}). */
    public ForwardEngine forwardEngine() {
        return device.kernels().engine();
    }

    private MobaKernels kernelsFor(DType dtype, int headDim) {
        return kernels.computeIfAbsent(dtype.label() + "_d" + headDim,
                key -> new MobaKernels(device.kernels(), dtype, headDim));
    }

    /**
     * The most device memory one call has used beyond q, k, v, out and lse (index arrays, means, selection and,
     * on the GATHERED path, its routing and partial outputs).
     */
    public long peakExtraDeviceBytes() {
        return peakExtraBytes.get();
    }

    /**
     * The most device memory one backward call has used beyond its inputs (q, k, v, out, lse, selection, dout) and
     * outputs (dq, dk, dv): delta, the routing buffers, partial dq and the index arrays (see
     * {@link DeviceBackward#extraDeviceBytes()}).
     */
    public long peakExtraBackwardDeviceBytes() {
        return peakExtraBackwardBytes.get();
    }

    /** Device bytes this backend holds for reuse between calls. */
    public long cachedDeviceBytes() {
        return pool.bytesCached();
    }

    /**
     * Test hook: fill outputs and scratch with NaN (selections with -2) before every kernel run, forward and
     * backward (dq, dk, dv, delta, partial dq), so an element a kernel forgets to write cannot pass for a stale
     * correct value from an earlier call.
     */
    void poisonOutputs(boolean enabled) {
        poisonOutputs = enabled;
    }

    /**
     * Test hook: run every later MoBA call that has a selection on {@code path} regardless of the memory budget
     * (null: choose by budget). Dense and W == 0 calls always run UNION.
     */
    void forcePath(AttentionPath path) {
        forcedPath = path;
    }

    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        device.makeCurrent();
        streams.close();
        pool.close();
        device.close();
    }
}
