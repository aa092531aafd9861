package org.moba.spark;

import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.spark.ml.Transformer;
import org.apache.spark.ml.param.BooleanParam;
import org.apache.spark.ml.param.IntParam;
import org.apache.spark.ml.param.Param;
import org.apache.spark.ml.param.ParamMap;
import org.apache.spark.ml.param.ParamValidators;
import org.apache.spark.ml.util.DefaultParamsReader;
import org.apache.spark.ml.util.DefaultParamsWritable;
import org.apache.spark.ml.util.Identifiable;
import org.apache.spark.ml.util.MLReader;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.moba.kernels.BackendName;

/**
 * MoBA attention as a Spark ML {@link Transformer}: {@link MobaDataset#attention} with typed params, so it drops into
 * a {@link org.apache.spark.ml.Pipeline} and is saved and loaded with it ({@code MLWritable} / {@code MLReadable}:
 * {@code save(path)}, {@link #load}). Input: {@link MobaDataset}'s columns, with the id and q/k/v columns named by
 * {@code idCol, qCol, kCol, vCol}; every other column is carried through. Output: {@link MobaDataset}'s result, with
 * MoBA's output, lse and selection named by {@code outCol, lseCol, selectedCol}.
 */
public final class MobaAttentionTransformer extends Transformer implements DefaultParamsWritable {
    private static final long serialVersionUID = 1L;

    private final String uid;
    private final IntParam chunkSize;
    private final IntParam topk;
    private final Param<String> backend;
    private final IntParam tokensPerBatch;
    private final Param<String> badRecords;
    private final BooleanParam checkFinite;
    private final BooleanParam metrics;
    private final BooleanParam outputs;
    private final BooleanParam selection;
    private final Param<String> idCol;
    private final Param<String> qCol;
    private final Param<String> kCol;
    private final Param<String> vCol;
    private final Param<String> outCol;
    private final Param<String> lseCol;
    private final Param<String> selectedCol;

    public MobaAttentionTransformer() {
        this(Identifiable.randomUID("mobaAttention"));
    }

    /** The constructor {@link DefaultParamsReader} calls when loading. */
    public MobaAttentionTransformer(String uid) {
        this.uid = uid;
        // Params take their parent's uid when made: they are made here, once the uid is set.
        chunkSize = new IntParam(this, "chunkSize", "MoBA chunk size (keys per chunk), > 0",
                ParamValidators.gt(0));
        topk = new IntParam(this, "topk", "chunks each query attends (its own included), >= 1",
                ParamValidators.gtEq(1));
        backend = new Param<>(this, "backend", BackendName.NAMES,
                ParamValidators.inArray(BackendName.labels()));
        tokensPerBatch = new IntParam(this, "tokensPerBatch",
                "token budget of one packed batch, > 0", ParamValidators.gt(0));
        badRecords = new Param<>(this, "badRecords",
                "fail: stop at the first bad record; skip: give it a row with outcome = rejected and the reason",
                ParamValidators.inArray(new String[] {"fail", "skip"}));
        checkFinite = new BooleanParam(this, "checkFinite",
                "whether NaN or infinity in q, k, v makes a record bad");
        metrics = new BooleanParam(this, "metrics",
                "also run dense attention and fill recall, cosine, rel_error per query head");
        outputs = new BooleanParam(this, "outputs", "fill the output and lse columns");
        selection = new BooleanParam(this, "selection", "add the selected-chunks column");
        idCol = new Param<>(this, "idCol", "input column of the sequence ids");
        qCol = new Param<>(this, "qCol", "input column of q");
        kCol = new Param<>(this, "kCol", "input column of k");
        vCol = new Param<>(this, "vCol", "input column of v");
        outCol = new Param<>(this, "outCol", "output column of MoBA's output");
        lseCol = new Param<>(this, "lseCol", "output column of the log-sum-exp");
        selectedCol = new Param<>(this, "selectedCol", "output column of the selected chunks");
        MobaOptions d = MobaOptions.of(512, 3);
        setDefault(chunkSize, d.chunk());
        setDefault(topk, d.topk());
        setDefault(backend, d.backend());
        setDefault(tokensPerBatch, d.tokensPerBatch());
        setDefault(badRecords, "fail");
        setDefault(checkFinite, d.checkFinite());
        setDefault(metrics, d.metrics());
        setDefault(outputs, d.outputs());
        setDefault(selection, d.selection());
        setDefault(idCol, "id");
        setDefault(qCol, "q");
        setDefault(kCol, "k");
        setDefault(vCol, "v");
        setDefault(outCol, "out");
        setDefault(lseCol, "lse");
        setDefault(selectedCol, "selected");
    }

    /** For {@link org.apache.spark.ml.Pipeline#load} and users: reads a saved transformer. */
    public static MLReader<MobaAttentionTransformer> read() {
        return new DefaultParamsReader<>();
    }

    public static MobaAttentionTransformer load(String path) {
        return read().load(path);
    }

    @Override
    public String uid() {
        return uid;
    }

    /** The options these params stand for. */
    public MobaOptions options() {
        return new MobaOptions(getChunkSize(), getTopk(), $(backend), (Integer) $(tokensPerBatch),
                MobaOptions.BadRecords.parse($(badRecords)), (Boolean) $(checkFinite), (Boolean) $(outputs),
                (Boolean) $(selection), (Boolean) $(metrics), null);
    }

    @Override
    public Dataset<Row> transform(Dataset<?> dataset) {
        transformSchema(dataset.schema()); // the checks and their messages, before any work
        Dataset<Row> in = dataset.toDF();
        for (Map.Entry<String, String> e : inputNames().entrySet()) {
            in = in.withColumnRenamed(e.getValue(), e.getKey());
        }
        Dataset<Row> out = MobaDataset.attention(in, options()).all();
        for (Map.Entry<String, String> e : outputNames().entrySet()) {
            out = out.withColumnRenamed(e.getKey(), e.getValue());
        }
        return out;
    }

    @Override
    public StructType transformSchema(StructType schema) {
        Map<String, String> inputNames = inputNames();
        Map<String, String> standardOf = new LinkedHashMap<>();
        inputNames.forEach((standard, column) -> standardOf.put(column, standard));
        StructType in = new StructType();
        for (StructField f : schema.fields()) {
            String standard = standardOf.get(f.name());
            if (standard == null && inputNames.containsKey(f.name())) {
                throw new IllegalArgumentException("input has a column '" + f.name() + "' besides " + f.name()
                        + "Col = '" + inputNames.get(f.name()) + "'; rename or drop it");
            }
            in = in.add(standard != null ? standard : f.name(), f.dataType(), f.nullable(), f.metadata());
        }
        StructType out = new StructType();
        Map<String, String> outputNames = outputNames();
        for (StructField f : MobaDataset.resultSchema(in, options()).fields()) {
            String name = outputNames.getOrDefault(f.name(), f.name());
            if (java.util.Arrays.asList(out.fieldNames()).contains(name)) {
                throw new IllegalArgumentException("output column '" + name + "' would appear twice; choose"
                        + " other output column names or drop the input column");
            }
            out = out.add(name, f.dataType(), f.nullable(), f.metadata());
        }
        return out;
    }

    /** Standard input column -> the column the params name. */
    private Map<String, String> inputNames() {
        Map<String, String> m = new LinkedHashMap<>();
        m.put("id", $(idCol));
        m.put("q", $(qCol));
        m.put("k", $(kCol));
        m.put("v", $(vCol));
        return m;
    }

    /** Standard result column -> the column the params name. */
    private Map<String, String> outputNames() {
        Map<String, String> m = new LinkedHashMap<>();
        m.put("id", $(idCol));
        m.put("out", $(outCol));
        m.put("lse", $(lseCol));
        m.put("selected", $(selectedCol));
        return m;
    }

    @Override
    public MobaAttentionTransformer copy(ParamMap extra) {
        return defaultCopy(extra);
    }

    public IntParam chunkSize() { return chunkSize; }
    public IntParam topk() { return topk; }
    public Param<String> backend() { return backend; }
    public IntParam tokensPerBatch() { return tokensPerBatch; }
    public Param<String> badRecords() { return badRecords; }
    public BooleanParam checkFinite() { return checkFinite; }
    public BooleanParam metrics() { return metrics; }
    public BooleanParam outputs() { return outputs; }
    public BooleanParam selection() { return selection; }
    public Param<String> idCol() { return idCol; }
    public Param<String> qCol() { return qCol; }
    public Param<String> kCol() { return kCol; }
    public Param<String> vCol() { return vCol; }
    public Param<String> outCol() { return outCol; }
    public Param<String> lseCol() { return lseCol; }
    public Param<String> selectedCol() { return selectedCol; }

    public int getChunkSize() { return (Integer) $(chunkSize); }
    public int getTopk() { return (Integer) $(topk); }

    public MobaAttentionTransformer setChunkSize(int value) { return (MobaAttentionTransformer) set(chunkSize, value); }
    public MobaAttentionTransformer setTopk(int value) { return (MobaAttentionTransformer) set(topk, value); }
    public MobaAttentionTransformer setBackend(String value) { return (MobaAttentionTransformer) set(backend, value); }
    public MobaAttentionTransformer setTokensPerBatch(int value) {
        return (MobaAttentionTransformer) set(tokensPerBatch, value);
    }
    public MobaAttentionTransformer setBadRecords(String value) {
        return (MobaAttentionTransformer) set(badRecords, value);
    }
    public MobaAttentionTransformer setCheckFinite(boolean value) {
        return (MobaAttentionTransformer) set(checkFinite, value);
    }
    public MobaAttentionTransformer setMetrics(boolean value) { return (MobaAttentionTransformer) set(metrics, value); }
    public MobaAttentionTransformer setOutputs(boolean value) { return (MobaAttentionTransformer) set(outputs, value); }
    public MobaAttentionTransformer setSelection(boolean value) {
        return (MobaAttentionTransformer) set(selection, value);
    }
    public MobaAttentionTransformer setIdCol(String value) { return (MobaAttentionTransformer) set(idCol, value); }
    public MobaAttentionTransformer setQCol(String value) { return (MobaAttentionTransformer) set(qCol, value); }
    public MobaAttentionTransformer setKCol(String value) { return (MobaAttentionTransformer) set(kCol, value); }
    public MobaAttentionTransformer setVCol(String value) { return (MobaAttentionTransformer) set(vCol, value); }
    public MobaAttentionTransformer setOutCol(String value) { return (MobaAttentionTransformer) set(outCol, value); }
    public MobaAttentionTransformer setLseCol(String value) { return (MobaAttentionTransformer) set(lseCol, value); }
    public MobaAttentionTransformer setSelectedCol(String value) {
        return (MobaAttentionTransformer) set(selectedCol, value);
    }
}
