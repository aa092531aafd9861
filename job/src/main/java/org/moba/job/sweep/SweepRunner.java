package org.moba.job.sweep;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.moba.kernels.MobaAttention;
import org.moba.kernels.MobaOutput;
import org.moba.kernels.Sequence;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;
import org.moba.kernels.reference.OracleComparison;

/** Runs one sweep configuration on a backend and on the float64 oracle: the executor side of {@code sweep}. */
public final class SweepRunner implements Serializable {
    private static final long serialVersionUID = 1L;

    private final String requestedBackend;
    private final int oracleRows;
    private final int tokensPerBatch;

    public SweepRunner(String requestedBackend, int oracleRows, int tokensPerBatch) {
        this.requestedBackend = requestedBackend;
        this.oracleRows = oracleRows;
        this.tokensPerBatch = tokensPerBatch;
    }

    public List<SweepRow> run(SweepConfig config, MobaAttention backend) {
        SyntheticSequences synth = new SyntheticSequences(config.seed(), config.shape().layout());
        int[] lengths = config.lengths().lengths(config.seed(), config.shape().chunk());
        List<Sequence> sequences = new ArrayList<>(lengths.length);
        for (int i = 0; i < lengths.length; i++) {
            sequences.add(synth.generate(i, lengths[i]));
        }
        String reproduce = config.reproduceCommand(requestedBackend, oracleRows, tokensPerBatch);
        SplittableRandom rng = new SplittableRandom(config.seed());
        List<SweepRow> rows = new ArrayList<>();
        for (SequencePacker.Packed p : new SequencePacker(config.shape().layout(), tokensPerBatch).packAll(sequences)) {
            MobaOutput out = backend.forward(p.batch(), config.shape().params());
            int[] sample = OracleComparison.sampleRows(p.batch(), config.shape().params(), oracleRows, rng);
            for (OracleComparison.SequenceErrors e : OracleComparison.compare(p.batch(), config.shape().params(), out,
                    sample)) {
                SweepRow r = new SweepRow();
                r.setConfig(config.label());
                r.setDtype(config.shape().dtype().label());
                r.setBackend(backend.name());
                r.setDevice(backend.device());
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
                r.setPass(e.passes(config.shape().dtype()));
                r.setReproduce(reproduce);
                rows.add(r);
            }
        }
        return rows;
    }
}
