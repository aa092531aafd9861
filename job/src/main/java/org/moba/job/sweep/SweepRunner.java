package org.moba.job.sweep;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.moba.kernels.AttendedPairs;
import org.moba.job.spark.TaskDevice;
import org.moba.kernels.MobaAttention;
import org.moba.kernels.MobaGradients;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.MobaTraining;
import org.moba.kernels.PackedBatch;
import org.moba.kernels.Sequence;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;
import org.moba.kernels.reference.OracleComparison;

/**
 * Runs one sweep configuration on a backend and on the float64 oracle: the executor side of {@code sweep}. With
 * {@code backward}, each batch also runs the backend's backward on a random {@code dout} and compares dq/dk/dv with
 * the oracle's backward (whole batches: dk/dv need every query, so they cannot be sampled); batches whose attended
 * (query, key, head) triples exceed {@link #BACKWARD_ORACLE_PAIRS} are not checked and their gradient fields stay
 * null.
 */
public final class SweepRunner implements Serializable {
    private static final long serialVersionUID = 1L;

    /** The most attended (query, key, head) triples of one batch the float64 backward is run on. */
    public static final long BACKWARD_ORACLE_PAIRS = 20_000_000L;

    private final String requestedBackend;
    private final int oracleRows;
    private final int tokensPerBatch;
    private final boolean backward;

    public SweepRunner(String requestedBackend, int oracleRows, int tokensPerBatch, boolean backward) {
        this.requestedBackend = requestedBackend;
        this.oracleRows = oracleRows;
        this.tokensPerBatch = tokensPerBatch;
        this.backward = backward;
    }

    public List<SweepRow> run(SweepConfig config, MobaAttention backend, TaskDevice device) {
        SyntheticSequences synth = new SyntheticSequences(config.seed(), config.shape().layout());
        int[] lengths = config.lengths().lengths(config.seed(), config.shape().chunk());
        List<Sequence> sequences = new ArrayList<>(lengths.length);
        for (int i = 0; i < lengths.length; i++) {
            sequences.add(synth.generate(i, lengths[i]));
        }
        String reproduce = config.reproduceCommand(requestedBackend, oracleRows, tokensPerBatch, backward);
        SplittableRandom rng = new SplittableRandom(config.seed());
        List<SweepRow> rows = new ArrayList<>();
        for (SequencePacker.Packed p : new SequencePacker(config.shape().layout(), tokensPerBatch).packAll(sequences)) {
            MobaOutput out = backend.forward(p.batch(), config.shape().params());
            int[] sample = OracleComparison.sampleRows(p.batch(), config.shape().params(), oracleRows, rng);
            Map<Integer, OracleComparison.GradientErrors> gradients = backward
                    ? gradientErrors(p.batch(), config, backend, out, rng) : Map.of();
            for (OracleComparison.SequenceErrors e : OracleComparison.compare(p.batch(), config.shape().params(), out,
                    sample)) {
                SweepRow r = new SweepRow();
                r.setConfig(config.label());
                r.setDtype(config.shape().dtype().label());
                r.setBackend(backend.name());
                r.setDevice(backend.device());
                r.setHost(device.host());
                r.setExecutorId(device.executorId());
                r.setGpuAddresses(device.gpuAddresses());
                r.setDeviceOrdinal(device.deviceOrdinal());
                r.setPciBusId(device.pciBusId());
                r.setSequenceId(p.ids().get(e.sequence()));
                r.setLength(p.batch().seqLength(e.sequence()));
                r.setTokensCompared(e.tokensCompared());
                r.setRowsCompared(e.rowsCompared());
                r.setOutRelL2(e.outRelL2());
                r.setOutMaxAbs(e.outMaxAbs());
                r.setLseRelL2(e.lseRelL2());
                r.setLseMaxAbs(e.lseMaxAbs());
                r.setSelectionMismatches(e.selectionMismatches());
                r.setNearTies(e.nearTies());
                OracleComparison.GradientErrors g = gradients.get(e.sequence());
                if (g != null) {
                    r.setDqRelL2(g.dqRelL2());
                    r.setDqMaxAbs(g.dqMaxAbs());
                    r.setDkRelL2(g.dkRelL2());
                    r.setDkMaxAbs(g.dkMaxAbs());
                    r.setDvRelL2(g.dvRelL2());
                    r.setDvMaxAbs(g.dvMaxAbs());
                }
                r.setPass(e.passes(config.shape().dtype()) && (g == null || g.passes(config.shape().dtype())));
                r.setReproduce(reproduce);
                rows.add(r);
            }
        }
        return rows;
    }

    /** The batch's per-sequence gradient errors, or none when the oracle would take too long on it. */
    private static Map<Integer, OracleComparison.GradientErrors> gradientErrors(PackedBatch batch, SweepConfig config,
                                                                            MobaAttention backend, MobaOutput out,
                                                                            SplittableRandom rng) {
        if (!(backend instanceof MobaTraining training)) {
            throw new IllegalStateException("sweep --backward: backend " + backend.name() + " has no backward pass");
        }
        if (AttendedPairs.count(batch, config.shape().params(), out) > BACKWARD_ORACLE_PAIRS) {
            return Map.of();
        }
        short[] dout = new short[out.out().length];
        for (int i = 0; i < dout.length; i++) {
            dout[i] = batch.dtype().fromFloat((float) SyntheticSequences.gaussian(rng));
        }
        MobaGradients g = training.backward(batch, config.shape().params(), out, dout);
        Map<Integer, OracleComparison.GradientErrors> bySequence = new HashMap<>();
        for (OracleComparison.GradientErrors e : OracleComparison.compareGradients(batch, config.shape().params(), out,
                dout, g)) {
            bySequence.put(e.sequence(), e);
        }
        return bySequence;
    }
}
