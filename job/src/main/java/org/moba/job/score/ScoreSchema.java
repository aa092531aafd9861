package org.moba.job.score;

import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

/**
 * Columns of the {@code score} input and result. Every input record yields exactly one result row whose
 * {@code outcome} is {@code scored} (with outputs and metrics) or {@code rejected} (with the reason); the job writes
 * them in one commit, partitioned by outcome. Both kinds record where their task ran ({@code host}, {@code executor_id},
 * {@code gpu_addresses}, {@code device_ordinal}, {@code pci_bus_id}; see {@link org.moba.job.spark.TaskDevice}).
 */
public final class ScoreSchema {
    public static final String SCORED = "scored";
    public static final String REJECTED = "rejected";

    public static final StructType INPUT = new StructType(new StructField[] {
        DataTypes.createStructField("id", DataTypes.StringType, false),
        DataTypes.createStructField("length", DataTypes.IntegerType, false),
        DataTypes.createStructField("dtype", DataTypes.StringType, false),
        DataTypes.createStructField("heads", DataTypes.IntegerType, false),
        DataTypes.createStructField("kv_heads", DataTypes.IntegerType, false),
        DataTypes.createStructField("head_dim", DataTypes.IntegerType, false),
        DataTypes.createStructField("q", DataTypes.BinaryType, true),
        DataTypes.createStructField("k", DataTypes.BinaryType, true),
        DataTypes.createStructField("v", DataTypes.BinaryType, true),
    });

    public static final StructType RESULT = new StructType(new StructField[] {
        DataTypes.createStructField("id", DataTypes.StringType, false),
        DataTypes.createStructField("length", DataTypes.IntegerType, true),
        DataTypes.createStructField("dtype", DataTypes.StringType, true),
        DataTypes.createStructField("heads", DataTypes.IntegerType, true),
        DataTypes.createStructField("head_dim", DataTypes.IntegerType, true),
        DataTypes.createStructField("out", DataTypes.BinaryType, true),
        DataTypes.createStructField("lse", DataTypes.BinaryType, true),
        DataTypes.createStructField("recall", DataTypes.createArrayType(DataTypes.DoubleType), true),
        DataTypes.createStructField("cosine", DataTypes.createArrayType(DataTypes.DoubleType), true),
        DataTypes.createStructField("rel_error", DataTypes.createArrayType(DataTypes.DoubleType), true),
        DataTypes.createStructField("host", DataTypes.StringType, true),
        DataTypes.createStructField("executor_id", DataTypes.StringType, true),
        DataTypes.createStructField("gpu_addresses", DataTypes.StringType, true),
        DataTypes.createStructField("device", DataTypes.StringType, true),
        DataTypes.createStructField("device_ordinal", DataTypes.IntegerType, true),
        DataTypes.createStructField("pci_bus_id", DataTypes.StringType, true),
        DataTypes.createStructField("reason", DataTypes.StringType, true),
        DataTypes.createStructField("outcome", DataTypes.StringType, false),
    });

    private ScoreSchema() {
    }

    /** What to store in an input column, for the message about a column of the wrong type. */
    static String describe(String column) {
        return switch (column) {
            case "q", "k", "v" -> "store " + column + " as binary: the little-endian fp16/bf16 bytes of [length,"
                    + " heads, head_dim] (as gen writes it)";
            case "id", "dtype" -> "store " + column + " as a string";
            default -> "store " + column + " as an int32 (int64 is read where the value fits)";
        };
    }
}
