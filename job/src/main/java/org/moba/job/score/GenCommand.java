package org.moba.job.score;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.stream.IntStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SaveMode;
import org.apache.spark.sql.SparkSession;
import org.moba.job.LengthMix;
import org.moba.job.Shape;
import org.moba.job.run.ExitCode;
import org.moba.job.run.Preflight;
import org.moba.job.run.RunOptions;
import org.moba.job.run.RunOutput;
import org.moba.job.spark.SparkSessions;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.Sequence;
import org.moba.kernels.SequencePacker;
import org.moba.kernels.SyntheticSequences;
import org.apache.spark.util.SerializableConfiguration;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code gen}: writes a synthetic input dataset for {@code score}, as Parquet or safetensors files. */
@Command(name = "gen", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Write synthetic q/k/v sequences (deterministic from the seed) for the score job to read.")
public final class GenCommand implements Callable<Integer> {
    @Option(names = "--lengths", defaultValue = "uniform:64:128-4096",
            description = "length mix (see bench --help) (default: ${DEFAULT-VALUE})")
    String lengths;

    @Option(names = "--dtype", defaultValue = "bf16", description = "(default: ${DEFAULT-VALUE})")
    String dtype;

    @Option(names = "--heads", defaultValue = "8/2", description = "H/Hkv (default: ${DEFAULT-VALUE})")
    String heads;

    @Option(names = "--head-dim", defaultValue = "64", description = "(default: ${DEFAULT-VALUE})")
    int headDim;

    @Option(names = "--seed", defaultValue = "1", description = "(default: ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--partitions", defaultValue = "4", description = "output files (default: ${DEFAULT-VALUE})")
    int partitions;

    @Option(names = "--format", defaultValue = "safetensors",
            description = "${COMPLETION-CANDIDATES}. safetensors: one file per partition, which score reads straight"
                    + " into its batches; parquet: one row per sequence with the tensors as binary cells"
                    + " (default: ${DEFAULT-VALUE})")
    InputFormat format;

    @Option(names = "--out", required = true, description = "output folder on any Hadoop filesystem (new or empty;"
            + " --overwrite replaces an earlier gen run there)")
    String out;

    @Mixin
    RunOptions run;

    @Override
    public Integer call() throws IOException {
        int[] hk = Shape.parseHeads(heads);
        BatchLayout layout = new BatchLayout(DType.parse(dtype), hk[0], hk[1], headDim);
        int[] lens = new LengthMix(lengths).lengths(seed, 64);
        Preflight.atLeast("--partitions", partitions, 1);
        long s = seed;
        try (SparkSession spark = SparkSessions.create("moba gen"); RunOutput run = this.run.open(spark, out)) {
            // The dataset is the folder itself: its files are staged, then moved to the top of --out on commit.
            String staging = run.stagingFolder();
            JavaSparkContext jsc = JavaSparkContext.fromSparkContext(spark.sparkContext());
            JavaRDD<Integer> ids = jsc.parallelize(IntStream.range(0, lens.length).boxed().toList(), partitions);
            String wrote;
            if (format == InputFormat.SAFETENSORS) {
                SerializableConfiguration hadoop = new SerializableConfiguration(jsc.hadoopConfiguration());
                String root = staging;
                long files = ids.mapPartitions((Iterator<Integer> it) -> {
                    List<Sequence> seqs = new ArrayList<>();
                    SyntheticSequences synth = new SyntheticSequences(s, layout);
                    it.forEachRemaining(i -> seqs.add(synth.generate(i, lens[i])));
                    if (seqs.isEmpty()) {
                        return List.<Integer>of().iterator();
                    }
                    Path file = new Path(root, "part-" + TaskContext.getPartitionId() + ".safetensors");
                    FileSystem fs = file.getFileSystem(hadoop.value());
                    try (FSDataOutputStream os = fs.create(file, true)) {
                        Safetensors.write(new SequencePacker(layout, Integer.MAX_VALUE).concat(seqs).batch(), os);
                    }
                    return List.of(1).iterator();
                }).count();
                wrote = lens.length + " sequences in " + files + " safetensors file(s)";
            } else {
                JavaRDD<Row> rows = ids.map(i -> {
                    Sequence q = new SyntheticSequences(s, layout).generate(i, lens[i]);
                    return RowFactory.create("seq-" + i, q.length(), layout.dtype().label(), layout.heads(),
                            layout.kvHeads(), layout.headDim(), TensorRecord.bytes(q.q()), TensorRecord.bytes(q.k()),
                            TensorRecord.bytes(q.v()));
                });
                // Overwrite replaces the staging folder only: this run's own, empty until now.
                spark.createDataFrame(rows, ScoreSchema.INPUT).write().mode(SaveMode.Overwrite).parquet(staging);
                wrote = lens.length + " sequences as Parquet";
            }
            int exit = run.commit(Map.of("sequences", lens.length, "format", format.toString()), ExitCode.OK);
            System.out.println("wrote " + wrote + " to " + run.out());
            return exit;
        }
    }
}
