package org.moba.spark;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.List;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.moba.job.score.Safetensors;
import org.moba.job.score.ScoreSchema;
import org.moba.job.score.TensorRecord;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;

/**
 * Builds {@link MobaDataset}'s input columns from Java arrays and from safetensors files, and reads its binary result
 * columns back into arrays. All tensors are little-endian, as {@link MobaDataset} documents.
 */
public final class MobaTensors {
    /** Safetensors input: {@link ScoreSchema#INPUT}, nullable (an unreadable file has no shape), plus
     *  {@value MobaDataset#PROBLEM}. */
    public static final StructType SAFETENSORS_INPUT;

    static {
        StructType s = new StructType();
        for (StructField f : ScoreSchema.INPUT.fields()) {
            s = s.add(f.name(), f.dataType(), true);
        }
        SAFETENSORS_INPUT = s.add(MobaDataset.PROBLEM, DataTypes.StringType, true);
    }

    private MobaTensors() {
    }

    /**
     * One input row from float values, rounded to {@code dtype} ({@code fp16} or {@code bf16}, to nearest even):
     * {@code q} holds {@code L x heads x headDim} values (token-major), {@code k} and {@code v} {@code L x kvHeads x
     * headDim}; L follows from {@code q}'s size.
     */
    public static Row row(String id, String dtype, int heads, int kvHeads, int headDim, float[] q, float[] k,
                          float[] v) {
        BatchLayout layout = new BatchLayout(DType.parse(dtype), heads, kvHeads, headDim);
        return row(id, layout, bits(layout.dtype(), q), bits(layout.dtype(), k), bits(layout.dtype(), v));
    }

    /** One input row from raw 16-bit values ({@code layout}'s dtype bits), as {@link #row(String, String, int, int,
     *  int, float[], float[], float[])} lays them out. */
    public static Row row(String id, BatchLayout layout, short[] q, short[] k, short[] v) {
        return RowFactory.create(id, q.length / layout.qElementsPerToken(), layout.dtype().label(), layout.heads(),
                layout.kvHeads(), layout.headDim(), TensorRecord.bytes(q), TensorRecord.bytes(k),
                TensorRecord.bytes(v));
    }

    /** A Dataset of {@link #row} rows with {@link MobaDataset}'s input columns, in {@code partitions} slices. */
    public static Dataset<Row> dataset(SparkSession spark, List<Row> rows, int partitions) {
        JavaSparkContext jsc = JavaSparkContext.fromSparkContext(spark.sparkContext());
        return spark.createDataFrame(jsc.parallelize(rows, Math.max(1, partitions)), ScoreSchema.INPUT);
    }

    /**
     * The safetensors files under {@code path} (any Hadoop filesystem) as input rows, {@link #SAFETENSORS_INPUT}: each
     * file holds {@code q [T, H, D]}, {@code k, v [T, Hkv, D]} (F16 or BF16) and optionally {@code cu_seqlens} (I32
     * {@code [B+1]}; without it the file is one sequence); sequence {@code b} of file {@code name.safetensors} gets
     * the id {@code name#b}. A file that cannot be read becomes one row with id {@code name} and the
     * {@value MobaDataset#PROBLEM}, so it is a bad record like any other.
     */
    public static Dataset<Row> readSafetensors(SparkSession spark, String path) {
        JavaSparkContext jsc = JavaSparkContext.fromSparkContext(spark.sparkContext());
        JavaRDD<Row> rows = jsc.binaryFiles(path).flatMap(f -> {
            String name = f._1().substring(f._1().lastIndexOf('/') + 1).replaceAll("\\.safetensors$", "");
            return Safetensors.read(name, f._2().toArray()).stream().map(MobaTensors::safetensorsRow).iterator();
        });
        return spark.createDataFrame(rows, SAFETENSORS_INPUT);
    }

    private static Row safetensorsRow(TensorRecord r) {
        if (r.problem() != null) {
            return RowFactory.create(r.id(), null, null, null, null, null, null, null, null, r.problem());
        }
        return RowFactory.create(r.id(), r.length(), r.dtype(), r.heads(), r.kvHeads(), r.headDim(), r.q(), r.k(),
                r.v(), null);
    }

    /** {@code out} (or {@code q, k, v}) bytes as float values of {@code dtype}. */
    public static float[] floats(byte[] littleEndian16, String dtype) {
        DType dt = DType.parse(dtype);
        short[] bits = TensorRecord.shorts(littleEndian16);
        float[] out = new float[bits.length];
        for (int i = 0; i < out.length; i++) {
            out[i] = dt.toFloat(bits[i]);
        }
        return out;
    }

    /** {@code lse} bytes (little-endian fp32) as floats. */
    public static float[] lse(byte[] littleEndian32) {
        float[] out = new float[littleEndian32.length / 4];
        ByteBuffer.wrap(littleEndian32).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(out);
        return out;
    }

    /** {@code selected} bytes (little-endian int32) as ints. */
    public static int[] selected(byte[] littleEndian32) {
        int[] out = new int[littleEndian32.length / 4];
        ByteBuffer.wrap(littleEndian32).order(ByteOrder.LITTLE_ENDIAN).asIntBuffer().get(out);
        return out;
    }

    private static short[] bits(DType dtype, float[] values) {
        short[] out = new short[values.length];
        for (int i = 0; i < values.length; i++) {
            out[i] = dtype.fromFloat(values[i]);
        }
        return out;
    }
}
