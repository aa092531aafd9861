package org.moba.job.spark;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.StringWriter;
import java.util.List;
import java.util.stream.IntStream;
import org.apache.logging.log4j.Level;
import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.core.Logger;
import org.apache.logging.log4j.core.appender.WriterAppender;
import org.apache.logging.log4j.core.layout.PatternLayout;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** A job's progress lines, task by task, with an ETA, from a real Spark job. */
class ProgressTest {

    @Test
    @Timeout(120)
    void eachStageSaysHowFarItIsAndWhenItEnds() throws Exception {
        StringWriter lines = new StringWriter();
        Logger logger = (Logger) LogManager.getLogger(Progress.class);
        WriterAppender appender = WriterAppender.newBuilder().setName("progress-test").setTarget(lines)
                .setLayout(PatternLayout.newBuilder().withPattern("%m%n").build()).build();
        appender.start();
        Level level = logger.getLevel();
        logger.addAppender(appender);
        logger.setLevel(Level.INFO);
        // Stopping the session (end of the try) drains Spark's listener bus: every task end has been logged.
        try (SparkSession spark = SparkSession.builder().master("local[2]").getOrCreate()) {
            Progress.register(spark.sparkContext(), "test", "slice");
            JavaSparkContext.fromSparkContext(spark.sparkContext())
                    .parallelize(IntStream.range(0, 4).boxed().toList(), 4).map(i -> i * 2).collect();
        } finally {
            logger.removeAppender(appender);
            logger.setLevel(level);
            appender.stop();
        }
        List<String> logged = lines.toString().lines().toList();
        // The last task of the stage always logs (the others at most every 5 s): 4 of 4, nothing left.
        assertTrue(logged.stream().anyMatch(l -> l.matches("test: 4/4 slices done \\(stage \\d+\\) after \\d+ s;"
                + " ETA 0 s")), String.join("\n", logged));
    }
}
