package org.moba.spark;

import java.io.IOException;
import java.io.Serializable;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import scala.Tuple2;
import scala.jdk.javaapi.CollectionConverters;
import org.moba.job.score.FileRanges;
import org.moba.job.score.InputFiles;
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
    /**
     * Input rows whose tensors may be elsewhere: {@link ScoreSchema#INPUT}, nullable (an unreadable file has no
     * shape; a record in a file has no bytes in the row), plus {@value MobaDataset#PROBLEM},
     * {@value MobaDataset#TENSOR_FILE} and {@value MobaDataset#TENSOR_POSITIONS}.
     */
    public static final StructType SAFETENSORS_INPUT;

    static {
        StructType s = new StructType();
        for (StructField f : ScoreSchema.INPUT.fields()) {
            s = s.add(f.name(), f.dataType(), true);
        }
        SAFETENSORS_INPUT = s.add(MobaDataset.PROBLEM, DataTypes.StringType, true)
                .add(MobaDataset.TENSOR_FILE, DataTypes.StringType, true)
                .add(MobaDataset.TENSOR_POSITIONS, MobaDataset.POSITIONS_TYPE, true);
    }

    /** Sequences of one file given to one task: {@code [from, to)} of its {@code contents}. */
    private record Slice(String path, Safetensors.Contents contents, int from, int to) implements Serializable {
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
     * The safetensors files under {@code path} (any Hadoop filesystem; hidden names skipped) as input rows,
     * {@link #SAFETENSORS_INPUT}: each file holds {@code q [T, H, D]}, {@code k, v [T, Hkv, D]} (F16 or BF16) and
     * optionally {@code cu_seqlens} (I32 {@code [B+1]}; without it the file is one sequence); sequence {@code b} of
     * file {@code name.safetensors} gets the id {@code name#b}. Only the headers are read here (on the driver):
     * a row names the file and where its q, k and v lie ({@value MobaDataset#TENSOR_FILE},
     * {@value MobaDataset#TENSOR_POSITIONS}), and {@link MobaDataset#attention} reads those bytes straight into its
     * batches. Rows come in at most default-parallelism partitions of about equal tokens ({@link #balancedParts}).
     * A file that cannot be read becomes one row with id {@code name} and the {@value MobaDataset#PROBLEM}, so it is
     * a bad record like any other.
     *
     * @throws IllegalArgumentException when {@code path} does not exist or cannot be listed
     */
    public static Dataset<Row> readSafetensors(SparkSession spark, String path) {
        JavaSparkContext jsc = JavaSparkContext.fromSparkContext(spark.sparkContext());
        List<String> files;
        try {
            files = InputFiles.list(jsc.hadoopConfiguration(), path);
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot list " + path + ": " + e, e);
        }
        if (files == null) {
            throw new IllegalArgumentException(path + " does not exist");
        }
        if (files.isEmpty()) {
            return spark.createDataFrame(List.of(), SAFETENSORS_INPUT);
        }
        // Headers are a few kilobytes each: read on the driver, several at a time, rather than through a Spark job,
        // whose scheduling took longer than the reads (0.3 s for 8 files on an H100 host).
        Configuration conf = jsc.hadoopConfiguration();
        List<Tuple2<String, Object>> described = files.parallelStream().map(f -> {
            try (FileRanges in = FileRanges.open(f, conf)) {
                return new Tuple2<String, Object>(f, Safetensors.describe(in));
            } catch (IOException | RuntimeException e) {
                return new Tuple2<String, Object>(f, "unreadable safetensors file: " + e.getMessage());
            }
        }).toList();
        List<Row> broken = new ArrayList<>();
        List<Tuple2<String, Safetensors.Contents>> readable = new ArrayList<>();
        for (Tuple2<String, Object> d : described) {
            if (d._2() instanceof Safetensors.Contents c) {
                readable.add(new Tuple2<>(d._1(), c));
            } else {
                broken.add(RowFactory.create(name(d._1()), null, null, null, null, null, null, null, null, d._2(),
                        null, null));
            }
        }
        List<List<Slice>> parts = new ArrayList<>();
        for (List<int[]> part : balancedParts(readable.stream().map(f -> f._2().cuSeqlens()).toList(),
                jsc.defaultParallelism())) {
            parts.add(part.stream().map(r -> new Slice(readable.get(r[0])._1(), readable.get(r[0])._2(), r[1], r[2]))
                    .toList());
        }
        Dataset<Row> rows = spark.createDataFrame(jsc.parallelize(parts, Math.max(1, parts.size()))
                .flatMap(MobaTensors::rows), SAFETENSORS_INPUT);
        return broken.isEmpty() ? rows : rows.union(spark.createDataFrame(broken, SAFETENSORS_INPUT).coalesce(1));
    }

    /**
     * The sequences of all files, in order, cut into at most {@code parts} parts of about equal tokens (a sequence
     * goes to the part its middle token falls in), so that one wave of tasks on {@code parts} slots ends together:
     * cutting each file on its own left small remainders that ran as a second wave. A part is a list of
     * {@code {file index, first sequence, end sequence}} ranges, one per file it touches; empty parts are left out.
     */
    static List<List<int[]>> balancedParts(List<int[]> cuSeqlensPerFile, int parts) {
        long total = cuSeqlensPerFile.stream().mapToLong(cu -> cu[cu.length - 1]).sum();
        int slots = Math.max(1, parts);
        List<List<int[]>> out = new ArrayList<>();
        List<int[]> current = new ArrayList<>();
        int currentPart = -1;
        long before = 0;
        for (int f = 0; f < cuSeqlensPerFile.size(); f++) {
            int[] cu = cuSeqlensPerFile.get(f);
            for (int b = 0; b < cu.length - 1; b++) {
                long length = cu[b + 1] - cu[b];
                int part = total == 0 ? 0 : (int) Math.min(slots - 1, (before + length / 2) * slots / total);
                before += length;
                if (part != currentPart && !current.isEmpty()) {
                    out.add(current);
                    current = new ArrayList<>();
                }
                currentPart = part;
                int[] last = current.isEmpty() ? null : current.get(current.size() - 1);
                if (last != null && last[0] == f && last[2] == b) {
                    last[2] = b + 1;
                } else {
                    current.add(new int[] {f, b, b + 1});
                }
            }
        }
        if (!current.isEmpty()) {
            out.add(current);
        }
        return out;
    }

    /** The reference rows of a part's slices, in order. */
    private static Iterator<Row> rows(List<Slice> part) {
        List<Row> rows = new ArrayList<>();
        for (Slice s : part) {
            Safetensors.Contents c = s.contents();
            BatchLayout l = c.layout();
            String name = name(s.path());
            for (int b = s.from(); b < s.to(); b++) {
                long[] at = c.positions(b);
                rows.add(RowFactory.create(name + "#" + b, c.length(b), l.dtype().label(), l.heads(), l.kvHeads(),
                        l.headDim(), null, null, null, null, s.path(),
                        CollectionConverters.asScala(List.of(at[0], at[1], at[2])).toSeq()));
            }
        }
        return rows.iterator();
    }

    /** The file's name without its folder and its {@code .safetensors} suffix. */
    private static String name(String path) {
        return path.substring(path.lastIndexOf('/') + 1).replaceAll("\\.safetensors$", "");
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
