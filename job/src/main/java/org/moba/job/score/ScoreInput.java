package org.moba.job.score;

import static org.apache.spark.sql.functions.coalesce;
import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.concat;
import static org.apache.spark.sql.functions.lit;
import static org.apache.spark.sql.functions.not;
import static org.apache.spark.sql.functions.when;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.LocatedFileStatus;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RemoteIterator;
import org.apache.hadoop.fs.StreamCapabilities;
import org.apache.parquet.hadoop.ParquetFileReader;
import org.apache.parquet.hadoop.util.HadoopInputFile;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.sql.Column;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.util.SerializableConfiguration;
import org.moba.job.run.JobException;
import org.moba.spark.MobaDataset;
import org.moba.spark.MobaOptions;
import org.moba.spark.MobaTensors;
import scala.Tuple2;

/**
 * Reads score's input into records, checking it on the driver first: the path holds input files, Parquet files are
 * readable (a file Parquet cannot open becomes one rejected record with --bad-records skip, and stops the job
 * before any compute with fail), and every column has the type score reads, or one it converts without loss
 * (integer ids; int64 sizes, whose out-of-range values make the record bad).
 */
final class ScoreInput {
    private static final String PROBLEM_COLUMN = MobaDataset.PROBLEM;
    /** Bytes per read of {@link #readRaw}. */
    private static final int RAW_READ_BUFFER = 8 << 20;

    private ScoreInput() {
    }

    /**
     * The input's records as {@link MobaDataset}'s input columns ({@link MobaTensors#SAFETENSORS_INPUT}: the tensor
     * columns and {@value MobaDataset#PROBLEM}), unreadable files included as records with only their path as id
     * and the reason as problem.
     */
    static Dataset<Row> read(SparkSession spark, String input, InputFormat format, MobaOptions.BadRecords badRecords) {
        JavaSparkContext jsc = JavaSparkContext.fromSparkContext(spark.sparkContext());
        List<String> files = files(spark, input);
        InputFormat resolved;
        try {
            resolved = format.of(files);
        } catch (IllegalArgumentException e) {
            throw JobException.badInput("input mixes formats", "--input", input + " (" + e.getMessage() + ")",
                    "keep one format per input folder, or name it with --format");
        }
        if (resolved == InputFormat.SAFETENSORS) {
            // Only headers are read here; an unreadable file becomes a broken record.
            return MobaTensors.readSafetensors(spark, input);
        }
        List<Tuple2<String, String>> unreadable = unreadableParquet(jsc, files);
        if (!unreadable.isEmpty() && badRecords == MobaOptions.BadRecords.FAIL) {
            throw JobException.badInput("unreadable Parquet file", unreadable.get(0)._1(), unreadable.get(0)._2()
                    + (unreadable.size() > 1 ? " (and " + (unreadable.size() - 1) + " more file(s))" : ""),
                    "replace or remove it, or rerun with --bad-records skip to list such files in the rejects");
        }
        List<Row> broken = unreadable.stream().map(u -> RowFactory.create(u._1(), null, null, null, null, null, null,
                null, null, "unreadable Parquet file: " + u._2(), null, null)).toList();
        List<String> readable = new ArrayList<>(files);
        unreadable.forEach(u -> readable.remove(u._1()));
        Dataset<Row> records = readable.isEmpty() ? spark.createDataFrame(List.of(), MobaTensors.SAFETENSORS_INPUT)
                : parquet(spark, input, readable);
        return broken.isEmpty() ? records
                : records.union(spark.createDataFrame(broken, MobaTensors.SAFETENSORS_INPUT).coalesce(1));
    }

    /** The input files under {@code input} (a file or a folder), skipping hidden ones as Spark does. */
    static List<String> files(SparkSession spark, String input) {
        List<String> files;
        try {
            files = InputFiles.list(spark.sparkContext().hadoopConfiguration(), input);
        } catch (IOException | RuntimeException e) { // an unknown or unconfigured filesystem fails unchecked
            throw JobException.badInput("input cannot be listed", "--input", input + " (" + e + ")",
                    "check the path, its permissions and that its filesystem is configured");
        }
        if (files == null) {
            throw JobException.badInput("input does not exist", "--input", input, "give an existing file or"
                    + " folder (local, hdfs://, s3a://, ...)");
        }
        if (files.isEmpty()) {
            throw JobException.badInput("no input files", "--input", input + " (empty, or only hidden files)",
                    "point --input at the folder gen wrote, or a folder of Parquet or safetensors files");
        }
        return files;
    }

    /**
     * Reads every input file whole, in parallel tasks, without decoding anything: the bytes the job must at least
     * move from storage. Each task streams its files through one reused direct buffer (or, where the filesystem's
     * stream cannot fill one, a heap buffer of the same size). Returns the bytes read.
     */
    static long readRaw(SparkSession spark, List<String> files) {
        JavaSparkContext jsc = JavaSparkContext.fromSparkContext(spark.sparkContext());
        SerializableConfiguration hadoop = new SerializableConfiguration(jsc.hadoopConfiguration());
        return acrossTasks(jsc, files).mapPartitions(it -> {
            ByteBuffer direct = ByteBuffer.allocateDirect(RAW_READ_BUFFER);
            byte[] heap = null;
            long bytes = 0;
            while (it.hasNext()) {
                Path path = new Path(it.next());
                try (FSDataInputStream in = path.getFileSystem(hadoop.value()).open(path)) {
                    boolean byteBuffers = in.hasCapability(StreamCapabilities.READBYTEBUFFER);
                    for (int n; ; bytes += n) {
                        if (byteBuffers) {
                            direct.clear();
                            n = in.read(direct);
                        } else {
                            heap = heap == null ? new byte[RAW_READ_BUFFER] : heap;
                            n = in.read(heap);
                        }
                        if (n < 0) {
                            break;
                        }
                    }
                }
            }
            return List.of(bytes).iterator();
        }).fold(0L, Long::sum);
    }

    /** The file list spread over up to one task per file, at most the default parallelism. */
    private static JavaRDD<String> acrossTasks(JavaSparkContext jsc, List<String> files) {
        return jsc.parallelize(files, Math.max(1, Math.min(files.size(), jsc.defaultParallelism())));
    }

    /** (path, reason) of each file whose Parquet footer cannot be read, checked in parallel on the executors. */
    private static List<Tuple2<String, String>> unreadableParquet(JavaSparkContext jsc, List<String> files) {
        SerializableConfiguration hadoop = new SerializableConfiguration(jsc.hadoopConfiguration());
        return acrossTasks(jsc, files).flatMap(f -> {
            try (ParquetFileReader reader = ParquetFileReader.open(HadoopInputFile.fromPath(new Path(f),
                    hadoop.value()))) {
                reader.getFooter();
                return List.<Tuple2<String, String>>of().iterator();
            } catch (IOException | RuntimeException e) {
                return List.of(new Tuple2<>(f, e.getClass().getSimpleName() + ": " + e.getMessage())).iterator();
            }
        }).collect();
    }

    private static Dataset<Row> parquet(SparkSession spark, String input, List<String> files) {
        // Rows hold whole tensors (megabytes each): the vectorized reader would buffer 4,096 of them per column
        // batch, so read row by row.
        spark.conf().set("spark.sql.parquet.enableVectorizedReader", "false");
        return select(spark.read().option("basePath", input).parquet(files.toArray(String[]::new)), input);
    }

    /**
     * The input columns in score's order and types, plus the {@value MobaDataset#PROBLEM} column naming the record's
     * first value that is null or does not convert losslessly (null when none); a column of another type stops the
     * job, naming it with the expected and found type.
     */
    static Dataset<Row> select(Dataset<Row> df, String input) {
        StructType schema = df.schema();
        List<String> names = Arrays.asList(schema.fieldNames());
        List<String> missing = Arrays.stream(ScoreSchema.INPUT.fieldNames()).filter(c -> !names.contains(c)).toList();
        if (!missing.isEmpty()) {
            throw JobException.badInput("input lacks column(s) " + missing, "--input", input + " (has " + names + ")",
                    "write the columns " + Arrays.toString(ScoreSchema.INPUT.fieldNames()) + ", as gen does");
        }
        List<Column> columns = new ArrayList<>();
        List<Column> problems = new ArrayList<>();
        for (StructField expected : ScoreSchema.INPUT.fields()) {
            String name = expected.name();
            DataType want = expected.dataType();
            DataType found = schema.apply(name).dataType();
            Column c = col(name);
            if (!want.equals(DataTypes.BinaryType)) {
                problems.add(when(c.isNull(), lit(name + " is null")));
            }
            if (found.equals(want)) {
                columns.add(c);
            } else if (want.equals(DataTypes.StringType) && name.equals("id") && integral(found)) {
                columns.add(c.cast("string").as(name));
            } else if (want.equals(DataTypes.IntegerType) && integral(found)) {
                // Lossless where the value fits; a value that does not makes its record bad, not the job.
                Column fits = c.between(Integer.MIN_VALUE, Integer.MAX_VALUE);
                problems.add(when(not(fits), concat(lit(name + " = "), c.cast("string"),
                        lit(" does not fit " + want.simpleString()))));
                columns.add(when(fits, c.cast("int")).otherwise(lit(0)).as(name));
            } else {
                throw JobException.badInput("column '" + name + "' has the wrong type", "--input", input
                        + " (expected " + want.simpleString() + ", found " + found.simpleString() + ")",
                        ScoreSchema.describe(name));
            }
        }
        columns.add(coalesce(problems.toArray(Column[]::new)).as(PROBLEM_COLUMN));
        // The tensors are in the rows: no file columns (typed nulls, so the rows union with unreadable files').
        columns.add(lit(null).cast(DataTypes.StringType).as(MobaDataset.TENSOR_FILE));
        columns.add(lit(null).cast(MobaDataset.POSITIONS_TYPE).as(MobaDataset.TENSOR_POSITIONS));
        return df.select(columns.toArray(Column[]::new));
    }

    private static boolean integral(DataType t) {
        return t.equals(DataTypes.LongType) || t.equals(DataTypes.IntegerType) || t.equals(DataTypes.ShortType)
                || t.equals(DataTypes.ByteType);
    }
}
