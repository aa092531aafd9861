package org.moba.spark;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;
import org.apache.spark.sql.Column;
import org.apache.spark.util.SerializableConfiguration;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.moba.job.score.ScoreSchema;

/**
 * MoBA over a Dataset of sequences, from users' own Spark code; the {@code score} command is a thin command line over
 * it. Partition-wise and GPU-aware: each task runs on the GPU address Spark assigned it (or a visible GPU, or the
 * CPU), with the executor's pooled backend ({@link MobaPartitions}).
 *
 * <p>Input columns ({@link ScoreSchema#INPUT}; {@link MobaTensors} builds them from Java arrays and safetensors
 * files): {@code id} string, {@code length} int (tokens L), {@code dtype} string ({@code fp16} or {@code bf16}),
 * {@code heads}, {@code kv_heads}, {@code head_dim} int, and {@code q [L, heads, head_dim]}, {@code k, v [L, kv_heads,
 * head_dim]} binary, little-endian 16-bit floats. Optional: {@value #PROBLEM} string, a reader's reason the record is
 * unreadable (the record is then bad); {@value #TENSOR_FILE} string and {@value #TENSOR_POSITIONS} array of bigint:
 * for a record whose q, k, v are null, the file (any Hadoop filesystem) and the byte positions where they lie, read
 * by the task straight into its batch ({@link MobaTensors#readSafetensors} gives such rows). Every other input column
 * is carried through to the result unchanged.
 *
 * <p>Result columns, one row per input record ({@link ScoreSchema#RESULT}, then {@code selected} when asked for,
 * then the carried columns): {@code id, length, dtype, heads, head_dim}; {@code out [L, heads, head_dim]} in the
 * input's dtype and {@code lse [L, heads]} fp32, little-endian binary; {@code recall, cosine, rel_error} arrays of
 * doubles, one per query head (null unless {@link MobaOptions#metrics}); where the task ran ({@code host,
 * executor_id, gpu_addresses, device, device_ordinal, pci_bus_id}); {@code reason} and {@code outcome}
 * ({@code scored} or {@code rejected}); {@code selected}: the chunks each query attends besides its own,
 * little-endian int32 {@code [L, heads, w]} with {@code w = min(topk - 1, ceil(L / chunk) - 1)}, ascending, -1
 * where a query has fewer candidates. With {@link MobaOptions#outputFolder}, {@code out} and {@code lse} stay null
 * and each batch's are written by its task as one safetensors file in that folder ({@code out [T, H, D]},
 * {@code lse [T, H]} F32, {@code cu_seqlens}, the ids as a JSON list in the metadata key {@code ids}); the columns
 * {@value #OUTPUT_FILE} (the file's name) and {@value #OUTPUT_POSITIONS} (where the row's {@code out} and
 * {@code lse} start in it) follow, before the carried columns.
 */
public final class MobaDataset {
    /** The optional input column naming why a record is unreadable. */
    public static final String PROBLEM = "problem";
    /** With {@link MobaOptions#outputFolder}: the result column naming the file (in that folder) of the row's out. */
    public static final String OUTPUT_FILE = "output_file";
    /** With {@link MobaOptions#outputFolder}: the byte positions of the row's out and lse in its output file. */
    public static final String OUTPUT_POSITIONS = "output_positions";
    /** The optional input column naming the file that holds a record's tensors. */
    public static final String TENSOR_FILE = "tensor_file";
    /** The optional input column with the byte positions of a record's q, k and v in its {@value #TENSOR_FILE}. */
    public static final String TENSOR_POSITIONS = "tensor_positions";

    /** The type of {@value #TENSOR_POSITIONS} and {@value #OUTPUT_POSITIONS}: byte positions in a file. */
    public static final DataType POSITIONS_TYPE = DataTypes.createArrayType(DataTypes.LongType);
    /** The optional input columns and their types. */
    private static final Map<String, DataType> OPTIONAL_INPUT = Map.of(PROBLEM, DataTypes.StringType, TENSOR_FILE,
            DataTypes.StringType, TENSOR_POSITIONS, POSITIONS_TYPE);

    private MobaDataset() {
    }

    /**
     * MoBA attention over {@code input}, lazily: nothing runs until an action on the result. The input's columns
     * are checked here, on the driver; bad records are found by the tasks ({@link MobaOptions#badRecords}).
     *
     * @throws IllegalArgumentException when a required column is missing or has the wrong type, or a carried column
     *                                  would collide with a result column
     */
    public static MobaResult attention(Dataset<Row> input, MobaOptions options) {
        MobaTimings timings = new MobaTimings(input.sparkSession().sparkContext());
        return new MobaResult(partitionWise(input, options, timings, true), timings);
    }

    /**
     * Reads and checks every record's tensors exactly as {@link #attention} would (into the batches' host buffers,
     * NaN/infinity included), without computing anything: the cost of the input side alone. Runs a Spark job;
     * returns its timings ({@link MobaTimings#loadedBytesTotal()} is the tensor bytes loaded).
     */
    public static MobaTimings loadOnly(Dataset<Row> input, MobaOptions options) {
        MobaTimings timings = new MobaTimings(input.sparkSession().sparkContext());
        partitionWise(input, options, timings, false).count();
        return timings;
    }

    private static Dataset<Row> partitionWise(Dataset<Row> input, MobaOptions options, MobaTimings timings,
                                              boolean computes) {
        List<StructField> carry = carried(input.schema(), options);
        List<Column> columns = new ArrayList<>();
        Arrays.stream(ScoreSchema.INPUT.fieldNames()).forEach(c -> columns.add(input.col(c)));
        List<String> present = Arrays.asList(input.columns());
        columns.add(present.contains(PROBLEM) ? input.col(PROBLEM)
                : functions.lit(null).cast(DataTypes.StringType).as(PROBLEM));
        columns.add(present.contains(TENSOR_FILE) ? input.col(TENSOR_FILE)
                : functions.lit(null).cast(DataTypes.StringType).as(TENSOR_FILE));
        columns.add(present.contains(TENSOR_POSITIONS) ? input.col(TENSOR_POSITIONS)
                : functions.lit(null).cast(POSITIONS_TYPE).as(TENSOR_POSITIONS));
        carry.forEach(f -> columns.add(input.col(f.name())));
        StructType schema = outputSchema(options, new StructType(carry.toArray(StructField[]::new)));
        return input.select(columns.toArray(Column[]::new))
                .mapPartitions(new MobaPartitions(options, timings, carry.size(), new SerializableConfiguration(
                        input.sparkSession().sparkContext().hadoopConfiguration()), computes), Encoders.row(schema));
    }

    /** The result's columns for an input of {@code input}'s columns, after {@link #attention}'s checks. */
    public static StructType resultSchema(StructType input, MobaOptions options) {
        return outputSchema(options, new StructType(carried(input, options).toArray(StructField[]::new)));
    }

    /** The input's columns carried through (all but the tensor and problem columns), after checking the input. */
    private static List<StructField> carried(StructType input, MobaOptions options) {
        checkInput(input);
        Set<String> reserved = Set.of(outputSchema(options, new StructType()).fieldNames());
        Set<String> tensorColumns = Set.of(ScoreSchema.INPUT.fieldNames());
        List<StructField> carry = new ArrayList<>();
        for (StructField f : input.fields()) {
            if (tensorColumns.contains(f.name()) || OPTIONAL_INPUT.containsKey(f.name())) {
                continue;
            }
            if (reserved.contains(f.name())) {
                throw new IllegalArgumentException("input column '" + f.name() + "' would collide with the result"
                        + " column of that name; rename or drop it before running MoBA");
            }
            carry.add(f);
        }
        return carry;
    }

    /** The result's columns for {@code options}, with {@code carried} input columns at the end. */
    static StructType outputSchema(MobaOptions options, StructType carried) {
        StructType s = ScoreSchema.RESULT;
        if (options.selection()) {
            s = s.add(DataTypes.createStructField("selected", DataTypes.BinaryType, true));
        }
        if (options.outputFolder() != null) {
            s = s.add(DataTypes.createStructField(OUTPUT_FILE, DataTypes.StringType, true))
                    .add(DataTypes.createStructField(OUTPUT_POSITIONS, POSITIONS_TYPE, true));
        }
        for (StructField f : carried.fields()) {
            s = s.add(f);
        }
        return s;
    }

    /** Every required column present with its type, and the optional ones, where present, with theirs. */
    static void checkInput(StructType schema) {
        List<String> problems = new ArrayList<>();
        Set<String> present = Set.of(schema.fieldNames());
        for (StructField want : ScoreSchema.INPUT.fields()) {
            if (!present.contains(want.name())) {
                problems.add("lacks column '" + want.name() + "'");
            } else {
                DataType got = schema.apply(want.name()).dataType();
                if (!got.equals(want.dataType())) {
                    problems.add("column '" + want.name() + "' is " + got.simpleString() + ", expected "
                            + want.dataType().simpleString());
                }
            }
        }
        OPTIONAL_INPUT.forEach((name, type) -> {
            if (present.contains(name) && !schema.apply(name).dataType().equals(type)) {
                problems.add("column '" + name + "' is " + schema.apply(name).dataType().simpleString()
                        + ", expected " + type.simpleString());
            }
        });
        if (!problems.isEmpty()) {
            throw new IllegalArgumentException("MoBA input " + String.join("; ", problems) + " (expected columns: "
                    + Arrays.stream(ScoreSchema.INPUT.fields()).map(f -> f.name() + " " + f.dataType().simpleString())
                    .collect(Collectors.joining(", ")) + ")");
        }
    }
}
