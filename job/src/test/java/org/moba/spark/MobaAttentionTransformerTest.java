package org.moba.spark;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.apache.spark.ml.Pipeline;
import org.apache.spark.ml.PipelineModel;
import org.apache.spark.ml.PipelineStage;
import org.apache.spark.ml.feature.SQLTransformer;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** The Spark ML stage: params, save/load, and a two-stage Pipeline saved and loaded, against the Dataset API. */
@Timeout(300)
class MobaAttentionTransformerTest {
    private static SparkSession spark() {
        return SparkSession.builder().master("local[2]").getOrCreate();
    }

    @AfterAll
    static void stopSpark() {
        MobaDatasetTest.stopSpark();
    }

    private static Dataset<Row> input() {
        return MobaTensors.dataset(spark(), MobaDatasetTest.rows(MobaDatasetTest.sequences(70, 200, 5, 130)), 2);
    }

    @Test
    void survivesSaveAndLoadWithEveryParam(@TempDir Path dir) throws Exception {
        MobaAttentionTransformer t = new MobaAttentionTransformer().setChunkSize(64).setTopk(2).setBackend("cpu")
                .setTokensPerBatch(300).setBadRecords("skip").setCheckFinite(false).setMetrics(true)
                .setOutputs(false).setSelection(false).setIdCol("name").setQCol("query").setOutCol("o");
        t.save(dir.resolve("moba").toString());
        MobaAttentionTransformer loaded = MobaAttentionTransformer.load(dir.resolve("moba").toString());
        assertEquals(t.uid(), loaded.uid());
        assertEquals(t.options(), loaded.options());
        assertEquals("name", loaded.getOrDefault(loaded.idCol()));
        assertEquals("query", loaded.getOrDefault(loaded.qCol()));
        assertEquals("o", loaded.getOrDefault(loaded.outCol()));
        assertEquals(new MobaOptions(64, 2, "cpu", 300, MobaOptions.BadRecords.SKIP, false, false, false, true, null),
                loaded.options());
        assertThrows(IllegalArgumentException.class, () -> t.setBackend("tpu"), "params validate their values");
    }

    /**
     * Stage 1 (SQL) renames the columns, stage 2 is MoBA with matching column params; the fitted pipeline, saved and
     * loaded, gives the Dataset API's bits for every record, and the columns it carries through.
     */
    @Test
    void runsInATwoStagePipelineSavedAndLoaded(@TempDir Path dir) throws Exception {
        Dataset<Row> input = input();
        MobaOptions options = MobaOptions.of(64, 3).withBackend("cpu").withMetrics(true);
        Map<String, Row> expected = MobaDataset.attention(input, options).all().collectAsList().stream()
                .collect(Collectors.toMap(r -> r.getAs("id"), r -> r));

        SQLTransformer rename = new SQLTransformer().setStatement("SELECT id AS name, q AS query, k, v, length,"
                + " dtype, heads, kv_heads, head_dim, length * 2 AS twice FROM __THIS__");
        MobaAttentionTransformer moba = new MobaAttentionTransformer().setChunkSize(64).setTopk(3).setBackend("cpu")
                .setMetrics(true).setIdCol("name").setQCol("query").setOutCol("attention");
        PipelineModel model = new Pipeline().setStages(new PipelineStage[] {rename, moba}).fit(input);
        model.write().overwrite().save(dir.resolve("pipeline").toString());
        PipelineModel loaded = PipelineModel.load(dir.resolve("pipeline").toString());
        assertTrue(loaded.stages()[1] instanceof MobaAttentionTransformer);

        Dataset<Row> out = loaded.transform(input);
        assertEquals(Arrays.asList(out.columns()), Arrays.asList(moba.transformSchema(rename.transformSchema(
                input.schema())).fieldNames()), "transformSchema says what transform gives");
        List<Row> rows = out.collectAsList();
        assertEquals(expected.size(), rows.size());
        for (Row r : rows) {
            Row e = expected.get((String) r.getAs("name"));
            assertArrayEquals((byte[]) e.getAs("out"), (byte[]) r.getAs("attention"));
            assertArrayEquals((byte[]) e.getAs("lse"), (byte[]) r.getAs("lse"));
            assertArrayEquals((byte[]) e.getAs("selected"), (byte[]) r.getAs("selected"));
            assertEquals(e.getList(e.fieldIndex("recall")), r.getList(r.fieldIndex("recall")));
            assertEquals(2 * (int) r.getAs("length"), (int) r.getAs("twice"), "carried through");
        }
        IllegalArgumentException clash = assertThrows(IllegalArgumentException.class,
                () -> moba.transform(rename.transform(input).withColumn("q", input.col("dtype"))));
        assertTrue(clash.getMessage().startsWith("input has a column 'q' besides qCol = 'query'"), clash.getMessage());
    }
}
