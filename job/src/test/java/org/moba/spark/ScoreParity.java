package org.moba.spark;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.moba.job.MobaCli;
import picocli.CommandLine;

/**
 * Runs the {@code score} command on the records of a Dataset and checks that another run's rows hold exactly the same
 * outputs and metrics: the same bits in {@code out} and {@code lse}, the same doubles in {@code recall},
 * {@code cosine} and {@code rel_error}, the same outcome and reason, for every id.
 */
final class ScoreParity {
    private ScoreParity() {
    }

    /**
     * Writes {@code input} as Parquet under {@code dir}, runs {@code score} over it with {@code chunk}, {@code topk},
     * the CPU backend (unless {@code extra} names one) and {@code extra} options, and compares its rows with {@code rows} (collected before: the
     * command stops the session it finds). Returns score's rows by id.
     */
    static Map<String, Row> assertSameAsScore(Dataset<Row> input, List<Row> rows, Path dir, int chunk, int topk,
                                              String... extra) {
        input.write().parquet(dir.resolve("in").toString());
        return assertSameAsScore(dir.resolve("in").toString(), dir.resolve("out").toString(), rows, chunk, topk, extra);
    }

    /** {@link #assertSameAsScore(Dataset, List, Path, int, int, String...)} on Parquet already at {@code in}, with
     *  score's outputs under {@code out} (any Hadoop filesystem). */
    static Map<String, Row> assertSameAsScore(String in, String out, List<Row> rows, int chunk, int topk,
                                              String... extra) {
        List<String> args = new ArrayList<>(List.of("score", "--input", in, "--out", out,
                "--chunk", Integer.toString(chunk), "--topk", Integer.toString(topk)));
        args.addAll(List.of(extra));
        if (!args.contains("--backend")) {
            args.addAll(List.of("--backend", "cpu"));
        }
        assertEquals(0, new CommandLine(new MobaCli()).execute(args.toArray(String[]::new)), "score failed");
        // score stopped the session it ran in; the caller's next getOrCreate() starts a fresh one.
        Map<String, Row> score = SparkSession.builder().master("local[2]").getOrCreate().read()
                .parquet(out + "/score.parquet").collectAsList().stream()
                .collect(Collectors.toMap(r -> r.getAs("id"), r -> r));
        assertEquals(score.size(), rows.size(), "one row per record in both");
        for (Row r : rows) {
            String id = r.getAs("id");
            Row s = score.get(id);
            assertNotNull(s, "score has no row for " + id);
            assertEquals((String) s.getAs("outcome"), r.getAs("outcome"), id);
            assertEquals((String) s.getAs("reason"), r.getAs("reason"), id);
            assertArrayEquals((byte[]) s.getAs("out"), (byte[]) r.getAs("out"), id + " out");
            assertArrayEquals((byte[]) s.getAs("lse"), (byte[]) r.getAs("lse"), id + " lse");
            for (String metric : List.of("recall", "cosine", "rel_error")) {
                assertEquals(s.getList(s.fieldIndex(metric)), r.getList(r.fieldIndex(metric)), id + " " + metric);
            }
        }
        return score;
    }
}
